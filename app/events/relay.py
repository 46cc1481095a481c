"""`flask events relay`: the outbox published to RabbitMQ, nothing lost, in per-aggregate order.

Each pass:
1. moves the products module's pending events (recorded by the very update that changed the
   product) into the outbox, one product per transaction, then drops them from the product;
   moved twice (a relay killed in between, two relays), an event is inserted once (its id is unique);
2. claims the oldest unpublished rows in `id` order (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
   so several relays share the work; SQLite's BEGIN IMMEDIATE makes them take turns) and keeps,
   per aggregate, the rows before the first one it could not claim: an aggregate's events go
   out in `id` order, which is the order its changes committed in (outbox.py);
3. publishes each to the durable topic exchange `storefront.events` (routing key: the type)
   with publisher confirms and `mandatory`, and marks it published in the transaction that
   claimed it, once the broker confirmed it. An event the broker returns (no queue bound) or
   nacks stays unpublished with its attempt counted and its error kept; the aggregate's later
   events wait behind it. A relay killed between the confirm and the commit publishes those
   events again: delivery is at least once, and consumers dedupe by event id.

While RabbitMQ is down nothing is marked; the loop retries with exponential backoff and jitter
and connects again. Without RABBITMQ_URL (the embedded default) each event is handed to the
in-process consumers (`consumers.deliver_locally`) instead, outside the claiming transaction
(the consumers commit their own work); run one relay then. An event they keep failing on is
given up after EVENTS_MAX_ATTEMPTS (marked published, its last error kept and logged), so that
it cannot hold its aggregate back forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pika
from pika.exceptions import AMQPError, NackError, UnroutableError
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_when_event_set, wait_exponential_jitter

from app import metrics
from app.config import Settings
from app.events import consumers
from app.events.envelope import EVENT_TYPES
from app.events.models import OutboxEvent, utcnow
from app.extensions import db
from app.products import interface as products
from app.transactions import unit_of_work

logger = logging.getLogger(__name__)

EXCHANGE = "storefront.events"
BATCH = 100  # rows claimed per pass
PRODUCTS_PER_PASS = 100  # products whose pending events one pass moves into the outbox
BLOCKED_CONNECTION_TIMEOUT = 30  # seconds a publish waits while the broker blocks publishers
FAILURE_REASONS = ("unroutable", "nacked", "local_delivery", "broker_unavailable", "pass_failed", "product_events")


class EventRefused(Exception):
    """This event was not taken (the broker returned or nacked it, a local consumer failed);
    `reason` labels storefront_relay_failures_total."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class BrokerUnavailable(Exception):
    """RabbitMQ cannot be reached or dropped the connection: the pass stops and is retried."""


@dataclass(frozen=True)
class Pending:
    """An unpublished outbox row, as the relay needs it."""

    id: int
    aggregate: tuple[str, str]
    type: str
    event_id: str
    body: str
    attempts: int

    @classmethod
    def of(cls, row: OutboxEvent) -> Pending:
        return cls(row.id, (row.aggregate_type, row.aggregate_id), row.type, row.event_id, row.body, row.attempts)


@dataclass
class Outcome:
    delivered: list[Pending] = field(default_factory=list)
    refused: list[tuple[Pending, EventRefused]] = field(default_factory=list)
    stopped_by: BrokerUnavailable | None = None


class Broker:
    """One connection and channel to RabbitMQ, opened on first use and again after a failure."""

    def __init__(self, url: str):
        self._parameters = pika.URLParameters(url)
        if self._parameters.blocked_connection_timeout is None:
            self._parameters.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT
        self._connection: pika.BlockingConnection | None = None
        self._channel = None

    def connect(self) -> None:
        """Open the channel (declaring the exchange, turning on confirms) or keep the open one
        alive (its heartbeats), before anything is claimed."""
        try:
            if self._channel is not None and self._channel.is_open:
                self._connection.process_data_events(time_limit=0)
                return
            self.close()
            self._connection = pika.BlockingConnection(self._parameters)
            self._channel = self._connection.channel()
            self._channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
            self._channel.confirm_delivery()
        except (AMQPError, OSError) as error:
            self.close()
            raise BrokerUnavailable(f"RabbitMQ: {error!r}") from error

    def publish(self, event: Pending) -> None:
        """Return once the broker confirmed the event; EventRefused when it returned or nacked it."""
        if self._channel is None:
            raise BrokerUnavailable("RabbitMQ: not connected")
        try:
            self._channel.basic_publish(EXCHANGE, event.type, event.body.encode(), _properties(event), mandatory=True)
        except UnroutableError:
            raise EventRefused("unroutable", f"no queue is bound to {EXCHANGE} for {event.type}") from None
        except NackError:
            raise EventRefused("nacked", "the broker nacked it") from None
        except (AMQPError, OSError) as error:
            self.close()
            raise BrokerUnavailable(f"RabbitMQ: {error!r}") from error

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(AMQPError, OSError):  # already gone
                connection.close()


