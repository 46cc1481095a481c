"""Cart rules against hoarding, stale prices and mixed currencies; holds that lapse by themselves.

Time moves through `app.clock.now` (every expiry decision reads it), not by sleeping.
"""

from __future__ import annotations

from datetime import timedelta

import pymongo
import pytest

from app import clock
from app.products import holds
from app.products.models import LAPSE_GRACE
from tests.integration.test_auth_api import from_ip
from tests.integration.test_cart_api import add, checkout, create, reserved
from tests.problems import expect_problem

LAPSED = 1 + LAPSE_GRACE.total_seconds()  # seconds past a hold's expiry: lapsed


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='shopper')}"}


@pytest.fixture
def rival(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='rival')}"}


@pytest.fixture
def later(monkeypatch):
    """Move the app's clock on by some seconds."""
    real_now = clock.now

    def move(seconds: float) -> None:
        moment = real_now() + timedelta(seconds=seconds)
        monkeypatch.setattr(clock, "now", lambda: moment)

    return move


def patch_product(client, admin_headers, product_id: str, changes: dict):
    etag = client.get(f"/v1/products/{product_id}").headers["ETag"]
    response = client.patch(f"/v1/products/{product_id}", json=changes, headers={**admin_headers, "If-Match": etag})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def cart_of(client, headers) -> dict:
    return client.get("/v1/cart", headers=headers).get_json()


# --- holds lapse without a sweeper ---------------------------------------------------------


def test_a_lapsed_hold_stops_counting_and_another_buyer_takes_its_units(
    app, client, admin_headers, shopper, rival, later
):
    ttl = app.extensions["carts"].reservation_ttl.total_seconds()
    create(client, admin_headers, "mug", stock=5)
    assert add(client, shopper, "mug", 5).status_code == 201
    expect_problem(add(client, rival, "mug", 1), 409, "insufficient_stock")

    later(ttl + LAPSED)  # no sweeper runs
    item = cart_of(client, shopper)["items"][0]
    assert (item["quantity"], item["reservationExpired"]) == (5, True)
    listed = client.get("/v1/products/mug").get_json()
    assert (listed["reserved"], listed["available"]) == (0, 5)
    [page_item] = client.get("/v1/products").get_json()
    assert page_item["available"] == 5

    assert add(client, rival, "mug", 5).status_code == 201
    assert (reserved(client, "mug"), client.get("/v1/products/mug").get_json()["available"]) == (5, 0)
    # the first shopper's line is still there, flagged; holding it again fails while stock is gone
    expect_problem(add(client, shopper, "mug", 1), 409, "insufficient_stock")
    assert cart_of(client, shopper)["items"][0]["reservationExpired"] is True


def test_a_line_shows_its_hold_expired_from_the_very_instant_it_ends(app, client, admin_headers, shopper, monkeypatch):
    ttl = app.extensions["carts"].reservation_ttl
    instant = clock.now()
    monkeypatch.setattr(clock, "now", lambda: instant)
    create(client, admin_headers, "mug", stock=5)
    add(client, shopper, "mug", 1)

    def expired_at(moment) -> bool:
        monkeypatch.setattr(clock, "now", lambda: moment)
        return cart_of(client, shopper)["items"][0]["reservationExpired"]

    assert [expired_at(instant + ttl - timedelta(microseconds=1)), expired_at(instant + ttl)] == [False, True]


def test_the_next_write_holds_a_lapsed_line_again_when_stock_allows(app, client, admin_headers, shopper, later):
    ttl = app.extensions["carts"].reservation_ttl.total_seconds()
    create(client, admin_headers, "mug", stock=5)
    add(client, shopper, "mug", 2)
    later(ttl + LAPSED)
    create(client, admin_headers, "cup", stock=1)
    assert add(client, shopper, "cup", 1).status_code == 201  # another line: the lapsed one stays lapsed
    assert client.get("/v1/products/mug").get_json()["reserved"] == 0

    again = add(client, shopper, "mug", 1)
    assert again.status_code == 201, again.get_data(as_text=True)
    mug = next(item for item in again.get_json()["items"] if item["productId"] == "mug")
    assert (mug["quantity"], mug["reservationExpired"]) == (3, False)
    assert reserved(client, "mug") == 3


