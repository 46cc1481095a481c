"""What the cart tells the products module when it changes a hold (the hold-calls contract).

`reserve_stock(..., held=)` is one MongoDB command when `held` is right: the line's quantity
while its hold is live, 0 for a new reservation, None once the hold may have lapsed. Release
and commit name the product. The answer takes the changed product's figures from the hold's
answer (`StockReservation.product`), so the service reads no product for it.

The products functions are wrapped to record the calls, and the hold's answer has its
product's `stock` (so `available`) marked (+1000), so that the test sees where the cart's
answer took its figures from.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from flask_jwt_extended import decode_token

from app import clock
from app.cart import service
from app.products import interface as products
from tests.integration.test_cart_api import add, create

MARK = 1000
REAL = {name: getattr(products, name) for name in ("reserve_stock", "release_reservation", "commit_reservation")}
REAL_GET = products.get_product
REAL_GET_MANY = products.get_products


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, dict]]:
    recorded: list[tuple[str, dict]] = []

    def recording(name: str):
        def call(**arguments):
            recorded.append((name, dict(arguments)))
            answer = REAL[name](**arguments)
            return replace(answer, product=replace(answer.product, stock=answer.product.stock + MARK))

        return call

    def no_product_reads(**arguments):
        raise AssertionError(f"the cart read a product for a hold change: {arguments}")

    for name in REAL:
        monkeypatch.setattr(products, name, recording(name))
    monkeypatch.setattr(products, "get_product", no_product_reads)
    monkeypatch.setattr(products, "get_products", no_product_reads)
    return recorded


def holds(calls) -> list[tuple]:
    """Each call, shortly: (function, product, quantity, held), or (function, product, held)."""
    return [
        (name, arguments["product_id"], arguments["quantity"], arguments["held"])
        if name == "reserve_stock"
        else (name, arguments["product_id"], arguments["held"])
        for name, arguments in calls
    ]


def only_item(response) -> dict:
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    (item,) = response.get_json()["items"]
    return item


def test_each_change_states_what_the_hold_has_now(client, admin_headers, token, calls, settings, monkeypatch):
    create(client, admin_headers, "mug", stock=20)
    shopper = {"Authorization": f"Bearer {token('customer', subject='hold-calls')}"}

    item = only_item(add(client, shopper, "mug", 2))  # a new line: a new reservation
    assert (item["quantity"], item["available"], item["sku"]) == (2, 18 + MARK, "SKU-MUG")
    item = only_item(add(client, shopper, "mug"))  # one more unit on a live hold of 2
    assert item["available"] == 17 + MARK
    item = only_item(client.put("/v1/cart/products/mug", json={"quantity": 1}, headers=shopper))  # shrinks, after
    assert item["available"] == 19 + MARK
    assert holds(calls) == [
        ("reserve_stock", "mug", 2, 0),
        ("reserve_stock", "mug", 3, 2),
        ("reserve_stock", "mug", 1, 3),
    ]
    reservation_ids = {arguments["reservation_id"] for _, arguments in calls}
    assert len(reservation_ids) == 1

    calls.clear()
    later = clock.now() + timedelta(seconds=settings.cart_reservation_ttl + 5)
    monkeypatch.setattr(clock, "now", lambda: later)  # the hold may have lapsed: unknown
    only_item(add(client, shopper, "mug"))
    assert holds(calls) == [("reserve_stock", "mug", 2, None)]
    assert calls[0][1]["reservation_id"] in reservation_ids  # held again under its id

    calls.clear()
    assert client.delete("/v1/cart/products/mug?all=true", headers=shopper).status_code == 200
    assert holds(calls) == [("release_reservation", "mug", 2)]


@pytest.mark.parametrize(
    ("units", "hold_age", "undone", "reserved_after"),
    [
        (0, None, ("release_reservation", "mug", 5), 0),  # a new line's hold is released
        (2, None, ("reserve_stock", "mug", 2, 5), 2),  # a live hold goes back to the line's units
        (1, None, ("reserve_stock", "mug", 1, 5), 1),
        ("lapsed", 5, ("release_reservation", "mug", 5), 0),  # a lapsed hold counts for nobody
        ("lapsed", 0, ("release_reservation", "mug", 5), 0),  # lapsing this very instant
    ],
)
def test_an_undone_hold_states_the_units_it_was_given(
    app, client, admin_headers, token, calls, settings, monkeypatch, units, hold_age, undone, reserved_after
):
    """A cart write that fails after growing the line's hold undoes the hold: back to what the
    line still records, or released when that counts for nobody."""
    start = clock.now().replace(microsecond=0)
    monkeypatch.setattr(clock, "now", lambda: start)
    create(client, admin_headers, "mug", stock=20)
    access = token("customer", subject="hold-undo")
    shopper = {"Authorization": f"Bearer {access}"}
    with app.app_context():
        owner_id = decode_token(access)["sub"]
    if units == "lapsed":
        units = 2
        add(client, shopper, "mug", units)
        later = start + timedelta(seconds=settings.cart_reservation_ttl + hold_age)
        monkeypatch.setattr(clock, "now", lambda: later)
    elif units:
        add(client, shopper, "mug", units)
    calls.clear()

    def failing_write(self, cart):
        raise RuntimeError("the cart write fails after the hold")

    monkeypatch.setattr(service.Carts, "_bump", failing_write)
    with app.app_context(), pytest.raises(RuntimeError):
        app.extensions["carts"].add(owner_id, "mug", 5 - units)
    with app.app_context():
        assert REAL_GET(product_id="mug").reserved == reserved_after
    grown = ("reserve_stock", "mug", 5, units if hold_age is None else None)
    assert holds(calls) == [grown, undone]


def test_checkout_and_emptying_name_the_product(client, admin_headers, token, calls, monkeypatch):
    # without Redis, a cart of two lines reads the other line's product; checkout reads them all
    monkeypatch.setattr(products, "get_product", REAL_GET)
    monkeypatch.setattr(products, "get_products", REAL_GET_MANY)
    create(client, admin_headers, "mug", stock=20)
    create(client, admin_headers, "pen", stock=20)
    shopper = {"Authorization": f"Bearer {token('customer', subject='hold-names')}"}
    add(client, shopper, "mug")
    add(client, shopper, "pen")
    calls.clear()
    assert client.delete("/v1/cart", headers=shopper).status_code == 200
    assert sorted(holds(calls)) == [("release_reservation", "mug", 1), ("release_reservation", "pen", 1)]

    add(client, shopper, "mug", 2)
    calls.clear()
    placed = client.post("/v1/cart/checkout", headers={**shopper, "Idempotency-Key": "hold-names"})
    assert placed.status_code == 201, placed.get_data(as_text=True)
    assert holds(calls) == [("reserve_stock", "mug", 2, 2), ("commit_reservation", "mug", 2)]


def test_a_guest_line_cut_to_the_room_left_states_the_units_it_held(
    other_app, admin_headers, token, calls, monkeypatch
):
    monkeypatch.setattr(products, "get_product", REAL_GET)  # the merge answers with the cart's products
    monkeypatch.setattr(products, "get_products", REAL_GET_MANY)
    client = other_app(cart_max_units=3).test_client()
    create(client, admin_headers, "mug", stock=20)
    create(client, admin_headers, "pen", stock=20)
    user = {"Authorization": f"Bearer {token('customer', subject='hold-merge')}"}
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    add(client, user, "pen", 1)
    add(client, {"Authorization": f"Bearer {guest_token}"}, "mug", 3)
    calls.clear()

    merged = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=user)

    assert merged.status_code == 200, merged.get_data(as_text=True)
    assert holds(calls) == [("reserve_stock", "mug", 2, 3)]  # the moved line's hold, cut from 3 to 2
