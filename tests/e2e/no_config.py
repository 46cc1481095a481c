"""An empty gunicorn config: e2e tests pass every setting on the command line."""
