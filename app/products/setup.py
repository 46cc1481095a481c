"""Wires the products module into the app being built; called by the composition root only."""

from __future__ import annotations

from flask import Flask

from app.config import Settings
from app.products import database


def register(app: Flask, settings: Settings) -> None:
    database.connect(settings.mongodb_uri)
    database.translate_store_errors.start(app)
    database.ensure_indexes()
