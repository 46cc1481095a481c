"""The cart API (/v1/cart) against real PostgreSQL and the Mongo wire-protocol server."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app import clock
from app.cart.models import Cart, CartLine, IdempotencyKey
from app.extensions import db
from app.products import interface as products
from tests.integration.test_auth_api import PASSWORD, register_and_verify
from tests.problems import expect_problem


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='shopper')}"}


def create(client, admin_headers, product_id: str, *, price: str = "10.00", stock: int = 20) -> dict:
    body = {
        "productId": product_id,
        "sku": f"SKU-{product_id}",
        "name": f"Thing {product_id}",
        "price": price,
        "stock": stock,
    }
    response = client.post("/v1/products", json=body, headers=admin_headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def reserved(client, product_id: str) -> int:
    return client.get(f"/v1/products/{product_id}").get_json()["reserved"]


def add(client, headers, product_id: str, quantity: int = 1):
    return client.post("/v1/cart/products", json={"productId": product_id, "quantity": quantity}, headers=headers)


def release_hold(product_id: str) -> None:
    """Release the hold of the (only) cart line of `product_id`, as the products module does
    when a lapsed hold's units go to another buyer."""
    reservation_id = db.session.scalar(select(CartLine.reservation_id).where(CartLine.product_id == product_id))
    products.release_reservation(product_id=product_id, reservation_id=reservation_id)


def test_get_creates_an_empty_cart_once(client, shopper):
    first = client.get("/v1/cart", headers=shopper)
    assert first.status_code == 200
    body = first.get_json()
    assert body["items"] == []
    assert (body["totalPrice"], body["totalQuantity"], body["currency"]) == ("0.00", 0, "USD")
    assert first.headers["ETag"] == f'"{body["version"]}"'
    assert client.get("/v1/cart", headers=shopper).get_json()["shoppingCartId"] == body["shoppingCartId"]


def test_the_cart_needs_a_token(client):
    expect_problem(client.get("/v1/cart"), 401, "token_missing")


def test_adding_reserves_stock_and_snapshots_the_price(client, admin_headers, shopper):
    create(client, admin_headers, "mug", price="267.00", stock=5)
    response = add(client, shopper, "mug", 2)
    assert response.status_code == 201
    cart = response.get_json()
    assert (cart["totalPrice"], cart["totalQuantity"]) == ("534.00", 2)
    item = cart["items"][0]
    assert item["productId"] == "mug"
    assert (item["price"], item["quantity"], item["lineTotal"]) == ("267.00", 2, "534.00")
    assert (item["available"], item["priceChanged"], item["currentPrice"]) == (3, False, "267.00")
    assert reserved(client, "mug") == 2


def test_adding_again_raises_the_quantity_and_keeps_the_first_price(client, admin_headers, shopper):
    create(client, admin_headers, "mug", price="10.00")
    add(client, shopper, "mug")
    etag = client.get("/v1/products/mug").headers["ETag"]
    patched = client.patch("/v1/products/mug", json={"price": "12.50"}, headers={**admin_headers, "If-Match": etag})
    assert patched.status_code == 200
    item = add(client, shopper, "mug", 2).get_json()["items"][0]
    assert (item["quantity"], item["price"], item["currentPrice"], item["priceChanged"]) == (3, "10.00", "12.50", True)
    assert reserved(client, "mug") == 3


def test_not_enough_stock_is_a_409_with_what_is_available(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=3)
    add(client, shopper, "mug", 2)
    body = expect_problem(add(client, shopper, "mug", 2), 409, "insufficient_stock")
    assert body["available"] == 1
    cart = client.get("/v1/cart", headers=shopper).get_json()
    assert cart["items"][0]["quantity"] == 2
    assert reserved(client, "mug") == 2


