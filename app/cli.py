"""Flask CLI commands (`flask --app wsgi seed ...`), for the modules this process reaches."""

import click
from flask import Flask

from app.config import Settings, check_bind
from app.events.cli import events_cli
from app.inventory import inventory_cli
from app.seeding import seed_command


def init_app(app: Flask) -> None:
    app.cli.add_command(seed_command)
    app.cli.add_command(events_cli)
    settings = app.extensions["settings"]
    _refuse_a_public_development_server(settings)
    if settings.serves("products") or "products" in settings.remote_modules():
        app.cli.add_command(inventory_cli)


def _refuse_a_public_development_server(settings: Settings) -> None:
    """`flask run --host ...` (the app is built inside that command): held to the rule
    gunicorn.conf.py applies, loopback only outside production (app.config.check_bind)."""
    context = click.get_current_context(silent=True)
    if context is not None and context.command.name == "run" and context.params.get("host"):
        check_bind(settings, context.params["host"], "--host")
