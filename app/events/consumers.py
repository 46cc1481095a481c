"""Consumers: what happens after an event, exactly once in effect however often it arrives.

A consumer has a name, the event types it handles and a handler `(event) -> None`. Modules
register theirs when the app is set up (`register(app, Consumer(...))`, in their setup.py):
the registry is `app.extensions["event_consumers"]`, keyed by name.

`handle(consumer, event)` runs the handler in ONE unit of work (app/transactions.py) with
the INSERT of `processed_events (consumer, event id)`:
- an event that consumer has processed already is found first and changes nothing;
- the row is inserted (flushed) *before* the handler runs, so two deliveries racing
  (a redelivery while the first is still at work, two consumer processes) meet on its primary
  key: the second waits for the first's transaction, then fails on the key and is dropped
  without running the handler; if the first rolled back, the second goes on;
- a handler that raises rolls back its writes and the row together: the event is retried.
So a handler's SQL writes happen once. What leaves the database (an email) is done last in the
handler, inside the unit of work: it is repeated only if the commit right after it fails.

Handlers run inside that unit of work: they read and write `db.session` and never begin one
of their own; they raise to have the event retried.

`deliver_locally(event)` hands an event to every registered consumer of its type, in this
process: what the relay does when RABBITMQ_URL is unset (the embedded default). With RabbitMQ,
`flask events consume` (amqp.py) delivers each consumer's queue to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flask import Flask, current_app
from sqlalchemy.exc import IntegrityError

from app.events.envelope import EVENT_TYPES
from app.events.models import ProcessedEvent
from app.extensions import db
from app.transactions import unit_of_work

logger = logging.getLogger(__name__)
REGISTRY = "event_consumers"
MAX_NAME_LENGTH = 64  # processed_events.consumer
ALL_TYPES = frozenset(EVENT_TYPES)


class UnknownEvent(Exception):
    """An event of a type or schema version this code does not know: no retry reads it better,
    so it goes to the dead-letter queue at once."""


class ConsumersFailed(Exception):
    """deliver_locally: at least one consumer failed (the others did their work)."""

    def __init__(self, event: dict, failures: dict[str, BaseException]):
        names = ", ".join(f"{name} ({type(error).__name__}: {error})" for name, error in failures.items())
        super().__init__(f"event {event.get('id')} ({event.get('type')}) failed in: {names}")
        self.failures = failures


@dataclass(frozen=True)
class Consumer:
    name: str  # also its queue's name: storefront.<name>
    event_types: frozenset[str]
    handler: Callable[[dict], None]

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_NAME_LENGTH or not self.name.replace("-", "").isalnum():
            raise ValueError(f"a consumer's name is 1-{MAX_NAME_LENGTH} letters, digits or '-': {self.name!r}")
        unknown = set(self.event_types) - ALL_TYPES
        if unknown or not self.event_types:
            raise ValueError(f"consumer {self.name!r} names unknown event types: {sorted(unknown)}")

    def handles(self, event_type: str) -> bool:
        return event_type in self.event_types


def register(app: Flask, consumer: Consumer) -> None:
    registry = app.extensions.setdefault(REGISTRY, {})
    if consumer.name in registry:
        raise ValueError(f"a consumer named {consumer.name!r} is registered already")
    registry[consumer.name] = consumer


def registered(app: Flask | None = None) -> dict[str, Consumer]:
    """The consumers registered on the app (the current one by default), by name."""
    return (app or current_app).extensions.get(REGISTRY, {})


def handle(consumer: Consumer, event: dict) -> bool:
    """Run the consumer's handler for the event, once in effect: False when that consumer had
    processed it already (nothing changed), True when it was processed now. Raises what the
    handler raised (nothing of it committed), or UnknownEvent."""
    check_known(event)
    key = (consumer.name, event["id"])
    try:
        with unit_of_work():
            if db.session.get(ProcessedEvent, key) is not None:
                return False
            db.session.add(ProcessedEvent(consumer=consumer.name, event_id=event["id"]))
            try:
                db.session.flush()  # a racing delivery of the same event waits here for ours
            except IntegrityError:
                raise _ProcessedMeanwhile from None
            consumer.handler(event)
    except _ProcessedMeanwhile:
        logger.info("event %s already processed by %s (a concurrent delivery)", event["id"], consumer.name)
        return False
    return True


def deliver_locally(event: dict) -> None:
    """Hand the event to every registered consumer that handles its type, once each (in effect).

    Every consumer gets its turn; if any failed, ConsumersFailed is raised afterwards, and
    delivering the event again (the relay retries) re-runs only the failed ones: the others
    find their processed_events row. Needs an app context, outside any unit of work.
    """
    failures: dict[str, BaseException] = {}
    for consumer in consumers_of(event.get("type", "")):
        try:
            handle(consumer, event)
        except Exception as error:
            logger.exception("consumer %s failed on event %s (%s)", consumer.name, event.get("id"), event.get("type"))
            failures[consumer.name] = error
    if failures:
        raise ConsumersFailed(event, failures) from next(iter(failures.values()))


def consumers_of(event_type: str, consumers: Iterable[Consumer] | None = None) -> list[Consumer]:
    return [
        consumer
        for consumer in (registered().values() if consumers is None else consumers)
        if consumer.handles(event_type)
    ]


def check_known(event: dict) -> None:
    """The envelope's id, and a type and version this code knows."""
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        raise UnknownEvent("not an event: no id")
    known = EVENT_TYPES.get(event.get("type"))  # type: ignore[arg-type]
    if known is None:
        raise UnknownEvent(f"unknown event type {event.get('type')!r}")
    if event.get("version") != known[1]:
        raise UnknownEvent(
            f"{event['type']} version {event.get('version')!r} is not {known[1]}, the one this code reads"
        )


class _ProcessedMeanwhile(Exception):
    pass
