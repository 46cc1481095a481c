"""Wires the public gateway into an app; called by the composition root only."""

from flask import Flask

from app.extensions import api
from app.gateway import health, products


def init_app(app: Flask) -> None:
    api.register_blueprint(products.blp)
    api.register_blueprint(health.blp)
