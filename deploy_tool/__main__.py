"""`python -m deploy_tool` is the `gradual-deploy` command."""

from deploy_tool.cli import main

raise SystemExit(main())
