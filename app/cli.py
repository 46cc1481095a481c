"""Flask CLI commands (`flask --app wsgi seed ...`)."""

from flask import Flask

from app.seeding import seed_command


def init_app(app: Flask) -> None:
    app.cli.add_command(seed_command)
