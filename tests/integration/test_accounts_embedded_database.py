"""Accounts on the embedded SQLite database, where a write unit of work takes the database's
write lock (app/transactions.py): reads take no such lock, so an account is read while a
write is in progress instead of queueing behind it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask_migrate import upgrade

from app.accounts import interface as accounts
from tests.integration.test_auth_api import PASSWORD


@pytest.fixture
def database(tmp_path) -> Path:
    return tmp_path / "storefront.db"


@pytest.fixture
def embedded(other_app, database) -> Flask:
    app = other_app(database_url=f"sqlite:///{database}")
    with app.app_context():
        upgrade()
    return app


@contextmanager
def a_writer_holding_the_lock(database: Path, change: str) -> Iterator[None]:
    """Another request's account write, begun as every write begins (the write lock), not committed."""
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(change)
        yield
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_users_are_read_and_listed_while_a_writer_holds_the_lock(embedded, database):
    with embedded.app_context():
        admin = accounts.create_admin(email="root@example.test", password=PASSWORD)

    with a_writer_holding_the_lock(database, "UPDATE users SET display_name = 'Root'"), embedded.app_context():
        page = accounts.list_users(page=1, page_size=20)
        read = accounts.get_user(user_id=admin.user_id)

    assert (page.total, page.items, read) == (1, (admin,), admin)  # as committed
