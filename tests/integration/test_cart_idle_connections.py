"""Pooled PostgreSQL connections are pinged only after sitting idle (app/__init__.py).

A connection killed while it waits in the pool (a database restart, a failover, a proxy
that dropped it: here `pg_terminate_backend`) is found dead by the ping at its next
checkout once it has been idle IDLE_PING_SECONDS, and replaced: the request succeeds. A
connection used a moment ago is not pinged (the round-trip budget relies on that), so one
killed within that moment fails a single request, and the pool replaces it for the next.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

import app as composition_root
from app.extensions import db

IDLE = 0.3


@pytest.fixture
def killer(database_url):
    """Terminates a backend of the test database from a connection of its own."""
    engine = create_engine(make_url(database_url).set(drivername="postgresql+psycopg2"), poolclass=NullPool)

    def kill(pids: set[int]) -> None:
        with engine.connect() as connection:
            for pid in pids:
                assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()

    yield kill
    engine.dispose()


def pooled_backends(app) -> set[int]:
    """The backend pid of every connection idle in the app's pool (checked out and back in)."""
    with app.app_context():
        pool = db.engine.pool
    connections = [pool.connect() for _ in range(pool.checkedin())]
    try:
        pids = set()
        for connection in connections:
            cursor = connection.cursor()
            cursor.execute("SELECT pg_backend_pid()")
            pids.add(cursor.fetchone()[0])
            cursor.close()
            connection.rollback()
        return pids
    finally:
        for connection in connections:
            connection.close()


def cart_status(client, headers) -> int:
    return client.get("/v1/cart", headers=headers).status_code


def test_a_connection_killed_while_idle_is_replaced_and_the_request_succeeds(other_app, token, killer, monkeypatch):
    monkeypatch.setattr(composition_root, "IDLE_PING_SECONDS", IDLE)
    app = other_app()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token('customer', subject='idle-pool')}"}
    assert cart_status(client, headers) == 200
    backends = pooled_backends(app)
    assert backends

    killer(backends)
    time.sleep(IDLE * 2)  # idle long enough to be pinged at the next checkout
    assert cart_status(client, headers) == 200
    assert pooled_backends(app).isdisjoint(backends)  # connected again
    with app.app_context():
        db.engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(other_app, token, killer, monkeypatch):
    """The trade-off: no ping within IDLE_PING_SECONDS, so a connection killed in that moment
    fails one request (503, never a 500); the pool has dropped it and the next one succeeds."""
    monkeypatch.setattr(composition_root, "IDLE_PING_SECONDS", 60.0)
    app = other_app()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token('customer', subject='busy-pool')}"}
    assert cart_status(client, headers) == 200
    killer(pooled_backends(app))
    assert cart_status(client, headers) == 503
    assert cart_status(client, headers) == 200
    with app.app_context():
        db.engine.dispose()
