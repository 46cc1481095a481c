"""The transactional outbox: events written in the same SQL transaction as their change.

`record(event)` adds the event to the unit of work in progress (app/transactions.py): it
commits with the change or not at all. The relay publishes rows in `id` order, which for one
aggregate is the order its changes committed in (writers of one aggregate are serialised by
its row lock, and each takes its id while holding it).
"""

from __future__ import annotations

from app.events.models import OutboxEvent
from app.extensions import db


def record(event: dict) -> None:
    """Add the event to the unit of work in progress: it commits with the change."""
    db.session.add(OutboxEvent.of(event))
