"""The PostgreSQL connection pool, measured: connections in use, the time a request waits to
get one, and the waits that ran out (DB_POOL_TIMEOUT, answered 503 by the modules)."""

from __future__ import annotations

import time

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from app import metrics

STORE = "postgresql"


class MeasuredPool(QueuePool):
    """SQLAlchemy's default pool for PostgreSQL, timing each `connect` (its public entry
    point): the wait for a free connection, or the opening of a new one."""

    def connect(self) -> PoolProxiedConnection:
        started = time.perf_counter()
        try:
            return super().connect()
        except PoolTimeout:
            metrics.DB_POOL_TIMEOUTS.labels(STORE).inc()
            raise
        finally:
            metrics.DB_POOL_WAIT.labels(STORE).observe(time.perf_counter() - started)


def count_connections_in_use(engine: Engine) -> None:
    in_use = metrics.DB_POOL_IN_USE.labels(STORE)
    in_use.set(0)
    event.listen(engine, "checkout", lambda *_: in_use.inc())
    event.listen(engine, "checkin", lambda *_: in_use.dec())
