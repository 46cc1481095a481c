"""The consumers on the real RabbitMQ (a virtual host of the session's own, tests/conftest.py):
events published to `storefront.events` as the relay publishes them are processed once in
effect however often they arrive; a poison message lands in the consumer's dead-letter queue
after exactly EVENTS_MAX_ATTEMPTS attempts with its error, and `flask events dlq` lists, shows
and replays it to that consumer alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pika
import pytest

from app.events import amqp
from app.events.amqp import ConsumerRunner, DeadLetters, dead_letter_queue_name, queue_name
from app.events.audit import CONSUMER as AUDIT
from app.events.consumers import Consumer, registered
from app.events.envelope import new_event
from app.events.models import ProcessedEvent
from app.extensions import db
from tests.conftest import TEST_SECRET
from tests.integration.test_consumers import ORDER_CONSUMERS, effects, place_order

REPO = Path(__file__).resolve().parents[2]
MAX_ATTEMPTS = 3
TIMEOUT = 30  # seconds any one wait may take


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='shopper')}"}


@pytest.fixture
def broker(app, rabbitmq_url) -> Iterator[str]:
    """The test's vhost URL; every consumer queue is deleted afterwards (and before, in case)."""
    names = [*registered(app), "fragile"]
    delete_queues(rabbitmq_url, names)
    yield rabbitmq_url
    delete_queues(rabbitmq_url, names)


def delete_queues(url: str, names: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(queue_name(name))
            channel.queue_delete(dead_letter_queue_name(name))
    finally:
        connection.close()


def publish(url: str, event: dict) -> None:
    """As the relay publishes: the topic exchange, routing key = type, message_id = id,
    persistent JSON, publisher confirms, mandatory."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.exchange_declare(amqp.EXCHANGE, exchange_type="topic", durable=True)
        channel.confirm_delivery()
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=event["id"],
            type=event["type"],
            app_id="storefront",
        )
        channel.basic_publish(amqp.EXCHANGE, event["type"], json.dumps(event).encode(), properties, mandatory=True)
    finally:
        connection.close()


def ready_messages(url: str, names: list[str]) -> dict[str, int]:
    """Messages waiting in each consumer's queue (passive declares: the queues must exist)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return {name: channel.queue_declare(queue_name(name), passive=True).method.message_count for name in names}
    finally:
        connection.close()


def wait_until(check: Callable[[], object], what: str, timeout: float = TIMEOUT) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.AMQPConnectionError):
            result = None  # a queue not declared yet
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def consuming(app, url: str, consumers: list[Consumer]) -> Iterator[ConsumerRunner]:
    """The consumers running in a thread of this process, as `flask events consume` runs them."""
    runner = ConsumerRunner(app, url, consumers, MAX_ATTEMPTS, backoff=0.01)
    stopping = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stopping,), daemon=True)
    thread.start()
    try:
        assert runner.ready.wait(TIMEOUT), "the consumers did not start"
        yield runner
    finally:
        stopping.set()
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the consumers did not stop"


def test_an_order_placed_published_to_rabbitmq_is_processed_once_by_flask_events_consume(
    app, client, admin_headers, shopper, mail_dir, broker, database_url, mongo_uri, tmp_path
):
    with app.app_context():
        order, event = place_order(client, admin_headers, shopper)
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(REPO)),
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "MONGODB_URI": mongo_uri,
        "JWT_SECRET": TEST_SECRET,
        "MAIL_BACKEND": "file",
        "MAIL_FILE_DIR": str(mail_dir),
        "RABBITMQ_URL": broker,
        "EVENTS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    }
    heartbeat = tmp_path / "consumers.heartbeat"
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "events", "consume", "--heartbeat", str(heartbeat)]
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    names = sorted(registered(app))
    try:
        wait_until(lambda: ready_messages(broker, names) is not None, "the consumer queues")
        publish(broker, event)
        wait_until(
            lambda: effects(app, mail_dir, order["orderId"])["processed"] == ORDER_CONSUMERS, "the order's processing"
        )
        publish(broker, event)  # again, same id: the relay was killed before it marked the event sent
        wait_until(lambda: not any(ready_messages(broker, names).values()), "the duplicate taken")
        healthy = subprocess.run(
            [sys.executable, "scripts/healthcheck.py", "--heartbeat", str(heartbeat)], cwd=REPO, timeout=TIMEOUT
        )
        assert healthy.returncode == 0  # the container's health check: beating while it consumes
        assert time.time() + 30 < float(heartbeat.read_text()) <= time.time() + 60
    finally:
        process.send_signal(signal.SIGTERM)  # stops once the message at hand is acked
        output = process.communicate(timeout=TIMEOUT)[0].decode()
    assert process.returncode == 0, output
    assert "stopped" in output
    assert ready_messages(broker, names) == dict.fromkeys(names, 0)  # the duplicate was acked, not left
    assert effects(app, mail_dir, order["orderId"]) == {
        "status": "confirmed",
        "audit": 1,
        "emails": 1,
        "processed": ORDER_CONSUMERS,
    }


@pytest.fixture
def fragile(app, broker, settings, monkeypatch) -> dict:
    """A consumer of user.registered that fails while `state["broken"]`, registered on the app
    (so that `flask events` knows it), RABBITMQ_URL pointing at the test's vhost."""
    state: dict = {"broken": True, "calls": []}

    def handler(event: dict) -> None:
        state["calls"].append(event["id"])
        if state["broken"]:
            raise RuntimeError(f"cannot process {event['id']}")

    consumer = Consumer("fragile", frozenset({"user.registered"}), handler)
    monkeypatch.setitem(registered(app), consumer.name, consumer)
    monkeypatch.setitem(
        app.extensions, "settings", settings.override(rabbitmq_url=broker, events_max_attempts=MAX_ATTEMPTS)
    )
    state["consumer"] = consumer
    return state