def test_a_lapsed_hold_released_by_another_buyer_is_held_again(app, client, admin_headers, shopper, rival, later):
    ttl = app.extensions["carts"].reservation_ttl.total_seconds()
    create(client, admin_headers, "mug", stock=5)
    add(client, shopper, "mug", 3)
    later(ttl + LAPSED)
    assert add(client, rival, "mug", 4).status_code == 201  # needs the lapsed units: they are released
    expect_problem(add(client, shopper, "mug", 1), 409, "insufficient_stock")  # 4 more than the 1 left
    shrunk = client.put("/v1/cart/products/mug", json={"quantity": 1}, headers=shopper)
    assert shrunk.status_code == 200, shrunk.get_data(as_text=True)
    assert shrunk.get_json()["items"][0]["reservationExpired"] is False
    assert (reserved(client, "mug"), client.get("/v1/products/mug").get_json()["available"]) == (5, 0)


def test_a_merge_into_a_line_whose_lapsed_hold_another_buyer_took_holds_what_is_left(
    app, client, admin_headers, shopper, rival, later
):
    """The user's line holds nothing any more: it grows from 0, by what the guest's units free."""
    ttl = app.extensions["carts"].reservation_ttl.total_seconds()
    create(client, admin_headers, "mug", stock=5)
    add(client, shopper, "mug", 3)
    later(ttl + LAPSED)
    assert add(client, rival, "mug", 4).status_code == 201  # the lapsed units are released for the rival
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    assert add(client, {"Authorization": f"Bearer {guest_token}"}, "mug", 1).status_code == 201  # the last one

    merged = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=shopper)

    assert merged.status_code == 200, merged.get_data(as_text=True)
    result = merged.get_json()
    assert result["adjustments"] == [{"productId": "mug", "requested": 4, "merged": 1, "reason": "insufficient_stock"}]
    assert [(item["productId"], item["quantity"]) for item in result["cart"]["items"]] == [("mug", 1)]
    assert (reserved(client, "mug"), client.get("/v1/products/mug").get_json()["available"]) == (5, 0)


def test_checkout_of_a_lapsed_line_holds_it_again_and_sells_it(app, client, admin_headers, shopper, later):
    ttl = app.extensions["carts"].reservation_ttl.total_seconds()
    create(client, admin_headers, "mug", stock=5)
    add(client, shopper, "mug", 2)
    later(ttl + LAPSED)
    placed = checkout(client, shopper)
    assert placed.status_code == 201, placed.get_data(as_text=True)
    mug = client.get("/v1/products/mug").get_json()
    assert (mug["stock"], mug["reserved"]) == (3, 0)


# --- limits against hoarding ---------------------------------------------------------------


def test_a_cart_holds_at_most_cart_max_lines_products(other_app, admin_headers, token):
    app = other_app(cart_max_lines=2)
    client = app.test_client()
    shopper = {"Authorization": f"Bearer {token('customer', subject='hoarder')}"}
    for product_id in ("a1", "a2", "a3"):
        create(client, admin_headers, product_id)
    assert add(client, shopper, "a1").status_code == 201
    assert add(client, shopper, "a2").status_code == 201
    body = expect_problem(
        add(client, shopper, "a3"), 409, "cart_line_limit_exceeded", detail="A cart holds at most 2 different products."
    )
    assert body["maximum"] == 2
    assert reserved(client, "a3") == 0
    assert add(client, shopper, "a2").status_code == 201  # a line already there may still grow


def test_a_cart_holds_at_most_cart_max_units(other_app, admin_headers, token):
    app = other_app(cart_max_units=5)
    client = app.test_client()
    shopper = {"Authorization": f"Bearer {token('customer', subject='hoarder')}"}
    create(client, admin_headers, "a1")
    create(client, admin_headers, "a2")
    add(client, shopper, "a1", 3)
    body = expect_problem(
        add(client, shopper, "a2", 3), 409, "cart_unit_limit_exceeded", detail="A cart holds at most 5 units in all."
    )
    assert (body["maximum"], body["productId"]) == (5, "a2")
    expect_problem(
        client.put("/v1/cart/products/a1", json={"quantity": 6}, headers=shopper), 409, "cart_unit_limit_exceeded"
    )
    assert add(client, shopper, "a2", 2).status_code == 201
    create(client, admin_headers, "a3")
    expect_problem(add(client, shopper, "a3", 1), 409, "cart_unit_limit_exceeded")  # a full cart: not one more
    assert (reserved(client, "a1"), reserved(client, "a2"), reserved(client, "a3")) == (3, 2, 0)
    assert client.put("/v1/cart/products/a1", json={"quantity": 1}, headers=shopper).status_code == 200


