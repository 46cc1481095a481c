"""Units of work (app/transactions.py): a read-modify-write in a write unit of work never loses
a concurrent one, on the embedded SQLite default and on PostgreSQL (row lock, then read)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from app.extensions import db
from app.transactions import unit_of_work

WRITERS = 8


LOCKS = {"postgresql": "SELECT id FROM counters WHERE id = 1 FOR UPDATE", "sqlite": None}  # SQLite: BEGIN IMMEDIATE


def increment(app, lock: str | None) -> None:
    with app.app_context(), unit_of_work():
        if lock:
            db.session.execute(text(lock))
        value = db.session.execute(text("SELECT value FROM counters WHERE id = 1")).scalar_one()
        time.sleep(0.01)  # widen the window a lost update needs
        db.session.execute(text("UPDATE counters SET value = :value WHERE id = 1"), {"value": value + 1})


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_concurrent_read_modify_writes_are_serialised(other_app, settings, tmp_path, store):
    url = f"sqlite:///{tmp_path / 'units.db'}" if store == "sqlite" else settings.database_url
    app = other_app(database_url=url)
    with app.app_context(), unit_of_work():
        db.session.execute(text("DROP TABLE IF EXISTS counters"))
        db.session.execute(text("CREATE TABLE counters (id integer PRIMARY KEY, value integer)"))
        db.session.execute(text("INSERT INTO counters VALUES (1, 0)"))
    lock = LOCKS[store]
    try:
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            list(pool.map(lambda _: increment(app, lock), range(WRITERS * 3)))
        with app.app_context(), unit_of_work(write=False):
            assert db.session.execute(text("SELECT value FROM counters")).scalar_one() == WRITERS * 3
    finally:
        with app.app_context(), unit_of_work():
            db.session.execute(text("DROP TABLE counters"))


def test_a_failing_unit_of_work_rolls_back(other_app, tmp_path):
    app = other_app(database_url=f"sqlite:///{tmp_path / 'units.db'}")
    with app.app_context():
        with unit_of_work():
            db.session.execute(text("CREATE TABLE notes (body text)"))

        def failing_work() -> None:
            with unit_of_work():
                db.session.execute(text("INSERT INTO notes VALUES ('lost')"))
                raise RuntimeError("the work fails")

        with pytest.raises(RuntimeError):
            failing_work()
        with unit_of_work(write=False):
            assert db.session.execute(text("SELECT count(*) FROM notes")).scalar_one() == 0


def test_a_unit_of_work_cannot_begin_inside_another(app):
    """It would roll back the outer one's work; the outer one is undone, nothing half-done stays."""
    with app.app_context():

        def nested() -> None:
            with unit_of_work(), unit_of_work():
                pass

        with pytest.raises(RuntimeError, match="inside another"):
            nested()
        with unit_of_work(write=False):
            assert db.session.execute(text("SELECT 1")).scalar_one() == 1
