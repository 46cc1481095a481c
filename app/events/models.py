"""The events' SQL tables: the outbox, what each consumer has processed, the audit trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db

# A 64-bit sequence on PostgreSQL; SQLite's rowid (an INTEGER PRIMARY KEY) on the embedded default.
SEQUENCE = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class OutboxEvent(db.Model):
    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)  # the event as published (JSON)
    created_at: Mapped[datetime] = mapped_column(db.DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(db.DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    @classmethod
    def of(cls, event: dict) -> OutboxEvent:
        return cls(
            event_id=event["id"],
            type=event["type"],
            aggregate_type=event["aggregateType"],
            aggregate_id=event["aggregateId"],
            body=json.dumps(event, separators=(",", ":")),
        )


class ProcessedEvent(db.Model):
    """An event a consumer has handled, written in the transaction of its effect: a
    redelivered event finds its row and changes nothing."""

    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(db.DateTime(timezone=True), default=utcnow)


class AuditEvent(db.Model):
    """The audit trail: every event, appended once. Nothing in the code updates or deletes it."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_aggregate", "aggregate_type", "aggregate_id", "id"),
        Index("ix_audit_events_type", "type", "id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[datetime] = mapped_column(db.DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(db.DateTime(timezone=True), default=utcnow)
    body: Mapped[str] = mapped_column(Text)
