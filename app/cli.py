"""Flask CLI commands (`flask --app wsgi seed ...`), for the modules this process reaches."""

from flask import Flask

from app.inventory import inventory_cli
from app.seeding import seed_command


def init_app(app: Flask) -> None:
    app.cli.add_command(seed_command)
    settings = app.extensions["settings"]
    if settings.serves("products") or "products" in settings.remote_modules():
        app.cli.add_command(inventory_cli)
