"""Cart writes lock the carts they change (FOR UPDATE, store.py): a write that meets another one
in progress waits for it to commit, then works on the cart as that write left it. Each test
holds a cart's row in a second connection, lets the call start, sees it wait for that
connection, and commits."""

from __future__ import annotations

from tests.held_locks import WAIT_LIMIT, row_held
from tests.integration.test_cart_api import add, create


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

    with row_held(database_url, guest_cart, emptied) as start:
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

    with row_held(database_url, added["shoppingCartId"], another_write) as start:
        reading = start(lambda: client.get("/v1/cart", headers=user), waits=False)

    read = reading.result()
    assert read.status_code == 200, read.get_data(as_text=True)
    assert (read.get_json()["version"], read.get_json()["items"][0]["quantity"]) == (added["version"], 2)
