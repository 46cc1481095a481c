"""The consumers on RabbitMQ: their queues, the consume loop, the dead-letter queues.

Topology (declared by `flask events consume`, idempotently):
- the relay publishes each event to the durable topic exchange `storefront.events`, routing
  key = its type, message_id = its id, persistent, the JSON event as the body;
- each consumer has a durable quorum queue `storefront.<name>`, bound to that exchange for
  each of its event types, with `x-delivery-limit` (EVENTS_MAX_ATTEMPTS + 2) and the
  dead-letter exchange `storefront.dead-letter` (direct; routing key = the consumer's name),
  which routes to the quorum queue `storefront.<name>.dlq`.

A delivery whose handler fails is nacked back to its queue (after a backoff) until its
attempts (the quorum queue's `x-delivery-count` + 1) reach EVENTS_MAX_ATTEMPTS; then it is
published to the dead-letter queue with the error in its headers (`x-error`, `x-failed-at`,
`x-attempts`, `x-original-routing-key`, `x-consumer`), with publisher confirms, and only
then acked. An event this code cannot read (not JSON, unknown type or version) goes there at
once. The queue's own delivery limit is the safety net for a consumer that dies in the middle
of a message again and again: the broker dead-letters it (with `x-death`, no `x-error`).

Dead letters are browsed with basic.get and never acked (they return to the queue when the
channel closes), except the ones `replay` has republished, with confirms, to the consumer's own
queue through the default exchange: only that consumer gets them again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from flask import Flask

from app.events.consumers import Consumer, UnknownEvent, handle

logger = logging.getLogger(__name__)

EXCHANGE = "storefront.events"
DEAD_LETTER_EXCHANGE = "storefront.dead-letter"
PREFETCH = 4  # unacked deliveries per consumer: a few, so a slow handler holds back little
DELIVERY_LIMIT_MARGIN = 2  # the broker's delivery limit: this many above EVENTS_MAX_ATTEMPTS
MAX_ERROR_LENGTH = 2000
MAX_BROWSE = 10_000  # dead letters read from one queue by list/show/replay
# The connection lost or refused, or the channel closed by the broker: connect again.
BROKER_ERRORS = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionClosed,
    pika.exceptions.AMQPChannelError,
    OSError,
)
FAILURE_HEADERS = ("x-error", "x-failed-at", "x-attempts")


def queue_name(consumer: str) -> str:
    return f"storefront.{consumer}"


def dead_letter_queue_name(consumer: str) -> str:
    return f"storefront.{consumer}.dlq"


def connect(url: str) -> pika.BlockingConnection:
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": f"storefront-consumers {socket.gethostname()}:{os.getpid()}"}
    parameters.blocked_connection_timeout = 60  # a broker blocking publishers (memory alarm) fails the publish
    return pika.BlockingConnection(parameters)


def declare_dead_letters(channel, consumers: Iterable[Consumer]) -> None:
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="direct", durable=True)
    for consumer in consumers:
        dlq = dead_letter_queue_name(consumer.name)
        channel.queue_declare(dlq, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(dlq, DEAD_LETTER_EXCHANGE, routing_key=consumer.name)


def declare(connection: pika.BlockingConnection, consumers: Iterable[Consumer], max_attempts: int):
    """Declare the exchanges and every consumer's queues and bindings; returns an open channel.

    A queue declared earlier with another delivery limit (EVENTS_MAX_ATTEMPTS changed) keeps
    its own: queue arguments cannot change, so it is used as it is, with a warning (delete the
    queue, or set a policy, to change it)."""
    consumers = list(consumers)
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    declare_dead_letters(channel, consumers)
    for consumer in consumers:
        queue = queue_name(consumer.name)
        arguments = {
            "x-queue-type": "quorum",
            "x-delivery-limit": max_attempts + DELIVERY_LIMIT_MARGIN,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": consumer.name,
        }
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as refused:
            if refused.reply_code != 406:  # PRECONDITION_FAILED: declared with other arguments
                raise
            logger.warning("queue %s exists with other arguments (%s); using it as it is", queue, refused.reply_text)
            channel = connection.channel()
            channel.queue_declare(queue, passive=True)
        for event_type in sorted(consumer.event_types):
            channel.queue_bind(queue, EXCHANGE, routing_key=event_type)
    return channel


@dataclass
class ConsumerRunner:
    """Delivers each consumer's queue to it until `stopping` is set; reconnects while RabbitMQ
    is away. `backoff` is the first retry's delay in seconds, doubled at each attempt (at most
    `max_backoff`): a dependency's outage shorter than the retries' sum loses nothing to the
    dead-letter queue."""

    app: Flask
    url: str
    consumers: list[Consumer]
    max_attempts: int
    prefetch: int = PREFETCH
    backoff: float = 0.5
    max_backoff: float = 30.0
    ready: threading.Event = field(default_factory=threading.Event)  # set once consuming
    on_beat: Callable[[], None] | None = None  # called every `beat_seconds` while consuming (a heartbeat)
    beat_seconds: float = 10.0

    def run(self, stopping: threading.Event) -> None:
        delay = 1.0
        with self.app.app_context():
            while not stopping.is_set():
                try:
                    self._consume(stopping)
                    delay = 1.0
                except BROKER_ERRORS as error:
                    self.ready.clear()
                    logger.warning("RabbitMQ connection lost or refused (%r); connecting again in %.0f s", error, delay)
                    stopping.wait(delay)
                    delay = min(delay * 2, 30.0)

    def _consume(self, stopping: threading.Event) -> None:
        connection = connect(self.url)
        try:
            channel = declare(connection, self.consumers, self.max_attempts)
            channel.confirm_delivery()  # dead letters are acked only once the broker has them
            channel.basic_qos(prefetch_count=self.prefetch)
            for consumer in self.consumers:
                channel.basic_consume(
                    queue_name(consumer.name),
                    on_message_callback=self._on_message(connection, consumer, stopping),
                )
            logger.info("consuming %s", ", ".join(queue_name(consumer.name) for consumer in self.consumers))
            self.ready.set()
            next_beat = 0.0
            while not stopping.is_set():
                if self.on_beat is not None and time.monotonic() >= next_beat:
                    self.on_beat()
                    next_beat = time.monotonic() + self.beat_seconds
                connection.process_data_events(time_limit=0.5)
        finally:
            self.ready.clear()
            if connection.is_open:
                with contextlib.suppress(*BROKER_ERRORS):
                    connection.close()  # unacked deliveries go back to their queues

    def _on_message(self, connection, consumer: Consumer, stopping: threading.Event) -> Callable:
        def on_message(channel, method, properties, body: bytes) -> None:
            attempts = int((properties.headers or {}).get("x-delivery-count") or 0) + 1
            try:
                event = _decode(body)
                processed = handle(consumer, event)
            except UnknownEvent as error:
                _dead_letter(channel, consumer, method, properties, body, error, attempts)
            except Exception as error:
                if attempts >= self.max_attempts:
                    logger.exception("%s: attempt %d of %d failed; dead-lettered", consumer.name, attempts, attempts)
                    _dead_letter(channel, consumer, method, properties, body, error, attempts)
                    return
                logger.warning(
                    "%s: attempt %d of %d on %s failed (%r); retrying",
                    *(consumer.name, attempts, self.max_attempts, properties.message_id, error),
                )
                self._pause(connection, min(self.backoff * 2 ** (attempts - 1), self.max_backoff), stopping)
                channel.basic_nack(method.delivery_tag, requeue=True)
            else:
                channel.basic_ack(method.delivery_tag)
                logger.debug(
                    "%s: %s %s", consumer.name, "processed" if processed else "had seen", properties.message_id
                )

        return on_message

    @staticmethod
    def _pause(connection, seconds: float, stopping: threading.Event) -> None:
        """Sleep while serving the connection (heartbeats); a stop cuts it short."""
        deadline = time.monotonic() + seconds
        while not stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            connection.sleep(min(left, 0.25))


def _decode(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise UnknownEvent(f"the body is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise UnknownEvent("the body is not a JSON object")
    return event


def _dead_letter(channel, consumer: Consumer, method, properties, body: bytes, error: BaseException, attempts: int):
    """Publish the delivery to the consumer's dead-letter queue with the error, then ack it; if
    the broker does not confirm, requeue it instead (it is never lost)."""
    headers = {key: value for key, value in (properties.headers or {}).items() if key != "x-delivery-count"}
    headers.update(
        {
            "x-error": f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH],
            "x-failed-at": datetime.now(UTC).isoformat(),
            "x-attempts": attempts,
            "x-original-routing-key": method.routing_key,
            "x-original-exchange": method.exchange,
            "x-consumer": consumer.name,
        }
    )
    try:
        channel.basic_publish(
            DEAD_LETTER_EXCHANGE,
            consumer.name,
            body,
            properties=_properties(properties, headers),
            mandatory=True,
        )
    except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
        logger.exception("%s: could not dead-letter %s; requeued", consumer.name, properties.message_id)
        channel.basic_nack(method.delivery_tag, requeue=True)
        return
    channel.basic_ack(method.delivery_tag)
    logger.error("%s: %s dead-lettered after %d attempts: %s", consumer.name, properties.message_id, attempts, error)


def _properties(original, headers: dict[str, Any]) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=original.content_type or "application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=original.message_id,
        type=original.type,
        timestamp=original.timestamp,
        app_id=original.app_id,
        headers=headers,
    )


# --- dead letters ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    consumer: str
    message_id: str | None
    routing_key: str | None
    error: str
    failed_at: str | None
    attempts: int | None
    headers: dict[str, Any]
    body: bytes

    def event(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", "replace")

    def as_json(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "messageId": self.message_id,
            "routingKey": self.routing_key,
            "error": self.error,
            "failedAt": self.failed_at,
            "attempts": self.attempts,
            "headers": {key: _plain(value) for key, value in self.headers.items()},
            "event": self.event(),
        }


def _plain(value: Any) -> Any:
    """Header values as JSON can show them (x-death holds tables, timestamps, bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _dead_letter_of(consumer: str, method, properties, body: bytes) -> DeadLetter:
    headers = {key: _plain(value) for key, value in (properties.headers or {}).items()}
    deaths = headers.get("x-death") or []
    routing_key = headers.get("x-original-routing-key")
    error = headers.get("x-error")
    if error is None and deaths:  # dead-lettered by the broker: the delivery limit (safety net)
        error = f"dead-lettered by RabbitMQ: {deaths[0].get('reason')} (the consumer never finished it)"
        routing_key = routing_key or (deaths[0].get("routing-keys") or [None])[0]
    return DeadLetter(
        consumer=consumer,
        message_id=properties.message_id,
        routing_key=routing_key,
        error=error or "unknown",
        failed_at=headers.get("x-failed-at"),
        attempts=headers.get("x-attempts"),
        headers=headers,
        body=body,
    )


class DeadLetters:
    """list, show and replay over the dead-letter queues of `consumers`."""

    def __init__(self, url: str, consumers: Iterable[Consumer]):
        self.url = url
        self.consumers = list(consumers)

    def list(self) -> list[DeadLetter]:
        found: list[DeadLetter] = []

        def keep(letter: DeadLetter) -> bool:
            found.append(letter)
            return False  # left in the queue

        self._browse(keep)
        return found

    def find(self, message_id: str) -> list[DeadLetter]:
        return [letter for letter in self.list() if letter.message_id == message_id]

    def replay(self, message_id: str | None = None) -> list[DeadLetter]:
        """Republish the dead letters (all, or those with this message id) to their consumer's
        own queue, each removed from the dead-letter queue once the broker confirmed it."""
        replayed: list[DeadLetter] = []

        def republish(letter: DeadLetter, channel) -> bool:
            if message_id is not None and letter.message_id != message_id:
                return False
            headers = {key: value for key, value in letter.headers.items() if key not in FAILURE_HEADERS}
            headers["x-replayed-at"] = datetime.now(UTC).isoformat()
            headers["x-last-error"] = letter.error[:MAX_ERROR_LENGTH]
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=letter.message_id,
                type=letter.routing_key,
                headers=headers,
            )
            channel.basic_publish("", queue_name(letter.consumer), letter.body, properties=properties, mandatory=True)
            replayed.append(letter)
            return True

        self._browse(republish, publishing=True)
        return replayed

    def _browse(self, visit: Callable, *, publishing: bool = False) -> None:
        """Get every dead letter without acking it; `visit(letter[, channel])` True acks it
        (removes it). The others return to their queue when the channel closes."""
        connection = connect(self.url)
        try:
            channel = connection.channel()
            declare_dead_letters(channel, self.consumers)
            if publishing:
                channel.confirm_delivery()
            for consumer in self.consumers:
                for _ in range(MAX_BROWSE):
                    method, properties, body = channel.basic_get(dead_letter_queue_name(consumer.name))
                    if method is None:
                        break
                    letter = _dead_letter_of(consumer.name, method, properties, body)
                    if visit(letter, channel) if publishing else visit(letter):
                        channel.basic_ack(method.delivery_tag)
        finally:
            if connection.is_open:
                connection.close()