def _properties(event: Pending) -> pika.BasicProperties:
    body = json.loads(event.body)
    headers = {"aggregateType": event.aggregate[0], "aggregateId": event.aggregate[1]}
    if body.get("traceparent"):
        headers["traceparent"] = body["traceparent"]
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=event.event_id,
        type=event.type,
        app_id="storefront",
        headers=headers,
    )


def deliver_locally(event: Pending) -> None:
    try:
        consumers.deliver_locally(json.loads(event.body))
    except Exception as error:
        raise EventRefused("local_delivery", f"{type(error).__name__}: {error}") from error


class Relay:
    """One pass at a time: `run_pass()`; `run()` loops until stopped."""

    def __init__(self, settings: Settings, *, batch: int = BATCH):
        self.batch = batch
        self.broker = Broker(settings.rabbitmq_url) if settings.rabbitmq_url else None
        # Published to RabbitMQ, an event is kept until a queue takes it; handed to the local
        # consumers, it is given up after EVENTS_MAX_ATTEMPTS failures.
        self.max_attempts = None if self.broker else settings.events_max_attempts
        self.sink = "rabbitmq" if self.broker else "local"

    def run_pass(self) -> int:
        """Move the product events in, then publish one batch: the number of events taken."""
        try:
            move_product_events(PRODUCTS_PER_PASS)
        except Exception as error:  # the products store down: the outbox's events go out all the same
            metrics.RELAY_FAILURES.labels("product_events").inc()
            logger.warning("product events not moved into the outbox this pass: %r", error)
        try:
            outcome = self._deliver_batch()
            count(outcome)
        finally:  # while RabbitMQ is down too
            metrics.OUTBOX_LAG.labels(self.sink).set(outbox_lag())
        if outcome.stopped_by is not None:
            raise outcome.stopped_by
        return len(outcome.delivered)

    def _deliver_batch(self) -> Outcome:
        if self.broker:
            self.broker.connect()  # before the claim: no rows locked while RabbitMQ is down
            with unit_of_work():
                outcome = deliver_in_order(claim(self.batch), self.broker.publish, self.max_attempts)
                record(outcome, self.max_attempts)
            return outcome
        with unit_of_work():
            claimed = claim(self.batch)
        outcome = deliver_in_order(claimed, deliver_locally, self.max_attempts)
        with unit_of_work():
            record(outcome, self.max_attempts)
        return outcome

    def run(self, stopping: threading.Event, interval: float, after_pass: Callable[[], None] = lambda: None) -> None:
        """Pass after pass (at once while there is a full batch, else every `interval` seconds)
        until `stopping` is set; a failing pass is retried with backoff. `after_pass` is called
        after each pass that succeeded."""
        _export_metrics_from_the_start()
        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(initial=0.5, max=30),
            stop=stop_when_event_set(stopping),
            sleep=stopping.wait,
            before_sleep=_retrying,
            reraise=True,
        )
        try:
            while not stopping.is_set():
                taken = retrying(self.run_pass)
                after_pass()
                if taken < self.batch:
                    stopping.wait(interval)
        except Exception:
            if not stopping.is_set():
                raise  # stopped only when asked to
        finally:
            self.close()

    def close(self) -> None:
        if self.broker:
            self.broker.close()


def _export_metrics_from_the_start() -> None:
    """Every series at 0, so that rates and alerts see the first event or failure."""
    for reason in FAILURE_REASONS:
        metrics.RELAY_FAILURES.labels(reason)
    for event_type in EVENT_TYPES:
        metrics.EVENTS_PUBLISHED.labels(event_type)


