"""Another writer caught in the middle of its transaction, for tests that show a call waits for
a lock (or does not): a row held on PostgreSQL, the write lock held on the embedded SQLite."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

WAIT_LIMIT = 10.0  # seconds a call may take to reach the held row


@contextmanager
def row_held(database_url: str, row_id: str, change: str, **values: object) -> Iterator[Callable[..., Future]]:
    """Another writer's transaction that has run `change` (SQL on the row :id, with `values`
    bound too) and holds the row. The block gets `start(call)`: runs the call in a thread,
    returns once the call waits for this transaction, and the call's future;
    `start(call, waits=False)` returns once the call has answered, the row still held. The
    transaction commits when the block ends."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder = engine.connect()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        transaction = holder.begin()
        holder.execute(text(change), {"id": row_id, **values})
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def start(call: Callable[[], object], *, waits: bool = True) -> Future:
            future = pool.submit(call)
            if not waits:
                future.result(timeout=WAIT_LIMIT)  # TimeoutError: it waited for the held row
                return future
            deadline = time.monotonic() + WAIT_LIMIT
            while not _waits_for(watcher, holder_pid):
                assert not future.done(), f"the call did not wait for the held row: {future.result()!r}"
                assert time.monotonic() < deadline, "the call never reached the held row"
                time.sleep(0.005)
            return future

        yield start
        transaction.commit()
    finally:
        holder.close()  # rolled back, unless committed: a call still waiting goes on
        pool.shutdown(wait=True)
        watcher.close()
        engine.dispose()


def _waits_for(watcher, holder_pid: int) -> bool:
    return bool(
        watcher.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"),
            {"holder": holder_pid},
        ).scalar_one()
    )


@contextmanager
def a_writer_holding_the_lock(database: Path, change: str) -> Iterator[None]:
    """Another request's write on the embedded SQLite database, begun as every write begins
    (the write lock, app/transactions.py), not committed."""
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(change)
        yield
    finally:
        writer.execute("ROLLBACK")
        writer.close()