@pytest.mark.parametrize("product_id", ["missing", "archived"])
def test_unknown_and_archived_products_cannot_be_added(client, admin_headers, shopper, product_id):
    create(client, admin_headers, "archived")
    client.delete("/v1/products/archived", headers=admin_headers)
    expect_problem(add(client, shopper, product_id), 404, "product_not_found")
    assert client.get("/v1/cart", headers=shopper).get_json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"productId": "mug", "quantity": 0}, "quantity"),
        ({"productId": "mug", "quantity": 101}, "quantity"),
        ({"productId": "mug", "quantity": "1"}, "quantity"),
        ({"productId": "", "quantity": 1}, "productId"),
        ({"quantity": 1}, "productId"),
        ({"productId": "mug", "quantity": 1, "price": "0.01"}, "price"),
    ],
)
def test_add_validates_the_body(client, shopper, body, field):
    body_errors = expect_problem(client.post("/v1/cart/products", json=body, headers=shopper), 400, "validation_error")
    assert set(body_errors["errors"]) == {field}


def test_a_line_holds_at_most_a_hundred_units(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=500)
    add(client, shopper, "mug", 60)
    body = expect_problem(add(client, shopper, "mug", 41), 409, "quantity_limit_exceeded")
    assert body["maximum"] == 100
    assert reserved(client, "mug") == 60