def _retrying(state: RetryCallState) -> None:
    error = state.outcome.exception()
    reason = "broker_unavailable" if isinstance(error, BrokerUnavailable) else "pass_failed"
    metrics.RELAY_FAILURES.labels(reason).inc()
    logger.warning("outbox relay pass failed (%s); retrying in %.1f s: %s", reason, state.upcoming_sleep, error)


def move_product_events(limit: int) -> None:
    """Each product's pending events into the outbox in their order (one transaction per
    product), then out of the product. Inserted once however often they are moved."""
    for pending in products.pending_events(limit=limit):
        with unit_of_work():
            for event in pending.events:
                db.session.execute(_insert_once(event))
        products.drop_events(product_id=pending.product_id, event_ids=tuple(event["id"] for event in pending.events))


def _insert_once(event: dict):
    """INSERT ... ON CONFLICT (event_id) DO NOTHING."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    row = OutboxEvent.of(event)
    values = {column: getattr(row, column) for column in ("event_id", "type", "aggregate_type", "aggregate_id", "body")}
    return dialect.insert(OutboxEvent).values(**values).on_conflict_do_nothing(index_elements=["event_id"])


def claim(batch: int) -> list[Pending]:
    """The oldest unpublished rows this relay can lock, less those that would overtake an
    earlier unpublished row of their aggregate held by another relay."""
    rows = db.session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    claimed = [Pending.of(row) for row in rows]
    if not claimed:
        return []
    claimed_ids = {event.id for event in claimed}
    first_gap: dict[tuple[str, str], int] = {}
    for row_id, aggregate_type, aggregate_id in db.session.execute(
        select(OutboxEvent.id, OutboxEvent.aggregate_type, OutboxEvent.aggregate_id)
        .where(
            OutboxEvent.published_at.is_(None),
            OutboxEvent.id <= max(claimed_ids),
            OutboxEvent.aggregate_id.in_({event.aggregate[1] for event in claimed}),
        )
        .order_by(OutboxEvent.id)
    ):
        if row_id not in claimed_ids:
            first_gap.setdefault((aggregate_type, aggregate_id), row_id)
    return [event for event in claimed if event.id < first_gap.get(event.aggregate, event.id + 1)]


def deliver_in_order(events: list[Pending], deliver: Callable[[Pending], None], max_attempts: int | None) -> Outcome:
    """Deliver each event unless an earlier one of its aggregate was refused (and not given up);
    stop at the first BrokerUnavailable."""
    outcome = Outcome()
    waiting: set[tuple[str, str]] = set()
    for event in events:
        if event.aggregate in waiting:
            continue
        try:
            deliver(event)
        except EventRefused as refused:
            outcome.refused.append((event, refused))
            if not gives_up(event, max_attempts):
                waiting.add(event.aggregate)
        except BrokerUnavailable as error:
            outcome.stopped_by = error
            break
        else:
            outcome.delivered.append(event)
    return outcome


def gives_up(event: Pending, max_attempts: int | None) -> bool:
    return max_attempts is not None and event.attempts + 1 >= max_attempts


def record(outcome: Outcome, max_attempts: int | None) -> None:
    """Delivered rows published; refused ones one attempt more with their error (published
    all the same once given up)."""
    now = utcnow()
    if outcome.delivered:
        delivered = [event.id for event in outcome.delivered]
        db.session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(delivered)).values(published_at=now))
    for event, refused in outcome.refused:
        given_up = gives_up(event, max_attempts)
        db.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == event.id)
            .values(attempts=OutboxEvent.attempts + 1, last_error=str(refused), published_at=now if given_up else None)
        )
        if given_up:
            logger.error(
                "event %s (%s) given up after %d attempts: %s", event.event_id, event.type, event.attempts + 1, refused
            )
        else:
            logger.warning("event %s (%s) not delivered: %s", event.event_id, event.type, refused)


def count(outcome: Outcome) -> None:
    for event in outcome.delivered:
        metrics.EVENTS_PUBLISHED.labels(event.type).inc()
    for _, refused in outcome.refused:
        metrics.RELAY_FAILURES.labels(refused.reason).inc()


def outbox_lag() -> float:
    """Seconds since the oldest unpublished row was added; 0 when there is none."""
    with unit_of_work(write=False):
        oldest = db.session.scalar(select(func.min(OutboxEvent.created_at)).where(OutboxEvent.published_at.is_(None)))
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite keeps no offset
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - oldest).total_seconds())
