"""The envelope every event travels in, and the types there are.

```json
{"id": "uuid", "type": "cart.item_added", "version": 1, "occurredAt": "2026-12-07T18:00:00+00:00",
 "aggregateType": "cart", "aggregateId": "…", "actor": "user id, guest:…, or system",
 "traceparent": "00-…-…-01 or null", "payload": {…}}
```
`version` is the payload's schema version (`schemas/<type>.json`); a consumer that meets a
version it does not know leaves the event to the dead-letter queue rather than misread it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context
from opentelemetry.propagate import inject

# Each event type, with the aggregate it belongs to and its payload's schema version.
EVENT_TYPES: dict[str, tuple[str, int]] = {
    "cart.item_added": ("cart", 1),
    "cart.item_changed": ("cart", 1),
    "cart.item_removed": ("cart", 1),
    "cart.emptied": ("cart", 1),
    "cart.merged": ("cart", 1),
    "cart.checked_out": ("cart", 1),
    "order.placed": ("order", 1),
    "product.created": ("product", 1),
    "product.updated": ("product", 1),
    "product.archived": ("product", 1),
    "product.stock_changed": ("product", 1),
    "product.low_stock": ("product", 1),
    "user.registered": ("user", 1),
}
ACTOR_HEADER = "X-Storefront-Actor"  # who acts, sent with every call to another service
SYSTEM = "system"


def new_event(event_type: str, aggregate_id: str, payload: dict[str, Any], *, actor: str | None = None) -> dict:
    aggregate_type, version = EVENT_TYPES[event_type]
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "version": version,
        "occurredAt": datetime.now(UTC).isoformat(),
        "aggregateType": aggregate_type,
        "aggregateId": aggregate_id,
        "actor": actor or current_actor(),
        "traceparent": current_traceparent(),
        "payload": payload,
    }


def current_actor() -> str:
    """Who the request acts for: the caller's actor on a service call (trusted once the
    service key was checked), else the verified token's subject; `system` outside requests."""
    if not has_request_context():
        return SYSTEM
    if "actor" in g:
        return g.actor
    claims = g.get("_jwt_extended_jwt") or {}  # what flask-jwt-extended verified
    return str(claims.get("sub") or SYSTEM)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, None when tracing is off."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")
