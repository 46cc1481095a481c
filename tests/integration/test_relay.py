"""The outbox relay (app/events/relay.py) against the real RabbitMQ (a virtual host of the
session's own) and PostgreSQL: nothing lost, nothing published for a rollback, per-aggregate
order, at least once across a crash, several relays at once, the broker down for a while.

Relays run as an operator runs them (`flask --app wsgi events relay` in a process of its own)
where a crash or an outage is the point, in process otherwise."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, select, text

from app.events import consumers
from app.events.envelope import new_event
from app.events.models import AuditEvent, OutboxEvent
from app.events.outbox import record
from app.events.relay import EXCHANGE, Relay, move_product_events
from app.extensions import db
from app.products import interface as products
from app.transactions import unit_of_work
from tests import rabbitmq_server
from tests.e2e.gunicorn_server import app_environment, flask_process, run_flask
from tests.integration.test_cart_api import add, checkout, create
from tests.mongo_server import free_port

WAIT = 30  # seconds any one expectation may take


@dataclass(frozen=True)
class Message:
    routing_key: str
    properties: pika.BasicProperties
    event: dict


class Listener:
    """A queue of the test's own bound to every event type (exclusive: gone with the test)."""

    def __init__(self, url: str):
        self.connection = rabbitmq_server.connect(url)
        self.channel = self.connection.channel()
        self.channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, EXCHANGE, routing_key="#")
        self.messages: list[Message] = []

    def receive(self, count: int, timeout: float = WAIT) -> list[Message]:
        """Every message so far, once there are at least `count` (fails after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                assert time.monotonic() < deadline, f"{len(self.messages)} of {count} messages arrived"
                self.connection.sleep(0.05)
                continue
            self.messages.append(Message(method.routing_key, properties, json.loads(body)))
        return self.messages

    def drain(self, quiet: float = 0.5) -> list[Message]:
        """Every message so far, once none has arrived for `quiet` seconds."""
        while True:
            count = len(self.messages)
            self.connection.sleep(quiet)
            while (got := self.channel.basic_get(self.queue, auto_ack=True))[0] is not None:
                self.messages.append(Message(got[0].routing_key, got[1], json.loads(got[2])))
            if len(self.messages) == count:
                return self.messages

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def listener(rabbitmq_url) -> Iterator[Listener]:
    listener = Listener(rabbitmq_url)
    yield listener
    listener.close()


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='relay-shopper')}"}


@pytest.fixture
def relay_environment(mongo_uri, database_url, rabbitmq_url) -> Callable[..., dict[str, str]]:
    def environment(**changes: str) -> dict[str, str]:
        settings = {"RABBITMQ_URL": rabbitmq_url, "METRICS_PORT": "0", **changes}
        return app_environment(mongo_uri, database_url, **settings)

    return environment


def relay_process(environment: dict[str, str], log: Path, *arguments: str):
    """`flask --app wsgi events relay ARGUMENTS` running until the block ends (SIGTERM)."""
    return flask_process(["events", "relay", *arguments], environment, log)


def outbox(app) -> list[OutboxEvent]:
    with app.app_context(), unit_of_work(write=False):
        rows = list(db.session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))
        db.session.expunge_all()
    return rows


def record_events(app, aggregates: list[str], per_aggregate: int) -> list[str]:
    """`per_aggregate` events of each cart, interleaved, one unit of work each: their ids in commit order."""
    ids = []
    with app.app_context():
        for number in range(per_aggregate):
            for aggregate in aggregates:
                event = new_event(
                    "cart.emptied", aggregate, {"cartId": aggregate, "ownerId": "o", "productIds": [str(number)]}
                )
                with unit_of_work():
                    record(event)
                ids.append(event["id"])
    return ids


def assert_in_aggregate_order(app, messages: list[Message]) -> None:
    """Each aggregate's events arrived in its outbox (commit) order."""
    order = {row.event_id: row.id for row in outbox(app)}
    by_aggregate: dict[str, list[int]] = {}
    for message in messages:
        by_aggregate.setdefault(message.event["aggregateId"], []).append(order[message.event["id"]])
    for aggregate, ids in by_aggregate.items():
        assert ids == sorted(ids), aggregate


