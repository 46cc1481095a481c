"""Wires the products module into an app; called by the composition root only."""

from flask import Flask

from app.config import Settings
from app.extensions import api
from app.products import database, routes


def init_app(app: Flask, settings: Settings) -> None:
    database.connect(settings.mongodb_uri)
    database.ensure_indexes()
    api.register_blueprint(routes.blp)
