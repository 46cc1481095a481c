"""Fixtures of the tests that run the app on the embedded SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade


@pytest.fixture
def database(tmp_path) -> Path:
    """The embedded database's file."""
    return tmp_path / "storefront.db"


@pytest.fixture
def embedded(other_app, database) -> Flask:
    """The app on the embedded database, migrated."""
    app = other_app(database_url=f"sqlite:///{database}")
    with app.app_context():
        upgrade()
    return app
