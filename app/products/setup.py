"""Wires the products module into the app being built; called by the composition root only."""

from app.config import Settings
from app.extensions import api
from app.products import database, routes


def register(settings: Settings) -> None:
    database.connect(settings.mongodb_uri)
    database.ensure_indexes()
    api.register_blueprint(routes.blp)
