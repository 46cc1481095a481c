"""Events at volume, as a deployment runs them: gunicorn with two workers, a real `flask events
relay` and `flask events consume` on a RabbitMQ virtual host of the test's own. 1,000
checkouts from 20 concurrent buyers give 1,000 order.placed events, 1,000 confirmed orders,
1,000 confirmation emails (none twice) and an audit trail holding every event exactly once."""

from __future__ import annotations

import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from pathlib import Path

import requests
from sqlalchemy import func, select

from app.cart.models import Order
from app.events.models import AuditEvent, OutboxEvent, ProcessedEvent
from app.extensions import db
from tests.e2e.gunicorn_server import app_environment, flask_process, gunicorn
from tests.rabbitmq_server import vhost

BUYERS = 20
CHECKOUTS_EACH = 50
ORDERS = BUYERS * CHECKOUTS_EACH
DEADLINE_SECONDS = 240  # for the consumers to catch up once the checkouts are done
ORDER_ID = re.compile(r"order ([0-9a-f-]{36}) is confirmed")


def buy(url: str, headers: dict[str, str]) -> list[str]:
    """CHECKOUTS_EACH orders of one unit each, one after the other; their ids."""
    session = requests.Session()
    placed = []
    for _ in range(CHECKOUTS_EACH):
        added = session.post(
            f"{url}/v1/cart/products", json={"productId": "mug", "quantity": 1}, headers=headers, timeout=30
        )
        assert added.status_code == 201, added.text
        order = session.post(
            f"{url}/v1/cart/checkout", headers={**headers, "Idempotency-Key": uuid.uuid4().hex}, timeout=30
        )
        assert order.status_code == 201, order.text
        placed.append(order.json()["orderId"])
    return placed


def confirmations(mail_dir: Path) -> list[str]:
    """The order id each confirmation email names, one entry per email."""
    found = []
    for path in mail_dir.glob("*.eml"):
        match = ORDER_ID.search(message_from_bytes(path.read_bytes())["Subject"] or "")
        if match:
            found.append(match.group(1))
    return found


def counts(app) -> dict[str, int]:
    with app.app_context():
        return {
            "confirmed": db.session.scalar(select(func.count()).where(Order.status == "confirmed")),
            "audited": db.session.scalar(select(func.count()).select_from(AuditEvent)),
            "outbox": db.session.scalar(select(func.count()).select_from(OutboxEvent)),
            "unpublished": db.session.scalar(select(func.count()).where(OutboxEvent.published_at.is_(None))),
        }


def test_a_thousand_checkouts_from_twenty_buyers_are_each_confirmed_mailed_and_audited_once(
    mongo_uri, database_url, app, client, admin_headers, token, rabbitmq_url, tmp_path
):
    client.post(
        "/v1/products",
        json={"productId": "mug", "sku": "MUG-1", "name": "Mug", "price": "4.00", "stock": ORDERS + 10},
        headers=admin_headers,
    )
    buyers = [{"Authorization": f"Bearer {token('customer', subject=f'volume-buyer-{n}')}"} for n in range(BUYERS)]
    mail_dir = tmp_path / "mail"
    with vhost(f"storefront_volume_{os.getpid()}") as broker:
        environment = app_environment(
            mongo_uri,
            database_url,
            RABBITMQ_URL=broker,
            MAIL_BACKEND="file",
            MAIL_FILE_DIR=str(mail_dir),
            THROTTLE_LIMIT="1000000",
            METRICS_PORT="0",
            LOW_STOCK_THRESHOLD="0",
        )
        with (
            flask_process(["events", "consume"], environment, tmp_path / "consume.log"),
            flask_process(["events", "relay", "--interval", "0.1"], environment, tmp_path / "relay.log"),
            gunicorn(environment, tmp_path / "gunicorn.log", workers=2) as url,
            ThreadPoolExecutor(max_workers=BUYERS) as pool,
        ):
            placed = [order for orders in pool.map(lambda headers: buy(url, headers), buyers) for order in orders]
            deadline = time.monotonic() + DEADLINE_SECONDS
            while len(confirmations(mail_dir)) < ORDERS or counts(app)["confirmed"] < ORDERS:
                assert time.monotonic() < deadline, (len(confirmations(mail_dir)), counts(app))
                time.sleep(1)
            time.sleep(2)  # anything still on its way (a duplicate) would arrive now
            settled = counts(app)
            while settled["unpublished"] or settled["audited"] < settled["outbox"]:
                assert time.monotonic() < deadline, settled
                time.sleep(1)
                settled = counts(app)

    assert len(set(placed)) == ORDERS
    mailed = confirmations(mail_dir)
    assert sorted(mailed) == sorted(placed)  # every order mailed once: no duplicate, none missing
    assert settled["confirmed"] == ORDERS
    with app.app_context():
        audited_types = dict(db.session.execute(select(AuditEvent.type, func.count()).group_by(AuditEvent.type)).all())
        processed = dict(
            db.session.execute(select(ProcessedEvent.consumer, func.count()).group_by(ProcessedEvent.consumer)).all()
        )
        outbox_ids = set(db.session.scalars(select(OutboxEvent.event_id)))
        audit_ids = list(db.session.scalars(select(AuditEvent.event_id)))
    assert audited_types["order.placed"] == audited_types["cart.checked_out"] == ORDERS
    assert len(audit_ids) == len(set(audit_ids))  # each event audited once
    assert set(audit_ids) == outbox_ids  # and every event audited
    assert processed["order-status"] == processed["order-confirmation-email"] == ORDERS
