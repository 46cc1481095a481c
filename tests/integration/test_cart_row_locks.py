"""Cart writes lock the carts they change (FOR UPDATE, store.py): a write that meets another one
in progress waits for it to commit, then works on the cart as that write left it. Each test
holds a cart's row in a second connection, lets the call start, sees it wait for that
connection, and commits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from tests.integration.test_cart_api import add, create

WAIT_LIMIT = 10.0  # seconds a call may take to reach the held row


@contextmanager
def cart_held(database_url: str, cart_id: str, change: str) -> Iterator[Callable[[Callable[[], object]], Future]]:
    """Another writer's transaction that has run `change` (SQL on the carts row :id) and holds
    the row. The block gets `start(call)`: runs the call in a thread, returns once the call
    waits for this transaction, and the call's future; the transaction commits when the block ends.
    `start(call, waits=False)` returns once the call has answered (while the row is still held)."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder = engine.connect()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        transaction = holder.begin()
        holder.execute(text(change), {"id": cart_id})
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
        pool.shutdown(wait=True)
        holder.close()
        watcher.close()
        engine.dispose()


def _waits_for(watcher, holder_pid: int) -> bool:
    return bool(
        watcher.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"),
            {"holder": holder_pid},
        ).scalar_one()
    )


def test_a_merge_waits_for_a_write_to_the_guest_cart_and_merges_what_it_left(
    client, admin_headers, token, database_url
):
    """The guest empties the cart while signing in: the merge moves nothing the guest removed."""
    create(client, admin_headers, "mug", stock=10)
    user = {"Authorization": f"Bearer {token('customer', subject='merger')}"}
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    guest = {"Authorization": f"Bearer {guest_token}"}
    add(client, guest, "mug", 2)
    guest_cart = client.get("/v1/cart", headers=guest).get_json()["shoppingCartId"]
    emptied = "UPDATE carts SET lines = '[]', holds_expire_at = NULL, version = version + 1 WHERE id = :id"

    with cart_held(database_url, guest_cart, emptied) as start:
        merging = start(lambda: client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=user))

    merged = merging.result(timeout=WAIT_LIMIT)
    assert merged.status_code == 200, merged.get_data(as_text=True)
    assert (merged.get_json()["mergedLines"], merged.get_json()["cart"]["items"]) == (0, [])


def test_a_read_answers_the_cart_as_committed_without_waiting_for_a_write_in_progress(
    client, admin_headers, token, database_url
):
    create(client, admin_headers, "mug", stock=10)
    user = {"Authorization": f"Bearer {token('customer', subject='reader')}"}
    added = add(client, user, "mug", 2).get_json()
    another_write = "UPDATE carts SET version = version + 1 WHERE id = :id"

    with cart_held(database_url, added["shoppingCartId"], another_write) as start:
        reading = start(lambda: client.get("/v1/cart", headers=user), waits=False)

    read = reading.result()
    assert read.status_code == 200, read.get_data(as_text=True)
    assert (read.get_json()["version"], read.get_json()["items"][0]["quantity"]) == (added["version"], 2)
