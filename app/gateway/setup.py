"""Wires the public gateway into the app being built; called by the composition root only."""

from app.extensions import api
from app.gateway import health, products


def register() -> None:
    api.register_blueprint(products.blp)
    api.register_blueprint(health.blp)