def test_a_cart_over_a_lowered_unit_limit_may_keep_or_shrink_its_lines_not_grow_them(
    client, other_app, admin_headers, shopper
):
    create(client, admin_headers, "a1")
    create(client, admin_headers, "a2")
    add(client, shopper, "a1", 3)
    add(client, shopper, "a2", 3)
    lowered = other_app(cart_max_units=4).test_client()  # CART_MAX_UNITS lowered to 4: the cart holds 6

    def set_a1(quantity: int):
        return lowered.put("/v1/cart/products/a1", json={"quantity": quantity}, headers=shopper)

    assert set_a1(3).status_code == 200  # as it is
    assert set_a1(2).status_code == 200
    expect_problem(set_a1(3), 409, "cart_unit_limit_exceeded")
    assert [item["quantity"] for item in cart_of(client, shopper)["items"]] == [2, 3]


def test_merging_respects_the_cart_limits(other_app, admin_headers, token):
    app = other_app(cart_max_lines=2, cart_max_units=6)
    client = app.test_client()
    user = {"Authorization": f"Bearer {token('customer', subject='merger')}"}
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    guest = {"Authorization": f"Bearer {guest_token}"}
    for product_id in ("a1", "a2", "a3"):
        create(client, admin_headers, product_id)
    add(client, user, "a1", 2)
    add(client, guest, "a2", 5)
    add(client, guest, "a3", 1)
    merged = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=user)
    assert merged.status_code == 200, merged.get_data(as_text=True)
    body = merged.get_json()
    lines = {item["productId"]: item["quantity"] for item in body["cart"]["items"]}
    assert lines == {"a1": 2, "a2": 4}
    reasons = {adjustment["productId"]: adjustment["reason"] for adjustment in body["adjustments"]}
    assert reasons == {"a2": "unit_limit", "a3": "line_limit"}
    assert [reserved(client, product_id) for product_id in ("a1", "a2", "a3")] == [2, 4, 0]


@pytest.mark.parametrize(("units", "merged"), [(6, 0), (5, 1), (4, 2)])
def test_a_guest_line_takes_only_the_units_left_in_the_cart(other_app, admin_headers, token, units, merged):
    """A full cart takes no new line; one unit of room takes one unit; two take the guest's two whole."""
    app = other_app(cart_max_units=6)
    client = app.test_client()
    user = {"Authorization": f"Bearer {token('customer', subject='merger')}"}
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    for product_id in ("a1", "a2"):
        create(client, admin_headers, product_id)
    add(client, user, "a1", units)
    add(client, {"Authorization": f"Bearer {guest_token}"}, "a2", 2)

    body = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=user).get_json()

    cut = [{"productId": "a2", "requested": 2, "merged": merged, "reason": "unit_limit"}] if merged < 2 else []
    assert body["adjustments"] == cut
    lines = {item["productId"]: item["quantity"] for item in body["cart"]["items"]}
    assert lines == ({"a1": units, "a2": merged} if merged else {"a1": units})
    assert (reserved(client, "a1"), reserved(client, "a2")) == (units, merged)


def merge_limited(other_app, admin_headers, token, user_lines, guest_lines, **limits):
    """The merge answer and the user's lines after it, for carts of these lines under these limits."""
    app = other_app(**limits)
    client = app.test_client()
    user = {"Authorization": f"Bearer {token('customer', subject='merger')}"}
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    guest = {"Authorization": f"Bearer {guest_token}"}
    for product_id in {**user_lines, **guest_lines}:
        create(client, admin_headers, product_id)
    for headers, lines in ((user, user_lines), (guest, guest_lines)):
        for product_id, quantity in lines.items():
            assert add(client, headers, product_id, quantity).status_code == 201
    merged = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=user)
    assert merged.status_code == 200, merged.get_data(as_text=True)
    body = merged.get_json()
    lines = {item["productId"]: item["quantity"] for item in body["cart"]["items"]}
    return body, lines, {product_id: reserved(client, product_id) for product_id in {**user_lines, **guest_lines}}


def test_a_guest_line_adds_up_with_the_users_to_the_units_left(other_app, admin_headers, token):
    body, lines, held = merge_limited(other_app, admin_headers, token, {"a1": 4}, {"a1": 3}, cart_max_units=6)
    assert body["adjustments"] == [{"productId": "a1", "requested": 7, "merged": 6, "reason": "unit_limit"}]
    assert (lines, held) == ({"a1": 6}, {"a1": 6})


def test_a_full_cart_keeps_its_line_as_it_was(other_app, admin_headers, token):
    body, lines, held = merge_limited(other_app, admin_headers, token, {"a1": 6}, {"a1": 2}, cart_max_units=6)
    [adjustment] = body["adjustments"]
    assert (adjustment["productId"], adjustment["merged"], adjustment["reason"]) == ("a1", 6, "unit_limit")
    assert (lines, held) == ({"a1": 6}, {"a1": 6})


