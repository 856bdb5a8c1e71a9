"""The go-live preflight suite: every runbook criterion as a pytest check, with HTML + JSON evidence."""