def test_delete_removes_one_unit_then_the_line(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    add(client, shopper, "mug", 2)
    once = client.delete("/v1/cart/products/mug", headers=shopper)
    assert once.get_json()["items"][0]["quantity"] == 1
    assert reserved(client, "mug") == 1
    twice = client.delete("/v1/cart/products/mug", headers=shopper)
    assert twice.get_json()["items"] == []
    assert reserved(client, "mug") == 0
    expect_problem(client.delete("/v1/cart/products/mug", headers=shopper), 404, "line_not_found")


def test_delete_all_removes_the_whole_line(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    add(client, shopper, "mug", 4)
    assert client.delete("/v1/cart/products/mug?all=true", headers=shopper).get_json()["items"] == []
    assert reserved(client, "mug") == 0


def test_put_sets_the_quantity_and_zero_removes(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=10)
    add(client, shopper, "mug", 2)
    assert client.put("/v1/cart/products/mug", json={"quantity": 7}, headers=shopper).get_json()["totalQuantity"] == 7
    assert reserved(client, "mug") == 7
    assert client.put("/v1/cart/products/mug", json={"quantity": 3}, headers=shopper).get_json()["totalQuantity"] == 3
    assert reserved(client, "mug") == 3
    expect_problem(
        client.put("/v1/cart/products/mug", json={"quantity": 11}, headers=shopper), 409, "insufficient_stock"
    )
    assert client.put("/v1/cart/products/mug", json={"quantity": 0}, headers=shopper).get_json()["items"] == []
    assert reserved(client, "mug") == 0
    expect_problem(client.put("/v1/cart/products/mug", json={"quantity": 0}, headers=shopper), 404, "line_not_found")


def test_put_can_create_a_line(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    assert client.put("/v1/cart/products/mug", json={"quantity": 2}, headers=shopper).get_json()["totalQuantity"] == 2


def test_emptying_the_cart_releases_everything(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    create(client, admin_headers, "pen")
    add(client, shopper, "mug", 2)
    add(client, shopper, "pen", 3)
    emptied = client.delete("/v1/cart", headers=shopper).get_json()
    assert (emptied["items"], emptied["totalPrice"]) == ([], "0.00")
    assert (reserved(client, "mug"), reserved(client, "pen")) == (0, 0)


def test_every_change_bumps_the_version(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    versions = [
        client.get("/v1/cart", headers=shopper).get_json()["version"],
        add(client, shopper, "mug").get_json()["version"],
        client.delete("/v1/cart/products/mug", headers=shopper).get_json()["version"],
    ]
    assert versions == sorted(set(versions))


def test_guests_have_carts_of_their_own(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    guest = client.post("/v1/auth/guest").get_json()
    guest_headers = {"Authorization": f"Bearer {guest['accessToken']}"}
    cart = add(client, guest_headers, "mug").get_json()
    assert cart["userId"] == guest["userId"]
    assert client.get("/v1/cart", headers=shopper).get_json()["items"] == []


def test_money_is_summed_exactly(client, admin_headers, shopper):
    create(client, admin_headers, "a", price="0.10")
    create(client, admin_headers, "b", price="0.20")
    add(client, shopper, "a", 3)
    assert (
        add(client, shopper, "b", 1).get_json()["totalPrice"] == "0.50"
    )  # 0.1 * 3 + 0.2 as floats is 0.5000000000000001


def test_an_unreachable_products_store_is_a_503_on_add(client, admin_headers, shopper, monkeypatch):
    create(client, admin_headers, "mug")

    def unavailable(**kwargs):
        raise products.ProductsUnavailable("The products store is unavailable; try again shortly.")

    monkeypatch.setattr(products, "reserve_stock", unavailable)
    expect_problem(add(client, shopper, "mug"), 503, "dependency_unavailable")
    monkeypatch.undo()
    assert client.get("/v1/cart", headers=shopper).get_json()["items"] == []
    assert reserved(client, "mug") == 0


def test_the_cart_still_answers_from_its_snapshots_when_products_are_unreachable(
    client, admin_headers, shopper, monkeypatch
):
    create(client, admin_headers, "mug", price="4.00")
    add(client, shopper, "mug", 2)

    def unavailable(**kwargs):
        raise products.ProductsUnavailable("down")

    monkeypatch.setattr(products, "get_products", unavailable)
    cart = client.get("/v1/cart", headers=shopper).get_json()
    assert cart["totalPrice"] == "8.00"
    assert (cart["items"][0]["available"], cart["items"][0]["currentPrice"]) == (None, None)


def test_concurrent_first_requests_create_one_cart(app, token):
    headers = {"Authorization": f"Bearer {token('customer', subject='racer')}"}

    def first_get(_: int) -> str:
        return app.test_client().get("/v1/cart", headers=headers).get_json()["shoppingCartId"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        cart_ids = set(pool.map(first_get, range(16)))
    assert len(cart_ids) == 1


def test_parallel_adds_to_one_cart_lose_no_line(app, client, admin_headers, shopper):
    for number in range(10):
        create(client, admin_headers, f"p{number}")

    def add_one(number: int) -> int:
        return add(app.test_client(), shopper, f"p{number}").status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        assert set(pool.map(add_one, range(10))) == {201}
    cart = client.get("/v1/cart", headers=shopper).get_json()
    assert sorted(item["productId"] for item in cart["items"]) == [f"p{number}" for number in range(10)]
    assert cart["version"] == 11


def test_a_client_written_for_the_original_still_works(client, admin_headers, mail_dir):
    """login -> GET /v1/products -> add -> remove one unit -> GET /v1/cart, with the new login body."""
    register_and_verify(client, mail_dir, "old-client@example.test")
    create(client, admin_headers, "1", price="267.00")
    session = client.post("/v1/auth/login", json={"email": "old-client@example.test", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {session.get_json()['accessToken']}"}
    listed = client.get("/v1/products").get_json()
    assert {"productId", "price"} <= set(listed[0])
    add(client, headers, listed[0]["productId"], 2)
    client.delete(f"/v1/cart/products/{listed[0]['productId']}", headers=headers)
    cart = client.get("/v1/cart", headers=headers).get_json()
    assert {"shoppingCartId", "userId", "totalPrice", "totalQuantity", "items"} <= set(cart)
    assert (cart["totalPrice"], cart["totalQuantity"]) == ("267.00", 1)
    assert {"productId", "price", "quantity"} <= set(cart["items"][0])


# --- If-Match and Idempotency-Key on cart writes -------------------------------------------


def test_if_match_refuses_a_stale_cart_version(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    etag = client.get("/v1/cart", headers=shopper).headers["ETag"]
    assert add(client, {**shopper, "If-Match": etag}, "mug").status_code == 201
    body = expect_problem(add(client, {**shopper, "If-Match": etag}, "mug"), 412, "precondition_failed")
    assert body["currentVersion"] == int(etag.strip('"')) + 1
    assert reserved(client, "mug") == 1
    expect_problem(add(client, {**shopper, "If-Match": "garbage"}, "mug"), 412, "precondition_failed")


@pytest.mark.parametrize("tag", ['""', 'W/""', '"1", "2"', "*", '"-1"'])
def test_if_match_naming_no_single_version_is_a_412_problem(client, shopper, tag):
    """`""` was a 500 (werkzeug reads it as a tag of None), found by the API fuzzing run."""
    for write in (
        lambda: client.delete("/v1/cart", headers={**shopper, "If-Match": tag}),
        lambda: add(client, {**shopper, "If-Match": tag}, "mug"),
    ):
        expect_problem(write(), 412, "precondition_failed")


def test_a_repeated_idempotency_key_replays_the_first_answer(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    headers = {**shopper, "Idempotency-Key": "add-mug-1"}
    first = add(client, headers, "mug", 2)
    again = add(client, headers, "mug", 2)
    assert again.status_code == first.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["ETag"] == first.headers["ETag"]
    assert reserved(client, "mug") == 2


def test_an_idempotency_key_reused_for_another_request_is_refused(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    headers = {**shopper, "Idempotency-Key": "k1"}
    add(client, headers, "mug", 1)
    expect_problem(add(client, headers, "mug", 3), 422, "idempotency_key_reused")
    assert reserved(client, "mug") == 1


def test_a_failed_request_gives_its_idempotency_key_back(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=1)
    headers = {**shopper, "Idempotency-Key": "k2"}
    expect_problem(add(client, headers, "mug", 2), 409, "insufficient_stock")
    client.post("/v1/products/mug/stock", json={"delta": 5, "reason": "delivery"}, headers=admin_headers)
    assert add(client, headers, "mug", 2).status_code == 201


def test_an_idempotency_key_past_its_lifetime_is_taken_by_a_new_request(app, client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    create(client, admin_headers, "pen")
    headers = {**shopper, "Idempotency-Key": "old-key"}
    assert add(client, headers, "mug", 1).status_code == 201
    expect_problem(add(client, headers, "pen", 1), 422, "idempotency_key_reused")  # while it lives
    with app.app_context():
        db.session.execute(update(IdempotencyKey).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        db.session.commit()
    answer = add(client, headers, "pen", 1)  # the same key, another request: done, not refused
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert "Idempotent-Replayed" not in answer.headers
    repeat = add(client, headers, "pen", 1)  # and now the key remembers this request
    assert repeat.headers.get("Idempotent-Replayed") == "true"
    assert {item["productId"]: item["quantity"] for item in repeat.get_json()["items"]} == {"mug": 1, "pen": 1}


def test_idempotency_keys_belong_to_their_owner(client, admin_headers, shopper, token):
    create(client, admin_headers, "mug")
    other = {"Authorization": f"Bearer {token('customer', subject='other')}"}
    add(client, {**shopper, "Idempotency-Key": "same"}, "mug")
    assert add(client, {**other, "Idempotency-Key": "same"}, "mug").headers.get("Idempotent-Replayed") is None
    assert reserved(client, "mug") == 2


# --- checkout and orders -----------------------------------------------------------------------


def checkout(client, headers, key: str = "checkout-1"):
    return client.post("/v1/cart/checkout", headers={**headers, "Idempotency-Key": key})


def test_checkout_turns_holds_into_sales_and_places_an_order(app, client, admin_headers, shopper):
    create(client, admin_headers, "mug", price="2.50", stock=10)
    create(client, admin_headers, "pen", price="1.25", stock=10)
    add(client, shopper, "mug", 2)
    add(client, shopper, "pen", 4)
    response = checkout(client, shopper)
    assert response.status_code == 201
    order = response.get_json()
    assert (order["status"], order["totalPrice"], order["totalQuantity"]) == ("placed", "10.00", 6)
    assert [(item["productId"], item["quantity"], item["lineTotal"]) for item in order["items"]] == [
        ("mug", 2, "5.00"),
        ("pen", 4, "5.00"),
    ]
    mug = client.get("/v1/products/mug").get_json()
    assert (mug["stock"], mug["reserved"]) == (8, 0)
    fresh = client.get("/v1/cart", headers=shopper).get_json()
    assert fresh["items"] == []
    assert fresh["shoppingCartId"] != order["shoppingCartId"]
    with app.app_context():
        assert db.session.get(Cart, uuid.UUID(order["shoppingCartId"])).status == "checked_out"


def test_checkout_twice_with_one_key_places_one_order(client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=10)
    add(client, shopper, "mug", 3)
    first = checkout(client, shopper, "once")
    again = checkout(client, shopper, "once")
    assert again.get_json()["orderId"] == first.get_json()["orderId"]
    assert client.get("/v1/products/mug").get_json()["stock"] == 7
    assert len(client.get("/v1/orders", headers=shopper).get_json()) == 1


def test_a_checkout_that_failed_after_selling_some_lines_completes_when_retried(
    client, admin_headers, shopper, monkeypatch
):
    """Selling a hold is idempotent: the retry finds the mug sold already and sells the pen, once each."""
    create(client, admin_headers, "mug", stock=10)
    create(client, admin_headers, "pen", stock=10)
    add(client, shopper, "mug", 2)
    add(client, shopper, "pen", 1)
    sell = products.commit_reservation

    def store_fails_at_the_pen(**arguments):
        if arguments["product_id"] == "pen":
            raise products.ProductsUnavailable("The products store is unavailable; try again shortly.")
        return sell(**arguments)

    monkeypatch.setattr(products, "commit_reservation", store_fails_at_the_pen)
    expect_problem(checkout(client, shopper, "sell-once"), 503, "dependency_unavailable")
    monkeypatch.setattr(products, "commit_reservation", sell)

    order = checkout(client, shopper, "sell-once")

    assert order.status_code == 201, order.get_data(as_text=True)
    assert [(item["productId"], item["quantity"]) for item in order.get_json()["items"]] == [("mug", 2), ("pen", 1)]
    stock = {product_id: client.get(f"/v1/products/{product_id}").get_json() for product_id in ("mug", "pen")}
    assert {product_id: (body["stock"], body["reserved"]) for product_id, body in stock.items()} == {
        "mug": (8, 0),
        "pen": (9, 0),
    }


def test_checkout_needs_an_idempotency_key(client, admin_headers, shopper):
    create(client, admin_headers, "mug")
    add(client, shopper, "mug")
    expect_problem(client.post("/v1/cart/checkout", headers=shopper), 400, "idempotency_key_required")
    assert client.get("/v1/products/mug").get_json()["stock"] == 20


def test_an_empty_cart_cannot_be_checked_out(client, shopper):
    expect_problem(checkout(client, shopper), 409, "cart_empty", detail="The cart is empty.")


def test_guests_sign_up_before_checking_out(client, admin_headers):
    create(client, admin_headers, "mug")
    guest = {"Authorization": f"Bearer {client.post('/v1/auth/guest').get_json()['accessToken']}"}
    add(client, guest, "mug")
    expect_problem(checkout(client, guest), 403, "forbidden")


def test_a_lost_hold_whose_stock_was_sold_fails_the_checkout_before_any_stock_moves(
    app, client, admin_headers, shopper, token
):
    create(client, admin_headers, "mug", stock=10)
    create(client, admin_headers, "pen", stock=1)
    add(client, shopper, "mug", 2)
    add(client, shopper, "pen", 1)
    with app.app_context():
        release_hold("pen")  # as the sweeper does when a hold expires
    rival = {"Authorization": f"Bearer {token('customer', subject='rival')}"}
    assert add(client, rival, "pen", 1).status_code == 201  # the last pen goes to another buyer
    body = expect_problem(
        checkout(client, shopper),
        409,
        "reservation_expired",
        detail="The hold on 'pen' has expired and its stock was sold; change the line's quantity.",
    )
    assert (body["productId"], body["available"]) == ("pen", 0)
    mug = client.get("/v1/products/mug").get_json()
    assert (mug["stock"], mug["reserved"]) == (10, 2)
    assert len(client.get("/v1/cart", headers=shopper).get_json()["items"]) == 2


def test_a_released_hold_is_made_again_at_checkout_when_the_stock_is_there(app, client, admin_headers, shopper):
    create(client, admin_headers, "pen", stock=3)
    add(client, shopper, "pen", 2)
    with app.app_context():
        release_hold("pen")
    order = checkout(client, shopper)
    assert order.status_code == 201, order.get_data(as_text=True)
    pen = client.get("/v1/products/pen").get_json()
    assert (pen["stock"], pen["reserved"]) == (1, 0)


def test_orders_are_private_and_admins_see_all(client, admin_headers, shopper, token):
    create(client, admin_headers, "mug")
    add(client, shopper, "mug")
    order = checkout(client, shopper).get_json()
    other = {"Authorization": f"Bearer {token('customer', subject='other')}"}
    assert client.get(f"/v1/orders/{order['orderId']}", headers=shopper).get_json() == order
    expect_problem(client.get(f"/v1/orders/{order['orderId']}", headers=other), 404, "order_not_found")
    assert client.get("/v1/orders", headers=other).get_json() == []
    assert client.get(f"/v1/orders/{order['orderId']}", headers=admin_headers).status_code == 200
    listing = client.get("/v1/orders", headers=admin_headers)
    assert [listed["orderId"] for listed in listing.get_json()] == [order["orderId"]]
    assert "X-Pagination" in listing.headers
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing for the log (SQLAlchemy warns when asked for no key)
        expect_problem(client.get("/v1/orders/not-a-uuid", headers=shopper), 404, "order_not_found")


def test_orders_placed_at_one_instant_page_in_a_stable_order(client, admin_headers, shopper, monkeypatch):
    """Newest first, and orders of one instant by id: no page repeats an order or skips one."""
    instant = clock.now()
    monkeypatch.setattr(clock, "now", lambda: instant)
    create(client, admin_headers, "mug")
    placed = []
    for number in range(5):
        add(client, shopper, "mug")
        placed.append(checkout(client, shopper, f"tie-{number}").get_json()["orderId"])

    pages = [
        client.get("/v1/orders", query_string={"page": page, "page_size": 2}, headers=shopper).get_json()
        for page in (1, 2, 3)
    ]

    assert [order["orderId"] for page in pages for order in page] == sorted(placed)


# --- guest carts merged on login ---------------------------------------------------------------


@pytest.fixture
def guest(client) -> tuple[str, dict[str, str]]:
    token = client.post("/v1/auth/guest").get_json()["accessToken"]
    return token, {"Authorization": f"Bearer {token}"}


def test_login_with_a_guest_token_merges_the_guest_cart(client, admin_headers, mail_dir, guest):
    guest_token, guest_headers = guest
    create(client, admin_headers, "mug", stock=10)
    create(client, admin_headers, "pen", stock=10)
    register_and_verify(client, mail_dir, "buyer@example.test")
    add(client, guest_headers, "mug", 2)
    add(client, guest_headers, "pen", 1)
    login = client.post(
        "/v1/auth/login",
        json={"email": "buyer@example.test", "password": PASSWORD},
        headers={"X-Guest-Token": guest_token},
    )
    assert login.status_code == 200
    merge = login.get_json()["cartMerge"]
    assert (merge["mergedLines"], merge["adjustments"]) == (2, [])
    user_headers = {"Authorization": f"Bearer {login.get_json()['accessToken']}"}
    cart = client.get("/v1/cart", headers=user_headers).get_json()
    assert sorted((item["productId"], item["quantity"]) for item in cart["items"]) == [("mug", 2), ("pen", 1)]
    assert (reserved(client, "mug"), reserved(client, "pen")) == (2, 1)
    assert client.get("/v1/cart", headers=guest_headers).get_json()["items"] == []


def test_quantities_add_up_and_are_capped_by_stock_and_the_line_maximum(client, admin_headers, shopper, guest):
    guest_token, guest_headers = guest
    create(client, admin_headers, "mug", stock=6)
    create(client, admin_headers, "pen", stock=500)
    create(client, admin_headers, "cup", stock=50)
    add(client, shopper, "mug", 3)
    add(client, guest_headers, "mug", 3)
    add(client, shopper, "pen", 70)
    add(client, guest_headers, "pen", 50)
    add(client, shopper, "cup", 1)
    add(client, guest_headers, "cup", 2)
    result = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=shopper).get_json()
    adjustments = {item["productId"]: item for item in result["adjustments"]}
    assert adjustments["pen"] == {"productId": "pen", "requested": 120, "merged": 100, "reason": "quantity_limit"}
    assert "mug" not in adjustments  # the guest's own 3 mugs count as the user's once released
    assert (reserved(client, "mug"), reserved(client, "pen"), reserved(client, "cup")) == (6, 100, 3)
    items = {item["productId"]: item["quantity"] for item in result["cart"]["items"]}
    assert items == {"mug": 6, "pen": 100, "cup": 3}  # plenty of stock: the sum, no more


def another_buyer_takes_after_each_release(monkeypatch, units: Callable[[products.StockReservation], int]) -> None:
    """Each hold given back is followed at once by another buyer holding `units(released)` mugs,
    before the caller can take them."""
    original_release = products.release_reservation

    def release_then_another_buyer_takes(**arguments):
        released = original_release(**arguments)
        products.reserve_stock(
            product_id="mug",
            quantity=units(released),
            reservation_id="another-buyer",
            expires_at=clock.now() + timedelta(minutes=5),
        )
        return released

    monkeypatch.setattr(products, "release_reservation", release_then_another_buyer_takes)


@pytest.mark.parametrize(("taken", "merged", "writes"), [(2, 5, 2), (4, 3, 1)])
def test_a_merge_cut_short_by_stock_says_so(client, admin_headers, shopper, guest, monkeypatch, taken, merged, writes):
    """Another buyer takes units the guest's hold gave back before the user's line takes them:
    the line takes what is left (a second write), or, when nothing is left, is not written again."""
    guest_token, guest_headers = guest
    create(client, admin_headers, "mug", stock=7)
    version = add(client, shopper, "mug", 3).get_json()["version"]
    add(client, guest_headers, "mug", 4)
    another_buyer_takes_after_each_release(monkeypatch, lambda released: taken)
    result = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=shopper).get_json()

    assert result["adjustments"] == [
        {"productId": "mug", "requested": 7, "merged": merged, "reason": "insufficient_stock"}
    ]
    assert [(item["productId"], item["quantity"]) for item in result["cart"]["items"]] == [("mug", merged)]
    assert result["cart"]["version"] == version + writes
    assert reserved(client, "mug") == merged + taken


def test_a_line_short_of_stock_keeps_its_units_and_takes_all_there_is(
    client, admin_headers, shopper, guest, monkeypatch
):
    """The user's 3 mugs grow by the 2 free ones; the guest's 4, once released, go to another
    buyer at once: the line ends with 5 of the 7 asked for."""
    guest_token, guest_headers = guest
    create(client, admin_headers, "mug", stock=9)
    add(client, shopper, "mug", 3)
    add(client, guest_headers, "mug", 4)
    another_buyer_takes_after_each_release(monkeypatch, lambda released: released.product.available)
    result = client.post("/v1/cart/merge", json={"guestToken": guest_token}, headers=shopper).get_json()

    assert result["adjustments"] == [{"productId": "mug", "requested": 7, "merged": 5, "reason": "insufficient_stock"}]
    assert [(item["productId"], item["quantity"]) for item in result["cart"]["items"]] == [("mug", 5)]
    assert reserved(client, "mug") == 9


def test_merging_twice_changes_nothing(app, client, admin_headers, shopper, guest):
    guest_token, guest_headers = guest
    create(client, admin_headers, "mug", stock=10)
    add(client, guest_headers, "mug", 2)
    guest_cart = client.get("/v1/cart", headers=guest_headers).get_json()["shoppingCartId"]
    first = client.post("/v1/cart/merge", headers={**shopper, "X-Guest-Token": guest_token}).get_json()
    again = client.post("/v1/cart/merge", headers={**shopper, "X-Guest-Token": guest_token}).get_json()
    assert first["mergedLines"] == 1
    assert (again["mergedLines"], again["cart"]["items"]) == (0, first["cart"]["items"])
    assert reserved(client, "mug") == 2
    with app.app_context():
        assert db.session.get(Cart, uuid.UUID(guest_cart)).status == "merged"


@pytest.mark.parametrize("token_kind", ["missing", "garbage", "user"])
def test_merge_needs_a_valid_guest_token(client, shopper, token, token_kind):
    headers = {
        "missing": {},
        "garbage": {"X-Guest-Token": "not-a-token"},
        "user": {"X-Guest-Token": token("customer", subject="someone-else")},
    }[token_kind]
    expect_problem(client.post("/v1/cart/merge", json={}, headers={**shopper, **headers}), 400, "guest_token_invalid")


def test_login_with_an_invalid_guest_token_is_refused_before_logging_in(client, mail_dir):
    register_and_verify(client, mail_dir, "buyer@example.test")
    response = client.post(
        "/v1/auth/login",
        json={"email": "buyer@example.test", "password": PASSWORD},
        headers={"X-Guest-Token": "forged"},
    )
    expect_problem(response, 400, "guest_token_invalid")