def test_the_guest_lines_after_a_refused_one_are_merged(other_app, admin_headers, token):
    body, lines, held = merge_limited(
        other_app, admin_headers, token, {"a1": 1, "a2": 1}, {"a3": 1, "a1": 2}, cart_max_lines=2
    )
    assert body["adjustments"] == [{"productId": "a3", "requested": 1, "merged": 0, "reason": "line_limit"}]
    assert (lines, held) == ({"a1": 3, "a2": 1}, {"a1": 3, "a2": 1, "a3": 0})


def test_a_guest_line_in_another_currency_stays_out_of_the_cart(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=5)
    yen = {"productId": "tea", "sku": "SKU-TEA", "name": "Tea", "price": "1500", "currency": "JPY", "stock": 5}
    assert client.post("/v1/products", json=yen, headers=admin_headers).status_code == 201
    add(client, shopper, "mug")
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    add(client, {"Authorization": f"Bearer {guest_token}"}, "tea", 2)

    body = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=shopper).get_json()

    assert body["adjustments"] == [{"productId": "tea", "requested": 2, "merged": 0, "reason": "currency_mismatch"}]
    assert [(item["productId"], item["quantity"]) for item in body["cart"]["items"]] == [("mug", 1)]
    assert (body["cart"]["currency"], reserved(client, "tea")) == ("USD", 0)


def test_an_empty_cart_takes_the_currency_of_the_guest_cart_merged_into_it(client, admin_headers, shopper):
    yen = {"productId": "tea", "sku": "SKU-TEA", "name": "Tea", "price": "1500", "currency": "JPY", "stock": 5}
    assert client.post("/v1/products", json=yen, headers=admin_headers).status_code == 201
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    add(client, {"Authorization": f"Bearer {guest_token}"}, "tea", 2)

    body = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=shopper).get_json()

    assert (body["mergedLines"], body["adjustments"]) == (1, [])
    assert (body["cart"]["currency"], body["cart"]["totalPrice"]) == ("JPY", "3000.00")
    assert cart_of(client, shopper)["currency"] == "JPY"


def test_guest_sessions_have_a_limit_of_their_own(other_app):
    client = other_app(auth_rate_limit="2 per minute", guest_rate_limit="4 per minute").test_client()
    answers = [client.post("/v1/auth/guest").status_code for _ in range(5)]
    assert answers == [201, 201, 201, 201, 429]
    limited = client.post("/v1/auth/guest")
    expect_problem(limited, 429, "rate_limited")
    assert limited.headers["RateLimit-Limit"] == "4"
    assert client.post("/v1/auth/guest", **from_ip("10.0.4.1")).status_code == 201  # per client address


# --- checkout charges what the catalog says now ---------------------------------------------


def test_a_changed_price_answers_409_updates_the_lines_and_the_next_checkout_pays_it(client, admin_headers, shopper):
    create(client, admin_headers, "mug", price="0.01", stock=200)
    add(client, shopper, "mug", 1)
    patch_product(client, admin_headers, "mug", {"price": "100.00"})
    assert client.put("/v1/cart/products/mug", json={"quantity": 100}, headers=shopper).status_code == 200

    body = expect_problem(
        checkout(client, shopper, key="c-1"),
        409,
        "price_changed",
        detail="Some prices have changed; the cart now shows them. Check out again to pay these prices.",
    )
    assert body["priceChanges"] == [{"productId": "mug", "oldPrice": "0.01", "newPrice": "100.00"}]
    cart = cart_of(client, shopper)
    assert (cart["items"][0]["price"], cart["totalPrice"]) == ("100.00", "10000.00")
    assert reserved(client, "mug") == 100  # the holds stay

    order = checkout(client, shopper, key="c-2")
    assert order.status_code == 201, order.get_data(as_text=True)
    assert order.get_json()["totalPrice"] == "10000.00"


