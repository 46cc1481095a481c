"""Events recorded with their change (app/events): in the SQL outbox for carts, orders and
accounts, in the product document for products; every event valid against its schema."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import select

from app.events.envelope import EVENT_TYPES
from app.events.models import OutboxEvent
from app.extensions import db
from app.products import interface as products
from app.products.models import utcnow
from tests.integration.test_auth_api import register_and_verify
from tests.integration.test_cart_api import add, create
from tests.problems import expect_problem

SCHEMAS = Path(__file__).resolve().parents[2] / "app" / "events" / "schemas"


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        json.loads((SCHEMAS / f"{name}.json").read_text()), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def outbox(app) -> list[dict]:
    with app.app_context():
        return [json.loads(body) for body in db.session.scalars(select(OutboxEvent.body).order_by(OutboxEvent.id))]


def product_events(app) -> list[dict]:
    with app.app_context():
        return [event for pending in products.pending_events(limit=1000) for event in pending.events]


def of_type(events: list[dict], event_type: str) -> list[dict]:
    return [event for event in events if event["type"] == event_type]


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='eventful')}"}


def test_every_event_type_is_emitted_and_valid_against_its_schema(app, client, admin_headers, shopper, mail_dir):
    register_and_verify(client, mail_dir, "new@example.test")
    mug = create(client, admin_headers, "mug", price="2.50", stock=10)
    create(client, admin_headers, "pen", price="1.00", stock=10)
    create(client, admin_headers, "old", stock=1)
    assert (
        client.patch(
            "/v1/products/mug", json={"name": "Big mug"}, headers={**admin_headers, "If-Match": f'"{mug["version"]}"'}
        ).status_code
        == 200
    )
    assert client.delete("/v1/products/old", headers=admin_headers).status_code in (200, 204)
    assert (
        client.post(
            "/v1/products/pen/stock", json={"delta": 5, "reason": "delivery"}, headers=admin_headers
        ).status_code
        == 200
    )
    add(client, shopper, "mug", 2)
    add(client, shopper, "mug", 6)  # 8 of 10 held: below LOW_STOCK_THRESHOLD (5)
    client.put("/v1/cart/products/mug", json={"quantity": 3}, headers=shopper)
    client.delete("/v1/cart/products/mug", headers=shopper)
    add(client, shopper, "pen", 1)
    client.delete("/v1/cart/products/pen?all=true", headers=shopper)
    add(client, shopper, "pen", 1)
    assert client.delete("/v1/cart", headers=shopper).status_code == 200
    guest = {"Authorization": f"Bearer {client.post('/v1/auth/guest').get_json()['accessToken']}"}
    add(client, guest, "pen", 2)
    assert (
        client.post(
            "/v1/cart/merge", json={}, headers={**shopper, "X-Guest-Token": guest["Authorization"][7:]}
        ).status_code
        == 200
    )
    assert client.post("/v1/cart/checkout", headers={**shopper, "Idempotency-Key": "events-1"}).status_code == 201
    with app.app_context():  # a hold that lapsed, released for another buyer; a counter that drifted
        lapsed = utcnow() - timedelta(minutes=1)
        products.reserve_stock(product_id="mug", quantity=1, reservation_id="r-lapsed", expires_at=lapsed)
        products.reserve_stock(
            product_id="mug", quantity=10, reservation_id="r-all", expires_at=utcnow() + timedelta(minutes=5)
        )
        products.release_reservation(product_id="mug", reservation_id="r-all")
    events = outbox(app) + product_events(app)

    envelope = schema("envelope")
    for event in events:
        envelope.validate(event)
        assert event["version"] == EVENT_TYPES[event["type"]][1]
        assert event["aggregateType"] == EVENT_TYPES[event["type"]][0]
        schema(event["type"]).validate(event["payload"])
    reasons = {event["payload"]["reason"] for event in of_type(events, "product.stock_changed")}
    assert {"hold", "release", "sale", "expiry", "adjustment"} <= reasons
    assert {event["type"] for event in events} == set(EVENT_TYPES)
    assert len({event["id"] for event in events}) == len(events)


def test_a_write_that_fails_records_no_event(app, client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=2)
    before = len(outbox(app)), len(product_events(app))

    expect_problem(add(client, shopper, "mug", 3), 409, "insufficient_stock")
    expect_problem(client.post("/v1/cart/checkout", headers={**shopper, "Idempotency-Key": "e-2"}), 409, "cart_empty")

    assert (len(outbox(app)), len(product_events(app))) == before


def test_cart_events_name_the_cart_owner_and_actor_in_commit_order(app, client, admin_headers, shopper):
    create(client, admin_headers, "mug", stock=10)
    for quantity in (1, 2, 3):
        add(client, shopper, "mug", quantity)

    events = of_type(outbox(app), "cart.item_added") + of_type(outbox(app), "cart.item_changed")
    assert [(event["type"], event["payload"]["quantity"]) for event in events] == [
        ("cart.item_added", 1),
        ("cart.item_changed", 3),
        ("cart.item_changed", 6),
    ]
    cart = client.get("/v1/cart", headers=shopper).get_json()
    assert {event["aggregateId"] for event in events} == {cart["shoppingCartId"]}
    assert {event["actor"] for event in events} == {cart["userId"]}


def test_stock_changes_carry_the_figures_after_them_and_low_stock_follows_a_drop_below_the_threshold(
    app, client, admin_headers, shopper
):
    create(client, admin_headers, "lamp", stock=10)
    add(client, shopper, "lamp", 3)  # available 7
    add(client, shopper, "lamp", 3)  # available 4: below 5
    add(client, shopper, "lamp", 1)  # available 3: still below, no second low_stock
    client.delete("/v1/cart/products/lamp?all=true", headers=shopper)  # available 10

    events = product_events(app)
    changes = [
        (event["payload"]["reason"], event["payload"]["after"]) for event in of_type(events, "product.stock_changed")
    ]
    assert changes == [
        ("hold", {"stock": 10, "reserved": 3, "available": 7}),
        ("hold", {"stock": 10, "reserved": 6, "available": 4}),
        ("hold", {"stock": 10, "reserved": 7, "available": 3}),
        ("release", {"stock": 10, "reserved": 0, "available": 10}),
    ]
    [low] = of_type(events, "product.low_stock")
    assert low["payload"] == {
        "productId": "lamp",
        "sku": "SKU-LAMP",
        "name": "Thing lamp",
        "available": 4,
        "threshold": 5,
    }
    assert events.index(low) == events.index(of_type(events, "product.stock_changed")[1]) + 1
    assert low["id"] == product_events(app)[events.index(low)]["id"]  # the same id however often it is read


def test_dropped_events_are_forgotten_once_and_later_ones_kept(app, client, admin_headers, shopper):
    create(client, admin_headers, "lamp", stock=10)
    [pending] = [pending for pending in product_events_by_product(app) if pending.product_id == "lamp"]
    created = pending.events[0]["id"]
    add(client, shopper, "lamp", 1)

    with app.app_context():
        products.drop_events(product_id="lamp", event_ids=[created])
        products.drop_events(product_id="lamp", event_ids=[created])  # a second relay: changes nothing
    [left] = product_events_by_product(app)

    assert [event["type"] for event in left.events] == ["product.stock_changed"]
    with app.app_context():
        products.drop_events(product_id="lamp", event_ids=[left.events[0]["id"]])
    assert product_events_by_product(app) == ()


def product_events_by_product(app):
    with app.app_context():
        return products.pending_events(limit=1000)