def eventually(probe: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def unpublished(app) -> int:
    return sum(row.published_at is None for row in outbox(app))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- recorded with the change -----------------------------------------------------------------


def test_a_cart_write_and_its_event_commit_together_and_a_refused_write_leaves_none(
    app, client, admin_headers, shopper, token
):
    create(client, admin_headers, "relay-mug", stock=2)
    assert add(client, shopper, "relay-mug", 2).status_code == 201
    [added] = [row for row in outbox(app) if row.aggregate_type == "cart"]
    assert (added.type, added.published_at, added.attempts) == ("cart.item_added", None, 0)
    assert json.loads(added.body)["payload"]["productId"] == "relay-mug"

    other = {"Authorization": f"Bearer {token('customer', subject='relay-other')}"}
    assert add(client, other, "relay-mug", 1).status_code == 409  # insufficient stock: rolled back
    assert add(client, shopper, "relay-mug", 3).status_code == 409
    assert [row.event_id for row in outbox(app) if row.aggregate_type == "cart"] == [added.event_id]


def test_a_unit_of_work_that_rolls_back_leaves_no_event(app):
    def failing_change() -> None:
        with unit_of_work():
            record(new_event("cart.emptied", "c-1", {"cartId": "c-1", "ownerId": "o", "productIds": []}))
            db.session.flush()  # written, then rolled back with the change
            raise RuntimeError("the change failed")

    with app.app_context(), pytest.raises(RuntimeError):
        failing_change()
    assert outbox(app) == []


# --- published later, whatever happened to the app -------------------------------------------


def test_events_committed_before_any_relay_runs_are_published_by_a_relay_started_later(
    app, client, admin_headers, shopper, listener, relay_environment
):
    """The app is never asked to publish: whatever becomes of it after its commit (killed,
    say), the events are in the outbox, and a relay started afterwards publishes them."""
    create(client, admin_headers, "relay-lamp", stock=5)
    assert add(client, shopper, "relay-lamp", 1).status_code == 201
    assert add(client, shopper, "relay-lamp", 2).status_code == 201
    assert checkout(client, shopper, "relay-checkout").status_code == 201
    recorded = [row for row in outbox(app) if row.aggregate_type in {"cart", "order"}]
    assert [row.type for row in recorded] == [
        "cart.item_added",
        "cart.item_changed",
        "cart.checked_out",
        "order.placed",
    ]
    assert unpublished(app) == len(outbox(app))

    ran = run_flask(["events", "relay", "--once"], relay_environment())
    assert ran.returncode == 0, ran.stdout + ran.stderr

    rows = outbox(app)
    messages = listener.receive(len(rows))
    assert [message.event["id"] for message in messages] == [row.event_id for row in rows]
    for message, row in zip(messages, rows, strict=True):
        assert message.event == json.loads(row.body)
        assert message.routing_key == message.properties.type == row.type
        assert message.properties.message_id == row.event_id
        assert message.properties.content_type == "application/json"
        assert message.properties.delivery_mode == 2
    assert unpublished(app) == 0


def test_a_relay_killed_after_the_confirm_and_before_marking_publishes_again(
    app, database_url, listener, relay_environment, tmp_path
):
    """The test holds a lock the relay's marking UPDATE waits for (a trigger of the test's
    own): the broker has confirmed, nothing is marked; SIGKILL then. The next relay publishes
    the same events again, with the same message ids (consumers dedupe by them)."""
    ids = record_events(app, ["cart-killed"], 2)
    with (
        marking_blocked(database_url) as blocker,
        relay_process(relay_environment(), tmp_path / "relay.log", "--interval", "0.1") as relay,
    ):
        first = listener.receive(2)
        assert [message.properties.message_id for message in first] == ids
        eventually(blocker.relay_waits, "the relay never reached its marking UPDATE")
        assert unpublished(app) == 2
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)
        blocker.end_the_relays_transaction()
    assert unpublished(app) == 2

    ran = run_flask(["events", "relay", "--once"], relay_environment())
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [message.properties.message_id for message in listener.receive(4)] == ids + ids
    assert unpublished(app) == 0


def test_sigterm_stops_the_relay_between_passes(app, listener, relay_environment, tmp_path):
    [event_id] = record_events(app, ["cart-stopped"], 1)
    with relay_process(relay_environment(), tmp_path / "relay.log", "--interval", "0.1") as relay:
        assert [message.properties.message_id for message in listener.receive(1)] == [event_id]
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=15) == 0


def test_relay_once_says_in_one_line_when_rabbitmq_cannot_be_reached(relay_environment):
    unreachable = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    ran = run_flask(["events", "relay", "--once"], relay_environment(RABBITMQ_URL=unreachable))
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines()[-1].startswith("Error: RabbitMQ: AMQPConnectionError")


