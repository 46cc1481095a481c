"""The products module's events, kept in the product document until the relay moves them.

MongoDB here has no multi-document transactions, so an event rides in the very update that
makes its change: `$push` onto the document's `outbox` and `$inc` of its `outbox_size`. The
change and its event are one single-document write: both or neither. The events are stored as
JSON text (see mongo_dialect.event_to_store), in the order their changes applied.

`pending` reads them out for the relay (app/events/relay.py), which adds them to the SQL
outbox and then has them `dropped`. Each `product.stock_changed` records the change of the
counters (`change`); the figures after it (`after`) are filled in on the way out, from the one
document read that also returned the events: the counters then are the figures after the last
pending event, and each earlier event's are found by taking the later changes back. That is
exact because every write to `stock`, `reserved` or `available` records its change. Where
`available` drops below LOW_STOCK_THRESHOLD a `product.low_stock` follows, its id derived from
the stock change's so that moving the events twice yields it once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from app.events.envelope import new_event
from app.products import catalog
from app.products.mongo_dialect import event_from_store, event_to_store

COUNTERS = ("stock", "reserved", "available")
LOW_STOCK_NAMESPACE = uuid.UUID("6f1c52d6-8a43-4b5e-9a57-3c4ad7a0e2b1")


@dataclass(frozen=True)
class PendingProductEvents:
    """One product's events not yet moved into the outbox, oldest first."""

    product_id: str
    events: tuple[dict[str, Any], ...]


def recorded(update: dict[str, Any], event_type: str, product_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """`update` that also records the event in the document."""
    event = new_event(event_type, product_id, {"productId": product_id, **payload})
    return {**update, "$push": {"outbox": event_to_store(event)}, "$inc": {**update.get("$inc", {}), "outbox_size": 1}}


def stock_changed(
    update: dict[str, Any],
    product_id: str,
    reason: str,
    *,
    stock: int = 0,
    reserved: int = 0,
    available: int = 0,
    reservations: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`update` that also records how it moves the counters, and why (hold, release, sale,
    expiry, adjustment, reconcile), with the reservations concerned."""
    change = {"stock": stock, "reserved": reserved, "available": available}
    payload = {"reason": reason, "reservationIds": list(reservations), "change": change}
    return recorded(update, "product.stock_changed", product_id, payload)


def first_events(document: dict[str, Any]) -> dict[str, Any]:
    """A new product's document with its product.created event."""
    event = new_event(
        "product.created",
        document["product_id"],
        {
            "productId": document["product_id"],
            "sku": document["sku"],
            "name": document["name"],
            "category": document["category"],
            "priceCents": document["price_cents"],
            "currency": document["currency"],
            "stock": document["stock"],
        },
    )
    return {**document, "outbox": [event_to_store(event)], "outbox_size": 1}


def pending(limit: int, low_stock_threshold: int) -> tuple[PendingProductEvents, ...]:
    found = (
        catalog.collection()
        .find(
            {"outbox_size": {"$gt": 0}},
            {"_id": 0, "product_id": 1, "outbox": 1, "sku": 1, "name": 1, **dict.fromkeys(COUNTERS, 1)},
        )
        .limit(limit)
    )
    return tuple(
        PendingProductEvents(document["product_id"], _finished(document, low_stock_threshold)) for document in found
    )


def _finished(document: dict[str, Any], threshold: int) -> tuple[dict[str, Any], ...]:
    events = [event_from_store(text) for text in document.get("outbox") or ()]
    after = {"stock": document["stock"], "reserved": document["reserved"]}
    after["available"] = document.get("available", after["stock"] - after["reserved"])  # a document from before it
    for event in reversed(events):
        if event["type"] == "product.stock_changed":
            event["payload"]["after"] = dict(after)
            after = {name: after[name] - event["payload"]["change"][name] for name in COUNTERS}
    finished: list[dict[str, Any]] = []
    for event in events:
        finished.append(event)
        if event["type"] == "product.stock_changed" and _drops_below(event["payload"], threshold):
            finished.append(_low_stock(event, document, threshold))
    return tuple(finished)


def _drops_below(payload: dict[str, Any], threshold: int) -> bool:
    available = payload["after"]["available"]
    return available < threshold <= available - payload["change"]["available"]


def _low_stock(cause: dict[str, Any], document: dict[str, Any], threshold: int) -> dict[str, Any]:
    event = new_event(
        "product.low_stock",
        document["product_id"],
        {
            "productId": document["product_id"],
            "sku": document.get("sku"),
            "name": document.get("name"),
            "available": cause["payload"]["after"]["available"],
            "threshold": threshold,
        },
        actor=cause["actor"],
    )
    return {
        **event,
        "id": str(uuid.uuid5(LOW_STOCK_NAMESPACE, cause["id"])),
        "occurredAt": cause["occurredAt"],
        "traceparent": cause["traceparent"],
    }


def dropped(product_id: str, event_ids: tuple[str, ...]) -> None:
    """Forget events the outbox has now. Each goes in an update that applies only while it is
    still there, so dropping twice (two relays) never miscounts `outbox_size`."""
    wanted = set(event_ids)
    document = catalog.collection().find_one({"product_id": product_id}, {"_id": 0, "outbox": 1})
    for text in (document or {}).get("outbox") or ():
        if event_from_store(text)["id"] in wanted:
            catalog.collection().update_one(
                {"product_id": product_id, "outbox": text}, {"$pull": {"outbox": text}, "$inc": {"outbox_size": -1}}
            )