def test_an_archived_product_answers_409_and_leaves_the_cart_with_its_hold(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=5)
    create(client, admin_headers, "pen", stock=5)
    add(client, shopper, "pen", 1)  # first: the lines after an archived one are repriced all the same
    add(client, shopper, "mug", 2)
    patch_product(client, admin_headers, "pen", {"price": "3.00"})
    patch_product(client, admin_headers, "mug", {"price": "4.00"})
    assert client.delete("/v1/products/pen", headers=admin_headers).status_code == 204
    shown = {item["productId"]: item["available"] for item in cart_of(client, shopper)["items"]}
    assert shown == {"pen": 0, "mug": 3}  # an archived product is not for sale, whatever its stock

    body = expect_problem(
        checkout(client, shopper, key="c-1"),
        409,
        "product_unavailable",
        detail="Some products are no longer on sale and left the cart; check the cart and try again.",
    )
    assert body["products"] == ["pen"]
    assert body["priceChanges"] == [{"productId": "mug", "oldPrice": "10.00", "newPrice": "4.00"}]  # not the pen's
    assert [(item["productId"], item["price"]) for item in cart_of(client, shopper)["items"]] == [("mug", "4.00")]
    archived = client.get("/v1/products/pen", headers=admin_headers)  # only admins see an archived product
    assert archived.get_json()["reserved"] == 0
    order = checkout(client, shopper, key="c-2")
    assert order.status_code == 201
    assert [line["productId"] for line in order.get_json()["items"]] == ["mug"]


def test_one_cart_has_one_currency(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=5)
    yen = {"productId": "tea", "sku": "SKU-TEA", "name": "Tea", "price": "1500", "currency": "JPY", "stock": 5}
    assert client.post("/v1/products", json=yen, headers=admin_headers).status_code == 201
    add(client, shopper, "mug")
    body = expect_problem(
        add(client, shopper, "tea"),
        409,
        "currency_mismatch",
        detail="This cart is in USD; product 'tea' is priced in JPY.",
    )
    assert (body["cartCurrency"], body["productCurrency"], body["productId"]) == ("USD", "JPY", "tea")
    assert reserved(client, "tea") == 0
    assert [item["productId"] for item in cart_of(client, shopper)["items"]] == ["mug"]

    client.delete("/v1/cart", headers=shopper)
    added = add(client, shopper, "tea")  # an empty cart takes the currency of its first line
    assert added.status_code == 201
    assert (added.get_json()["currency"], added.get_json()["totalPrice"]) == ("JPY", "1500.00")


# --- the documented error shapes ---------------------------------------------------------


def test_documented_problems_admit_and_describe_their_extensions(client):
    spec = client.get("/api/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    assert schemas["Problem"]["additionalProperties"] is True
    add_item = spec["paths"]["/v1/cart/products"]["post"]["responses"]
    not_found = add_item["404"]["content"]["application/problem+json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "productId" in schemas[not_found]["properties"]
    conflict = add_item["409"]["content"]["application/problem+json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"available", "maximum", "cartCurrency", "priceChanges"} <= set(schemas[conflict]["properties"])
    item = schemas["CartItem"]["properties"]
    assert {"reservationExpired", "reservedUntil"} <= set(item)


def test_setting_a_live_line_to_its_own_quantity_stands_when_the_products_store_fails(
    client, admin_headers, shopper, monkeypatch
):
    """Not a growth: the line is written first, the hold renewed after; a failed renewal only logs."""
    create(client, admin_headers, "mug", stock=5)
    version = add(client, shopper, "mug", 2).get_json()["version"]

    def store_down(*args, **kwargs):
        raise pymongo.errors.AutoReconnect("connection refused")

    monkeypatch.setattr(holds, "_change", store_down)
    kept = client.put("/v1/cart/products/mug", json={"quantity": 2}, headers=shopper)
    assert kept.status_code == 200, kept.get_data(as_text=True)
    assert (kept.get_json()["version"], kept.get_json()["items"][0]["quantity"]) == (version + 1, 2)
    monkeypatch.undo()
    assert reserved(client, "mug") == 2


def test_a_removal_stands_when_the_products_store_fails_to_take_the_units_back(
    client, admin_headers, shopper, monkeypatch, caplog
):
    """The line leaves the cart (committed first); its units stay held until the hold lapses."""
    create(client, admin_headers, "mug", stock=5)
    add(client, shopper, "mug", 2)

    def store_down(*args, **kwargs):
        raise pymongo.errors.AutoReconnect("connection refused")

    monkeypatch.setattr(holds, "_change", store_down)
    removed = client.delete("/v1/cart/products/mug?all=true", headers=shopper)
    assert removed.status_code == 200, removed.get_data(as_text=True)
    assert removed.get_json()["items"] == []
    assert [record.getMessage() for record in caplog.records if record.name == "app.cart.holds"] == [
        "giving back held units failed; they stay held until the hold lapses:"
        " The products store is unavailable; try again shortly."
    ]
    monkeypatch.undo()
    assert reserved(client, "mug") == 2  # over-held, never sold twice