class MarkingBlocker:
    LOCK = 14_014

    def __init__(self, connection):
        self.connection = connection

    def _waiting(self) -> list[int]:
        query = text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :lock"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return list(self.connection.execute(query, {"lock": self.LOCK}).scalars())

    def relay_waits(self) -> bool:
        return bool(self._waiting())

    def end_the_relays_transaction(self) -> None:
        """Its client is gone; PostgreSQL would notice only once the lock is granted."""
        for pid in self._waiting():
            self.connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


@contextmanager
def marking_blocked(database_url: str) -> Iterator[MarkingBlocker]:
    engine = create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION test_wait_for_the_test() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN PERFORM pg_advisory_xact_lock({MarkingBlocker.LOCK}); RETURN NEW; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER test_marking_blocked BEFORE UPDATE OF published_at ON outbox"
                " FOR EACH ROW EXECUTE FUNCTION test_wait_for_the_test()"
            )
        )
        connection.execute(text("SELECT pg_advisory_lock(:lock)"), {"lock": MarkingBlocker.LOCK})
        blocker = MarkingBlocker(connection)
        try:
            yield blocker
        finally:
            blocker.end_the_relays_transaction()
            connection.execute(text("SELECT pg_advisory_unlock(:lock)"), {"lock": MarkingBlocker.LOCK})
            connection.execute(text("DROP TRIGGER test_marking_blocked ON outbox"))
            connection.execute(text("DROP FUNCTION test_wait_for_the_test()"))
    engine.dispose()


# --- RabbitMQ down, several relays, unroutable events -----------------------------------------


def test_while_rabbitmq_is_unreachable_checkouts_succeed_and_the_outbox_waits(
    app, client, admin_headers, token, listener, relay_environment, rabbitmq_url, tmp_path
):
    proxy = rabbitmq_server.TcpProxy()
    environment = relay_environment(RABBITMQ_URL=proxy.url(rabbitmq_url))
    buyers = [{"Authorization": f"Bearer {token('customer', subject=f'relay-buyer-{n}')}"} for n in range(3)]
    try:
        with relay_process(environment, tmp_path / "relay.log", "--interval", "0.1") as relay:
            create(client, admin_headers, "relay-pen", stock=50)
            assert add(client, buyers[0], "relay-pen", 1).status_code == 201
            listener.receive(1)
            eventually(lambda: unpublished(app) == 0, "the first event was never marked")

            proxy.cut()
            last_published = outbox(app)[-1].id
            for number, buyer in enumerate(buyers):
                assert add(client, buyer, "relay-pen", 2).status_code in {200, 201}
                assert checkout(client, buyer, f"relay-down-{number}").status_code == 201
            time.sleep(2)  # the relay keeps trying meanwhile (and moves the product's events in)
            since = [row for row in outbox(app) if row.id > last_published]
            assert len([row for row in since if row.aggregate_type in {"cart", "order"}]) == 3 * 3
            assert [row for row in since if row.published_at is not None] == []
            assert relay.poll() is None

            proxy.reopen()
            eventually(lambda: unpublished(app) == 0, "the outbox was not published once RabbitMQ was back")
            rows = outbox(app)
            messages = listener.receive(len(rows))
    finally:
        proxy.close()
    assert sorted(message.event["id"] for message in messages) == sorted(row.event_id for row in rows)
    assert_in_aggregate_order(app, messages)


def test_two_relays_at_once_publish_each_event_once_in_aggregate_order(app, listener, relay_environment, tmp_path):
    ids = record_events(app, [f"cart-{n}" for n in range(8)], 25)
    environment = relay_environment()
    with (
        relay_process(environment, tmp_path / "relay-1.log", "--batch", "7", "--interval", "0.05"),
        relay_process(environment, tmp_path / "relay-2.log", "--batch", "5", "--interval", "0.05"),
    ):
        listener.receive(len(ids), timeout=60)
        eventually(lambda: unpublished(app) == 0, "not every event was marked")
        messages = listener.drain()
    assert sorted(message.properties.message_id for message in messages) == sorted(ids)  # each once
    assert_in_aggregate_order(app, messages)


