"""`flask carts sweep`: expired holds leave the cart and go back on sale; abandoned carts expire."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from app import clock
from app.cart import sweep as sweeping
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
    with app.app_context():
        assert db.session.get(Cart, uuid.UUID(first_cart)).status == ("expired" if expired else "active")


def test_the_sweep_forgets_idempotency_keys_past_their_lifetime(
    app, client, runner, admin_headers, shopper, monkeypatch
):
    instant = clock.now()
    monkeypatch.setattr(clock, "now", lambda: instant)
    create(client, admin_headers, "mug")

    def add_once(key: str):
        body = {"productId": "mug", "quantity": 1}
        return client.post("/v1/cart/products", json=body, headers={**shopper, "Idempotency-Key": key})

    for key in ("old-1", "old-2", "at-the-limit", "young"):
        assert add_once(key).status_code == 201
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key.in_(["old-1", "old-2"]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.execute(  # its lifetime ends this very instant: it still answers
            update(IdempotencyKey).where(IdempotencyKey.key == "at-the-limit").values(expires_at=utcnow())
        )
        db.session.commit()
    assert "forgot 2 expired idempotency keys" in run_sweep(runner)
    with app.app_context():
        assert sorted(db.session.scalars(select(IdempotencyKey.key))) == ["at-the-limit", "young"]
    assert "forgot 0 expired idempotency keys" in run_sweep(runner)
    assert add_once("at-the-limit").get_json()["items"][0]["quantity"] == 3  # the first answer, replayed
    assert client.get("/v1/cart", headers=shopper).get_json()["items"][0]["quantity"] == 4


def test_one_sweep_over_several_carts_counts_each_and_leaves_the_fresh_ones_alone(
    app, client, runner, admin_headers, token
):
    """Each cart is swept on its own: only its lapsed lines leave, its version moves on by one,
    and the report adds up what every cart gave back."""
    for product_id in ("mug", "pen", "cap"):
        create(client, admin_headers, product_id)
    shoppers = {
        name: {"Authorization": f"Bearer {token('customer', subject=name)}"}
        for name in ("ann", "bob", "cy", "di", "ed")
    }
    add(client, shoppers["ann"], "mug", 2)
    add(client, shoppers["ann"], "pen", 1)
    add(client, shoppers["bob"], "mug", 1)
    add(client, shoppers["cy"], "cap", 4)
    add(client, shoppers["di"], "pen", 3)
    add(client, shoppers["ed"], "mug", 1)
    owners = {name: user_id(client, headers) for name, headers in shoppers.items()}
    lapsing = {(owners["ann"], "mug"), (owners["bob"], "mug")}
    with app.app_context():  # ann's mug and bob's only line lapse; cy's and ed's carts are abandoned; di's is fresh
        for cart in db.session.scalars(select(Cart)):
            lines = cart.read_lines()
            for line in lines:
                if (cart.owner_id, line.product_id) in lapsing:
                    line.reserved_until = utcnow() - timedelta(minutes=1)
            cart.write_lines(lines)
            if cart.owner_id in (owners["cy"], owners["ed"]):
                cart.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    versions = {
        name: client.get("/v1/cart", headers=headers).get_json()["version"] for name, headers in shoppers.items()
    }

    output = run_sweep(runner)

    assert "released 4 expired lines from 4 carts; expired 2 abandoned carts" in output
    items = {
        name: [
            (item["productId"], item["quantity"])
            for item in client.get("/v1/cart", headers=headers).get_json()["items"]
        ]
        for name, headers in shoppers.items()
    }
    assert items == {"ann": [("pen", 1)], "bob": [], "cy": [], "di": [("pen", 3)], "ed": []}
    after = {
        name: client.get("/v1/cart", headers=headers).get_json()["version"]
        for name, headers in shoppers.items()
        if name not in ("cy", "ed")
    }
    assert after == {"ann": versions["ann"] + 1, "bob": versions["bob"] + 1, "di": versions["di"]}
    assert (reserved(client, "mug"), reserved(client, "pen"), reserved(client, "cap")) == (0, 4, 0)


def user_id(client, headers) -> str:
    return client.get("/v1/users/me", headers=headers).get_json()["userId"]


def test_a_hold_or_a_cart_ending_this_very_instant_is_left_for_the_next_run(
    app, client, runner, admin_headers, shopper, monkeypatch
):
    """Only what is past its time leaves: the mug lapsed a minute ago, the pen's hold and the
    cart itself end now."""
    instant = clock.now()
    monkeypatch.setattr(clock, "now", lambda: instant)
    create(client, admin_headers, "mug")
    create(client, admin_headers, "pen")
    add(client, shopper, "mug", 2)
    add(client, shopper, "pen", 1)
    ends = {"mug": instant - timedelta(minutes=1), "pen": instant}
    edit_lines(app, lambda line: setattr(line, "reserved_until", ends[line.product_id]))
    with app.app_context():
        db.session.execute(update(Cart).values(expires_at=instant))
        db.session.commit()

    assert "released 1 expired lines from 1 carts; expired 0 abandoned carts" in run_sweep(runner)
    items = client.get("/v1/cart", headers=shopper).get_json()["items"]
    assert [(item["productId"], item["quantity"]) for item in items] == [("pen", 1)]
    assert (reserved(client, "mug"), reserved(client, "pen")) == (0, 1)


def test_a_cart_being_changed_is_left_for_the_next_run(app, client, admin_headers, token, monkeypatch):
    """The sweep does not wait for a cart another request holds locked (`SKIP LOCKED`), and it
    goes on with the other carts, whatever order they are listed in."""
    create(client, admin_headers, "mug")
    shoppers = [{"Authorization": f"Bearer {token('customer', subject=name)}"} for name in ("busy", "idle")]
    for headers in shoppers:
        add(client, headers, "mug", 2)
    busy, idle = (client.get("/v1/cart", headers=headers).get_json()["shoppingCartId"] for headers in shoppers)
    age(app, lines_by=timedelta(minutes=1))
    listed = sweeping._carts_to_visit
    monkeypatch.setattr(sweeping, "_carts_to_visit", lambda now: sorted(listed(now), key=lambda id_: str(id_) != busy))

    with app.app_context():
        writer = db.engine.connect()
        # a writer that never finishes is ended by the server: a sweep that waits still ends
        writer.execute(text("SET idle_in_transaction_session_timeout = '5s'"))
        writer.execute(select(Cart.id).where(Cart.id == uuid.UUID(busy)).with_for_update())
        try:
            report = sweeping.sweep()
        finally:
            with contextlib.suppress(DBAPIError):
                writer.close()

    assert report == sweeping.SweepReport(lines_released=1, carts_swept=1, carts_expired=0, keys_forgotten=0)
    carts = {headers["Authorization"]: client.get("/v1/cart", headers=headers).get_json() for headers in shoppers}
    assert [len(cart["items"]) for cart in carts.values()] == [1, 0]
    assert idle == carts[shoppers[1]["Authorization"]]["shoppingCartId"]
    with app.app_context():
        assert sweeping.sweep().lines_released == 1  # the next run
    assert reserved(client, "mug") == 0


def test_a_cart_another_sweep_expired_meanwhile_is_counted_once(app, client, admin_headers, shopper, monkeypatch):
    """Two sweeps at once (two schedulers): the cart is expired by the one that locks it first."""
    create(client, admin_headers, "mug")
    add(client, shopper, "mug", 2)
    age(app, carts_by=timedelta(days=91))
    listed = sweeping._carts_to_visit
    others: list[sweeping.SweepReport] = []

    def listed_then_another_sweep_runs(now):
        carts = listed(now)
        monkeypatch.setattr(sweeping, "_carts_to_visit", listed)
        others.append(sweeping.sweep(now=now))
        return carts

    monkeypatch.setattr(sweeping, "_carts_to_visit", listed_then_another_sweep_runs)
    with app.app_context():
        report = sweeping.sweep()

    assert others == [sweeping.SweepReport(lines_released=1, carts_swept=1, carts_expired=1, keys_forgotten=0)]
    assert report == sweeping.SweepReport(lines_released=0, carts_swept=0, carts_expired=0, keys_forgotten=0)
    assert reserved(client, "mug") == 0
