"""The audit trail: every event appended to `audit_events` by the `audit` consumer, read by admins.

Append-only: the consumer INSERTs one row per event (its processed_events row and the unique
`event_id` make a redelivered event change nothing); nothing in the code updates or deletes a
row. `GET /v1/admin/audit` (app/gateway/audit_routes.py) reads it through `list_entries`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.errors import DomainError, StoreGuard
from app.events.consumers import ALL_TYPES, Consumer, register
from app.events.models import AuditEvent
from app.extensions import db
from app.transactions import unit_of_work

CONSUMER = "audit"
AGGREGATE_TYPES = ("cart", "order", "product", "user")


class AuditUnavailable(DomainError):
    status, code = 503, "dependency_unavailable"


translate_database_errors = StoreGuard(
    (OperationalError, PoolTimeout),
    lambda: AuditUnavailable("The audit trail's database is unavailable; try again shortly."),
    store="postgresql",
    cleanup=db.session.rollback,
)


def append(event: dict) -> None:
    """The audit consumer's handler: one row for the event, in the consumer's unit of work."""
    db.session.add(
        AuditEvent(
            event_id=event["id"],
            type=event["type"],
            aggregate_type=event["aggregateType"],
            aggregate_id=str(event["aggregateId"]),
            actor=str(event.get("actor") or "system")[:128],
            occurred_at=datetime.fromisoformat(event["occurredAt"]),
            body=json.dumps(event, separators=(",", ":")),
        )
    )


def register_consumer(app: Flask) -> None:
    register(app, Consumer(CONSUMER, ALL_TYPES, append))


@dataclass(frozen=True)
class AuditFilters:
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    type: str | None = None
    since: datetime | None = None  # occurredAt >= since
    until: datetime | None = None  # occurredAt < until


@dataclass(frozen=True)
class AuditEntry:
    id: int  # the trail's own sequence: the order events were recorded in
    event_id: str
    type: str
    version: int
    occurred_at: datetime
    recorded_at: datetime
    aggregate_type: str
    aggregate_id: str
    actor: str
    traceparent: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class AuditPage:
    items: tuple[AuditEntry, ...]
    total: int


@translate_database_errors
def list_entries(filters: AuditFilters, page: int = 1, page_size: int = 20) -> AuditPage:
    """The entries matching every filter given, newest occurrence first."""
    query = select(AuditEvent)
    if filters.aggregate_type is not None:
        query = query.where(AuditEvent.aggregate_type == filters.aggregate_type)
    if filters.aggregate_id is not None:
        query = query.where(AuditEvent.aggregate_id == filters.aggregate_id)
    if filters.type is not None:
        query = query.where(AuditEvent.type == filters.type)
    if filters.since is not None:
        query = query.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.occurred_at < filters.until)
    with unit_of_work(write=False):
        total = db.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = db.session.scalars(
            query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return AuditPage(items=tuple(_entry(row) for row in rows), total=total or 0)


def _entry(row: AuditEvent) -> AuditEntry:
    event = json.loads(row.body)
    return AuditEntry(
        id=row.id,
        event_id=row.event_id,
        type=row.type,
        version=event.get("version", 1),
        occurred_at=_aware(row.occurred_at),
        recorded_at=_aware(row.recorded_at),
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        actor=row.actor,
        traceparent=event.get("traceparent"),
        payload=event.get("payload") or {},
    )


def _aware(moment: datetime) -> datetime:
    """SQLite (the embedded default) returns naive datetimes; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
