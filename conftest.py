"""Repository root: the pytester plugin for the project's own tests in tests/."""

pytest_plugins = ["pytester"]