def cli(app, *arguments: str):
    return app.test_cli_runner().invoke(args=["events", *arguments])


def test_a_poison_message_is_dead_lettered_after_exactly_n_attempts_and_replayed_once(app, broker, fragile):
    audit_calls: list[str] = []
    audit = registered(app)[AUDIT]

    def counted(event: dict) -> None:
        audit_calls.append(event["id"])
        audit.handler(event)

    with app.app_context():
        user_id = str(uuid.uuid4())
        event = new_event("user.registered", user_id, {"userId": user_id})
    dead_letters = DeadLetters(broker, [fragile["consumer"]])
    with consuming(app, broker, [fragile["consumer"], replace(audit, handler=counted)]):
        publish(broker, event)
        letters = wait_until(dead_letters.list, "the dead letter")
        assert fragile["calls"] == [event["id"]] * MAX_ATTEMPTS
        (letter,) = letters
        assert (letter.consumer, letter.message_id, letter.routing_key) == ("fragile", event["id"], "user.registered")
        assert letter.attempts == MAX_ATTEMPTS
        assert letter.error == f"RuntimeError: cannot process {event['id']}"
        assert letter.event() == event

        listed = cli(app, "dlq", "list", "--consumer", "fragile")
        assert listed.exit_code == 0, listed.output
        assert event["id"] in listed.output
        assert f"attempts={MAX_ATTEMPTS}" in listed.output
        assert "1 dead letters" in listed.output
        shown = cli(app, "dlq", "show", event["id"])
        assert shown.exit_code == 0, shown.output
        document = json.loads(shown.output)
        assert document["error"] == f"RuntimeError: cannot process {event['id']}"
        assert document["headers"]["x-original-routing-key"] == "user.registered"
        assert document["event"] == event
        assert len(dead_letters.list()) == 1  # looking leaves it there
        assert len(fragile["calls"]) == MAX_ATTEMPTS  # and nobody processed it meanwhile

        fragile["broken"] = False  # the fix
        replayed = cli(app, "dlq", "replay", "--consumer", "fragile", event["id"])
        assert replayed.exit_code == 0, replayed.output
        assert "1 replayed" in replayed.output
        wait_until(lambda: processed(app, "fragile", event["id"]), "the replayed event processed")
        assert dead_letters.list() == []
    assert fragile["calls"] == [event["id"]] * (MAX_ATTEMPTS + 1)  # processed once after the fix
    assert audit_calls == [event["id"]]  # the replay went to the fragile consumer's queue only
    again = cli(app, "dlq", "replay", event["id"])
    assert again.exit_code == 1
    assert f"no dead letter with message id {event['id']}" in again.output


def test_an_event_of_an_unknown_version_is_dead_lettered_at_once(app, broker, fragile):
    fragile["broken"] = False
    with app.app_context():
        user_id = str(uuid.uuid4())
        event = {**new_event("user.registered", user_id, {"userId": user_id}), "version": 99}
    with consuming(app, broker, [fragile["consumer"]]):
        publish(broker, event)
        (letter,) = wait_until(DeadLetters(broker, [fragile["consumer"]]).list, "the dead letter")
    assert letter.attempts == 1
    assert "version 99" in letter.error
    assert fragile["calls"] == []


def test_each_consumer_has_a_quorum_queue_with_a_delivery_limit_and_a_dead_letter_queue(app, broker):
    consumers = list(registered(app).values())
    with consuming(app, broker, consumers):
        vhost = broker.rsplit("/", 1)[1]
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "arguments", "--formatter", "json"],
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
    queues = {
        queue["name"]: (queue["type"], {name: value for name, _, value in queue["arguments"]})
        for queue in json.loads(listing.stdout)
    }
    for consumer in consumers:
        assert queues[queue_name(consumer.name)] == (
            "quorum",
            {
                "x-queue-type": "quorum",
                "x-delivery-limit": MAX_ATTEMPTS + 2,
                "x-dead-letter-exchange": "storefront.dead-letter",
                "x-dead-letter-routing-key": consumer.name,
            },
        )
        assert queues[dead_letter_queue_name(consumer.name)][0] == "quorum"


def processed(app, consumer: str, event_id: str) -> bool:
    with app.app_context():
        return db.session.get(ProcessedEvent, (consumer, event_id)) is not None


def test_the_commands_name_what_is_wrong(app, broker, fragile, settings, monkeypatch):
    unknown = cli(app, "consume", "--only", "nobody")
    assert unknown.exit_code == 2
    assert "no consumer named nobody" in unknown.output
    assert cli(app, "dlq", "list", "--consumer", "nobody").exit_code == 2
    missing = cli(app, "dlq", "show", str(uuid.uuid4()))
    assert missing.exit_code == 1
    assert "no dead letter with message id" in missing.output
    empty = cli(app, "dlq", "list")
    assert (empty.exit_code, empty.output.splitlines()[-1]) == (0, "0 dead letters")
    monkeypatch.setitem(app.extensions, "settings", settings)  # no RABBITMQ_URL
    local = cli(app, "consume")
    assert local.exit_code == 1
    assert "RABBITMQ_URL is not set" in local.output
