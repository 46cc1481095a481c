"""One unit of work per interface call: begin, work, then commit or roll back in one place.

`unit_of_work()` wraps a block in one SQL transaction. On PostgreSQL it is an ordinary
READ COMMITTED transaction; callers that read-modify-write an aggregate lock its row first
and read the rest in later statements (each statement sees what committed before it).

SQLite, the embedded default, needs more: Python's sqlite3 driver starts a transaction only
at the first INSERT/UPDATE/DELETE, so every SELECT before it reads outside any transaction
and `FOR UPDATE` does not exist. Two requests could both read a cart line and both write
quantity + 1. `sqlite_transactions()` makes SQLAlchemy emit BEGIN itself, and a unit of work
that writes begins with `BEGIN IMMEDIATE`: it takes the database's write lock up front, so
writers queue (up to the driver's busy timeout) instead of reading a state about to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.extensions import db

_BEGIN_OPTION = "storefront_sqlite_begin"
_IN_UNIT_OF_WORK = "storefront_unit_of_work"


@contextmanager
def unit_of_work(*, write: bool = True) -> Iterator[None]:
    """Commit when the block ends, roll back when it raises.

    A write unit of work takes SQLite's write lock when it begins; on PostgreSQL it is the
    caller's row locks that serialise writers of one aggregate.
    """
    session = db.session()
    if session.info.get(_IN_UNIT_OF_WORK):
        raise RuntimeError("a unit of work cannot begin inside another one")
    if session.in_transaction():  # left open by a read earlier in the request (the token check, say)
        session.rollback()  # every interface call commits its own work, so nothing is lost
    session.info[_IN_UNIT_OF_WORK] = True
    try:
        session.connection(execution_options={_BEGIN_OPTION: "BEGIN IMMEDIATE" if write else "BEGIN"})
        yield
    except BaseException:
        session.rollback()
        raise
    else:
        session.commit()
    finally:
        session.info.pop(_IN_UNIT_OF_WORK, None)


def sqlite_transactions(engine: Engine) -> None:
    """SQLAlchemy's documented pysqlite recipe: the driver never begins on its own; we do."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN by the driver

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))