def test_an_unroutable_event_stays_unpublished_with_its_error_and_holds_its_aggregate_back(app, settings, rabbitmq_url):
    with rabbitmq_server.vhost(f"storefront_test_unroutable_{id(app)}") as url:
        a1, b1, a2, b2 = record_events(app, ["cart-a", "cart-b"], 2)
        relay = Relay(settings.override(rabbitmq_url=url))
        unroutable_before = metric("storefront_relay_failures_total", reason="unroutable")
        with app.app_context():
            try:
                assert relay.run_pass() == 0
            finally:
                relay.close()
        rows = {row.event_id: row for row in outbox(app)}
        assert all(row.published_at is None for row in rows.values())
        assert [rows[event].attempts for event in (a1, b1, a2, b2)] == [1, 1, 0, 0]  # not tried: they would overtake
        assert "no queue is bound" in rows[a1].last_error
        assert metric("storefront_relay_failures_total", reason="unroutable") == unroutable_before + 2
        assert metric("storefront_outbox_lag_seconds", sink="rabbitmq") > 0

        bound = Listener(url)
        try:
            with app.app_context():
                try:
                    assert relay.run_pass() == 4
                finally:
                    relay.close()
            received = [message.properties.message_id for message in bound.receive(4)]
        finally:
            bound.close()
    assert received == [row.event_id for row in outbox(app)]
    assert unpublished(app) == 0
    assert metric("storefront_outbox_lag_seconds", sink="rabbitmq") == 0


# --- product events: moved from the product documents into the outbox -------------------------


def test_product_events_are_moved_into_the_outbox_in_order_once(app, client, admin_headers, monkeypatch):
    create(client, admin_headers, "relay-cup", stock=3)
    assert (
        client.post(
            "/v1/products/relay-cup/stock", json={"delta": 4, "reason": "restock"}, headers=admin_headers
        ).status_code
        == 200
    )
    with app.app_context():
        [pending] = products.pending_events(limit=10)
        recorded = [event["id"] for event in pending.events]
        assert len(recorded) >= 2
        monkeypatch.setattr(products, "drop_events", lambda **_: None)  # a relay killed before the drop
        move_product_events(10)
        monkeypatch.undo()
        move_product_events(10)  # moved again: inserted once
        assert products.pending_events(limit=10) == ()
    rows = outbox(app)
    assert [row.event_id for row in rows] == recorded
    assert rows[0].type == "product.created"
    assert {row.aggregate_id for row in rows} == {"relay-cup"}


# --- without RABBITMQ_URL: the in-process consumers ------------------------------------------


def test_without_rabbitmq_each_event_goes_to_the_local_consumers_in_order(
    app, client, admin_headers, shopper, settings, monkeypatch
):
    assert settings.rabbitmq_url is None
    delivered = []
    deliver = consumers.deliver_locally
    monkeypatch.setattr(consumers, "deliver_locally", lambda event: (delivered.append(event["id"]), deliver(event)))
    create(client, admin_headers, "relay-bowl", stock=5)
    assert add(client, shopper, "relay-bowl", 2).status_code == 201
    assert checkout(client, shopper, "relay-local").status_code == 201

    relay = Relay(settings)
    with app.app_context():
        taken = relay.run_pass()
    rows = outbox(app)
    assert taken == len(rows) == len(delivered)
    assert delivered == [row.event_id for row in rows]
    assert unpublished(app) == 0
    with app.app_context():
        audited = list(db.session.scalars(select(AuditEvent.event_id).order_by(AuditEvent.id)))
    assert audited == delivered  # the audit trail's consumer ran on each, in order
    assert metric("storefront_outbox_lag_seconds", sink="local") == 0


def test_an_event_the_local_consumers_keep_failing_on_is_retried_then_given_up(app, settings, monkeypatch, caplog):
    a1, b1, a2, b2 = record_events(app, ["cart-a", "cart-b"], 2)
    delivered = []

    def deliver(event: dict) -> None:
        if event["id"] == a1:
            raise RuntimeError("the mail server says no")
        delivered.append(event["id"])

    monkeypatch.setattr(consumers, "deliver_locally", deliver)
    relay = Relay(settings.override(events_max_attempts=2))
    with app.app_context():
        assert relay.run_pass() == 2
    rows = {row.event_id: row for row in outbox(app)}
    assert delivered == [b1, b2]  # cart-a's second event waits behind its first
    assert (rows[a1].attempts, rows[a1].published_at, rows[a2].published_at) == (1, None, None)
    assert "the mail server says no" in rows[a1].last_error

    with app.app_context():
        assert relay.run_pass() == 1
    rows = {row.event_id: row for row in outbox(app)}
    assert delivered == [b1, b2, a2]
    assert rows[a1].attempts == 2
    assert rows[a1].published_at is not None  # given up, so that cart-a's events go on
    assert "the mail server says no" in rows[a1].last_error
    assert [record.levelname for record in caplog.records if a1 in record.getMessage()][-1] == "ERROR"
