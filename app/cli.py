"""Flask CLI commands (`flask --app wsgi seed ...`)."""

from flask import Flask


def init_app(app: Flask) -> None:
    from seed import seed_command

    app.cli.add_command(seed_command)
