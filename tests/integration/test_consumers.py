"""Consumers, exactly once in effect (app/events/consumers.py), against the real PostgreSQL:
the same event handled twice, or by two deliveries racing, has one effect; deliver_locally hands
an event to every consumer of its type; the audit trail's admin API."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.accounts.models import User
from app.cart.models import Order
from app.events import consumers
from app.events.audit import CONSUMER as AUDIT
from app.events.consumers import Consumer, ConsumersFailed, deliver_locally, handle, registered
from app.events.envelope import new_event
from app.events.models import AuditEvent, OutboxEvent, ProcessedEvent
from app.extensions import db
from tests.integration.test_auth_api import emails_to
from tests.integration.test_cart_api import add, checkout, create
from tests.problems import expect_problem

ORDER_CONSUMERS = {"order-status", "order-confirmation-email", AUDIT}
SHOPPER = "shopper@example.test"


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='shopper')}"}


def place_order(client, admin_headers, shopper) -> tuple[dict, dict]:
    """An order placed through the API, and its order.placed event as the outbox holds it."""
    create(client, admin_headers, "mug", price="4.50", stock=10)
    assert add(client, shopper, "mug", 2).status_code == 201
    response = checkout(client, shopper)
    assert response.status_code == 201, response.get_data(as_text=True)
    order = response.get_json()
    assert order["status"] == "placed"  # the checkout itself confirms nothing
    body = db.session.scalar(select(OutboxEvent.body).where(OutboxEvent.type == "order.placed"))
    db.session.rollback()
    return order, json.loads(body)


def effects(app, mail_dir, order_id: str) -> dict:
    with app.app_context():
        status = db.session.scalar(select(Order.status).where(Order.id == uuid.UUID(order_id)))
        audit_rows = db.session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.aggregate_id == order_id)
        )
        processed = set(db.session.scalars(select(ProcessedEvent.consumer)))
    confirmations = [message for message in emails_to(mail_dir, SHOPPER) if order_id in message["Subject"]]
    return {"status": status, "audit": audit_rows, "emails": len(confirmations), "processed": processed}


def test_checkout_sends_no_mail_and_leaves_the_order_placed(app, client, admin_headers, shopper, mail_dir):
    with app.app_context():
        order, event = place_order(client, admin_headers, shopper)
    assert effects(app, mail_dir, order["orderId"]) == {"status": "placed", "audit": 0, "emails": 0, "processed": set()}
    assert (event["type"], event["payload"]["orderId"]) == ("order.placed", order["orderId"])


def test_the_same_event_handled_twice_has_one_effect(app, client, admin_headers, shopper, mail_dir):
    with app.app_context():
        order, event = place_order(client, admin_headers, shopper)
        interested = [consumer for consumer in registered().values() if consumer.handles("order.placed")]
        assert {consumer.name for consumer in interested} == ORDER_CONSUMERS
        assert [handle(consumer, event) for consumer in interested] == [True] * 3
        assert [handle(consumer, event) for consumer in interested] == [False] * 3
    after = effects(app, mail_dir, order["orderId"])
    assert after == {"status": "confirmed", "audit": 1, "emails": 1, "processed": ORDER_CONSUMERS}
    message = next(message for message in emails_to(mail_dir, SHOPPER) if order["orderId"] in message["Subject"])
    assert order["orderId"] in message.get_content()
    assert "9.00 USD" in message.get_content()
    listed = client.get(f"/v1/orders/{order['orderId']}", headers=shopper).get_json()
    assert listed["status"] == "confirmed"


def test_two_deliveries_racing_have_one_effect(app, client, admin_headers, shopper, mail_dir, monkeypatch):
    """Both deliveries find no processed_events row; the second waits on the first's primary
    key, then is dropped without running the handlers (the slow email widens the window)."""
    with app.app_context():
        order, event = place_order(client, admin_headers, shopper)
    registry = registered(app)
    email = registry["order-confirmation-email"]

    def slow_email(event: dict) -> None:
        time.sleep(0.5)
        email.handler(event)

    monkeypatch.setitem(registry, email.name, replace(email, handler=slow_email))
    dropped: list[str] = []
    real_info = consumers.logger.info
    monkeypatch.setattr(
        consumers.logger,
        "info",
        lambda message, *args: (
            (dropped.append(args[1]) if "concurrent delivery" in message else None) or real_info(message, *args)
        ),
    )
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            with app.app_context():
                start.wait(timeout=10)
                deliver_locally(event)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert "order-confirmation-email" in dropped  # the race was run, and lost on the primary key
    assert effects(app, mail_dir, order["orderId"]) == {
        "status": "confirmed",
        "audit": 1,
        "emails": 1,
        "processed": ORDER_CONSUMERS,
    }


def test_deliver_locally_hands_the_event_to_every_consumer_of_its_type_once(
    app, client, admin_headers, shopper, mail_dir, monkeypatch
):
    calls: dict[str, int] = {}

    def counting(consumer: Consumer) -> Consumer:
        def counted(event: dict) -> None:
            calls[consumer.name] = calls.get(consumer.name, 0) + 1
            consumer.handler(event)

        return replace(consumer, handler=counted)

    registry = registered(app)
    for name, consumer in list(registry.items()):
        monkeypatch.setitem(registry, name, counting(consumer))
    with app.app_context():
        order, event = place_order(client, admin_headers, shopper)
        deliver_locally(event)
        deliver_locally(event)  # again: the relay retried
    assert calls == dict.fromkeys(ORDER_CONSUMERS, 1)  # the low-stock consumer is not one of them
    assert effects(app, mail_dir, order["orderId"])["emails"] == 1


def test_a_failing_consumer_fails_the_local_delivery_and_only_it_runs_again(
    app, client, admin_headers, shopper, mail_dir, monkeypatch
):
    registry = registered(app)
    broken = {"yes": True}
    calls: list[str] = []

    def flaky(event: dict) -> None:
        calls.append(event["id"])
        if broken["yes"]:
            raise RuntimeError("the mail relay is down")

    monkeypatch.setitem(registry, "flaky", Consumer("flaky", frozenset({"order.placed"}), flaky))
    with app.app_context():
        order, event = place_order(client, admin_headers, shopper)
        with pytest.raises(ConsumersFailed, match="flaky"):
            deliver_locally(event)
        assert effects(app, mail_dir, order["orderId"])["processed"] == ORDER_CONSUMERS  # the others did their work
        broken["yes"] = False
        deliver_locally(event)
        deliver_locally(event)
    assert len(calls) == 2
    assert effects(app, mail_dir, order["orderId"]) == {
        "status": "confirmed",
        "audit": 1,
        "emails": 1,
        "processed": {*ORDER_CONSUMERS, "flaky"},
    }


def test_an_event_of_an_unknown_version_is_refused_and_changes_nothing(app, client, admin_headers, shopper, mail_dir):
    with app.app_context():
        order, event = place_order(client, admin_headers, shopper)
        with pytest.raises(ConsumersFailed, match="version 2"):
            deliver_locally({**event, "version": 2})
    assert effects(app, mail_dir, order["orderId"]) == {"status": "placed", "audit": 0, "emails": 0, "processed": set()}


def test_guests_and_unknown_owners_get_no_confirmation(app, mail_dir):
    with app.app_context():
        for owner in (f"guest:{uuid.uuid4()}", str(uuid.uuid4())):
            payload = {"orderId": str(uuid.uuid4()), "ownerId": owner, "totalPrice": "1.00", "currency": "USD"}
            deliver_locally(new_event("order.placed", payload["orderId"], payload))
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == 2
    assert list(mail_dir.glob("*.eml")) == []


def test_low_stock_mails_every_active_admin_once(app, token, mail_dir):
    token("admin", subject="admin-1")
    token("admin", subject="admin-2")
    token("customer", subject="customer-1")
    token("admin", subject="retired")
    with app.app_context():
        retired = db.session.scalar(select(User).where(User.email == "retired@example.test"))
        retired.is_active = False
        db.session.commit()
        payload = {"productId": "mug", "sku": "SKU-MUG", "name": "Mug", "available": 2, "threshold": 5}
        event = new_event("product.low_stock", "mug", payload)
        deliver_locally(event)
        deliver_locally(event)
    counts = {
        f"{name}@example.test": len(emails_to(mail_dir, f"{name}@example.test"))
        for name in ("admin-1", "admin-2", "customer-1", "retired")
    }
    assert counts == {
        "admin-1@example.test": 1,
        "admin-2@example.test": 1,
        "customer-1@example.test": 0,
        "retired@example.test": 0,
    }
    text = emails_to(mail_dir, "admin-1@example.test")[0].get_content()
    assert "Only 2 units of Mug (SKU-MUG)" in text
    assert "threshold of 5" in text


# --- GET /v1/admin/audit ---------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def audit_event(event_type: str, aggregate_id: str, minutes: int) -> dict:
    return {
        **new_event(event_type, aggregate_id, {"n": minutes}, actor="system"),
        "occurredAt": (T0 + timedelta(minutes=minutes)).isoformat(),
    }


@pytest.fixture
def trail(app) -> list[dict]:
    events = [
        audit_event("cart.item_added", "cart-1", 0),
        audit_event("cart.item_added", "cart-1", 1),
        audit_event("cart.checked_out", "cart-1", 2),
        audit_event("order.placed", "order-1", 2),
        audit_event("user.registered", "user-1", 3),
        audit_event("cart.item_added", "cart-2", 4),
    ]
    with app.app_context():
        audit = registered()[AUDIT]
        for event in events:
            assert handle(audit, event)
        assert not handle(audit, events[0])  # appended once
    return events


def audit_page(client, headers, **query):
    response = client.get("/v1/admin/audit", query_string=query, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json(), json.loads(response.headers["X-Pagination"])


def test_the_audit_trail_lists_every_event_newest_first(client, admin_headers, trail):
    items, pagination = audit_page(client, admin_headers)
    assert pagination["total"] == 6
    # by occurredAt, then by the order recorded (order.placed and cart.checked_out share a time)
    assert [item["eventId"] for item in items] == [trail[index]["id"] for index in (5, 4, 3, 2, 1, 0)]
    first = items[-1]
    assert first == {
        "id": first["id"],
        "eventId": trail[0]["id"],
        "type": "cart.item_added",
        "version": 1,
        "occurredAt": T0.isoformat(),
        "recordedAt": first["recordedAt"],
        "aggregateType": "cart",
        "aggregateId": "cart-1",
        "actor": "system",
        "traceparent": None,
        "payload": {"n": 0},
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param({"aggregateType": "cart"}, [5, 2, 1, 0], id="aggregate-type"),
        pytest.param({"aggregateType": "cart", "aggregateId": "cart-1"}, [2, 1, 0], id="aggregate"),
        pytest.param({"aggregateId": "order-1"}, [3], id="aggregate-id"),
        pytest.param({"type": "cart.item_added"}, [5, 1, 0], id="type"),
        pytest.param({"since": (T0 + timedelta(minutes=2)).isoformat()}, [5, 4, 3, 2], id="since-inclusive"),
        pytest.param({"until": (T0 + timedelta(minutes=2)).isoformat()}, [1, 0], id="until-exclusive"),
        pytest.param(
            {"since": "2026-03-01T12:01:00", "until": "2026-03-01T12:03:00", "type": "cart.checked_out"},
            [2],
            id="naive-times-are-utc-and-filters-combine",
        ),
        pytest.param({"since": "2026-03-01T13:01:00+01:00", "until": "2026-03-01T13:02:00+01:00"}, [1], id="offsets"),
        pytest.param({"aggregateId": "nobody"}, [], id="no-match"),
    ],
)
def test_the_audit_trail_filters(client, admin_headers, trail, query, expected):
    items, pagination = audit_page(client, admin_headers, **query)
    found = [item["eventId"] for item in items]
    assert sorted(found) == sorted(trail[index]["id"] for index in expected)
    assert pagination["total"] == len(expected)


def test_the_audit_trail_is_paged(client, admin_headers, trail):
    first, pagination = audit_page(client, admin_headers, page=1, page_size=4)
    second, second_pagination = audit_page(client, admin_headers, page=2, page_size=4)
    assert (len(first), len(second)) == (4, 2)
    assert pagination == {"total": 6, "total_pages": 2, "first_page": 1, "last_page": 2, "page": 1, "next_page": 2}
    assert second_pagination["page"] == 2
    assert {item["eventId"] for item in first + second} == {event["id"] for event in trail}
    times = [item["occurredAt"] for item in first + second]
    assert times == sorted(times, reverse=True)


def test_the_audit_trail_needs_a_token(client, trail):
    expect_problem(client.get("/v1/admin/audit"), 401, "token_missing")
    expect_problem(client.get("/v1/admin/audit", headers={"Authorization": "Bearer not-a-token"}), 401, "token_invalid")


def test_customers_may_not_read_the_audit_trail(client, customer_headers, trail):
    expect_problem(client.get("/v1/admin/audit", headers=customer_headers), 403, "forbidden")


def test_anonymous_bad_filters_are_a_401_not_a_400(client):
    expect_problem(client.get("/v1/admin/audit", query_string={"type": "nope"}), 401, "token_missing")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param({"type": "order.shipped"}, "type", id="unknown-type"),
        pytest.param({"aggregateType": "basket"}, "aggregateType", id="unknown-aggregate-type"),
        pytest.param({"aggregateId": ""}, "aggregateId", id="empty-aggregate-id"),
        pytest.param({"aggregateId": "x" * 129}, "aggregateId", id="long-aggregate-id"),
        pytest.param({"since": "yesterday"}, "since", id="bad-since"),
        pytest.param({"until": "2026-13-01T00:00:00"}, "until", id="bad-until"),
        pytest.param(
            {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since", id="since-after-until"
        ),
        pytest.param({"since": "2026-03-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since", id="empty-range"),
        pytest.param({"page_size": 101}, "page_size", id="page-size-101"),
        pytest.param({"page": 0}, "page", id="page-0"),
    ],
)
def test_bad_filters_are_a_400_problem(client, admin_headers, query, field):
    body = expect_problem(
        client.get("/v1/admin/audit", query_string=query, headers=admin_headers), 400, "validation_error"
    )
    assert field in body["errors"]


def test_the_audit_trail_is_documented(client):
    spec = client.get("/api/openapi.json").get_json()
    operation = spec["paths"]["/v1/admin/audit"]["get"]
    parameters = {parameter["name"] for parameter in operation["parameters"]}
    assert {"aggregateType", "aggregateId", "type", "since", "until", "page", "page_size"} <= parameters
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    assert operation["security"] == [{"bearerAuth": []}]
    entry = spec["components"]["schemas"]["AuditEntry"]["properties"]
    assert {"eventId", "type", "occurredAt", "aggregateType", "aggregateId", "actor", "payload"} <= set(entry)
    order = spec["components"]["schemas"]["Order"]["properties"]["status"]
    assert order["enum"] == ["placed", "confirmed"]


def test_the_audit_trail_has_no_update_or_delete_path():
    """Append-only: no code of the app updates or deletes an audit_events row."""
    code = "\n".join(path.read_text() for path in (Path(__file__).parents[2] / "app").rglob("*.py"))
    assert "AuditEvent" in code
    assert not re.search(r"(update|delete)\(\s*AuditEvent|(UPDATE|DELETE\s+FROM)\s+audit_events", code, re.IGNORECASE)
