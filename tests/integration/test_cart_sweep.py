"""`flask carts sweep`: expired holds leave the cart and go back on sale; abandoned carts expire."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.cart.models import Cart, IdempotencyKey, Line, utcnow
from app.extensions import db


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='sweep-shopper')}"}


def create(client, admin_headers, product_id: str, stock: int = 10) -> None:
    body = {"productId": product_id, "sku": f"SKU-{product_id}", "name": product_id, "price": "1.00", "stock": stock}
    assert client.post("/v1/products", json=body, headers=admin_headers).status_code == 201


def add(client, headers, product_id: str, quantity: int = 1) -> None:
    body = {"productId": product_id, "quantity": quantity}
    assert client.post("/v1/cart/products", json=body, headers=headers).status_code == 201


def reserved(client, product_id: str) -> int:
    return client.get(f"/v1/products/{product_id}").get_json()["reserved"]


def edit_lines(app, change: Callable[[Line], None]) -> None:
    """Change every cart's lines in PostgreSQL behind the app's back (no cart write)."""
    with app.app_context():
        for cart in db.session.scalars(select(Cart)):
            lines = cart.read_lines()
            for line in lines:
                change(line)
            cart.write_lines(lines)
        db.session.commit()


def age(app, *, lines_by=None, carts_by=None) -> None:
    if lines_by:
        edit_lines(app, lambda line: setattr(line, "reserved_until", utcnow() - lines_by))
    with app.app_context():
        if carts_by:  # as if the last change was that long ago
            db.session.execute(update(Cart).values(expires_at=Cart.expires_at - carts_by))
        db.session.commit()


def run_sweep(runner) -> str:
    result = runner.invoke(args=["carts", "sweep"])
    assert result.exit_code == 0, result.output
    return result.output


def test_nothing_to_sweep(client, runner, admin_headers, shopper):
    create(client, admin_headers, "mug")
    add(client, shopper, "mug", 2)
    report = "released 0 expired lines from 0 carts; expired 0 abandoned carts; forgot 0 expired idempotency keys"
    assert report in run_sweep(runner)
    assert reserved(client, "mug") == 2


def test_expired_holds_leave_the_cart_and_go_back_on_sale(app, client, runner, admin_headers, shopper):
    create(client, admin_headers, "mug")
    create(client, admin_headers, "pen")
    add(client, shopper, "mug", 2)
    add(client, shopper, "pen", 1)
    age(app, lines_by=timedelta(minutes=1))
    assert "released 2 expired lines from 1 carts" in run_sweep(runner)
    assert client.get("/v1/cart", headers=shopper).get_json()["items"] == []
    assert (reserved(client, "mug"), reserved(client, "pen")) == (0, 0)
    assert "released 0 expired lines" in run_sweep(runner)


def test_activity_renews_the_hold(app, client, runner, admin_headers, shopper):
    create(client, admin_headers, "mug")
    add(client, shopper, "mug")
    age(app, lines_by=timedelta(minutes=1))
    add(client, shopper, "mug")  # touching the line renews its hold
    run_sweep(runner)
    assert client.get("/v1/cart", headers=shopper).get_json()["items"][0]["quantity"] == 2
    assert reserved(client, "mug") == 2


@pytest.mark.parametrize(
    ("subject_is_guest", "days", "expired"),
    [(True, 31, True), (True, 29, False), (False, 89, False), (False, 91, True)],
)
def test_abandoned_carts_expire(app, client, runner, admin_headers, shopper, subject_is_guest, days, expired):
    create(client, admin_headers, "mug")
    headers = shopper
    if subject_is_guest:
        headers = {"Authorization": f"Bearer {client.post('/v1/auth/guest').get_json()['accessToken']}"}
    add(client, headers, "mug", 3)
    first_cart = client.get("/v1/cart", headers=headers).get_json()["shoppingCartId"]
    age(app, carts_by=timedelta(days=days))
    output = run_sweep(runner)
    assert (f"expired {int(expired)} abandoned carts") in output
    assert reserved(client, "mug") == (0 if expired else 3)
    assert (client.get("/v1/cart", headers=headers).get_json()["shoppingCartId"] != first_cart) is expired


def test_the_sweep_forgets_idempotency_keys_past_their_lifetime(app, client, runner, admin_headers, shopper):
    create(client, admin_headers, "mug")
    for key in ("old-1", "old-2", "young"):
        response = client.post(
            "/v1/cart/products", json={"productId": "mug", "quantity": 1}, headers={**shopper, "Idempotency-Key": key}
        )
        assert response.status_code == 201
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key.in_(["old-1", "old-2"]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    assert "forgot 2 expired idempotency keys" in run_sweep(runner)
    with app.app_context():
        assert list(db.session.scalars(select(IdempotencyKey.key))) == ["young"]
    assert "forgot 0 expired idempotency keys" in run_sweep(runner)


def test_one_sweep_over_several_carts_counts_each_and_leaves_the_fresh_ones_alone(
    app, client, runner, admin_headers, token
):
    """Each cart is swept on its own: only its lapsed lines leave, its version moves on by one,
    and the report adds up what every cart gave back."""
    for product_id in ("mug", "pen", "cap"):
        create(client, admin_headers, product_id)
    shoppers = {
        name: {"Authorization": f"Bearer {token('customer', subject=name)}"} for name in ("ann", "bob", "cy", "di")
    }
    add(client, shoppers["ann"], "mug", 2)
    add(client, shoppers["ann"], "pen", 1)
    add(client, shoppers["bob"], "mug", 1)
    add(client, shoppers["cy"], "cap", 4)
    add(client, shoppers["di"], "pen", 3)
    owners = {name: user_id(client, headers) for name, headers in shoppers.items()}
    lapsing = {(owners["ann"], "mug"), (owners["bob"], "mug")}
    with app.app_context():  # ann's mug and bob's only line lapse; cy's cart is abandoned; di's is fresh
        for cart in db.session.scalars(select(Cart)):
            lines = cart.read_lines()
            for line in lines:
                if (cart.owner_id, line.product_id) in lapsing:
                    line.reserved_until = utcnow() - timedelta(minutes=1)
            cart.write_lines(lines)
            if cart.owner_id == owners["cy"]:
                cart.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    versions = {
        name: client.get("/v1/cart", headers=headers).get_json()["version"] for name, headers in shoppers.items()
    }

    output = run_sweep(runner)

    assert "released 3 expired lines from 3 carts; expired 1 abandoned carts" in output
    items = {
        name: [
            (item["productId"], item["quantity"])
            for item in client.get("/v1/cart", headers=headers).get_json()["items"]
        ]
        for name, headers in shoppers.items()
    }
    assert items == {"ann": [("pen", 1)], "bob": [], "cy": [], "di": [("pen", 3)]}
    after = {
        name: client.get("/v1/cart", headers=headers).get_json()["version"]
        for name, headers in shoppers.items()
        if name != "cy"
    }
    assert after == {"ann": versions["ann"] + 1, "bob": versions["bob"] + 1, "di": versions["di"]}
    assert (reserved(client, "mug"), reserved(client, "pen"), reserved(client, "cap")) == (0, 4, 0)


def user_id(client, headers) -> str:
    return client.get("/v1/users/me", headers=headers).get_json()["userId"]
