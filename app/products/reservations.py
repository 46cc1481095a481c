"""Stock reservations: atomic, idempotent by reservation id, and safe if a process dies.

MongoDB has no multi-document transaction we can rely on (see shared MONGO.md), so a
reservation changes in three single-document steps:

1. claim: one conditional update of the reservation records the step in flight
   (`pending_step`, and `pending_quantity` and `pending_expires_at_ms`, the quantity it
   holds and its expiry once a reserve step is applied) only if no step is in flight, so
   only one caller drives a reservation at a time. The claim is made without reading the
   reservation first (its filter says what must hold); the document it returns gives the
   step's delta;
2. apply: one conditional update of the product moves its counters and records the step
   id in `pending_steps`; the `$nin` guard makes a step apply at most once, and the filter
   on the stored `available` (= stock - reserved, moved by the same `$inc`) makes it
   never oversell;
3. finalise: the reservation takes its new quantity or status and forgets the step, then
   the step id is pulled from the product.

A step left pending longer than STALE_AFTER (its process died) is recovered by the next
caller, or by `flask inventory reconcile` (reconcile.py): it takes the recovery over, fences
the step on the product (records the id without applying it, unless it was applied) and
finalises the reservation according to what really happened.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.products.catalog import backfill_available, exists
from app.products.catalog import collection as products
from app.products.dto import StockReservation
from app.products.errors import (
    InsufficientStock,
    ProductNotFound,
    ReservationBusy,
    ReservationConflict,
    ReservationNotFound,
)
from app.products.models import Reservation, from_epoch_ms, lapsed_holds_filter, stamped, to_epoch_ms, utcnow

STALE_AFTER = timedelta(seconds=30)
PRODUCT_FIELDS = {"_id": 0, "product_id": 1, "stock": 1, "reserved": 1, "available": 1, "status": 1, "pending_steps": 1}
CAS_ATTEMPTS = 500
WAIT_SECONDS = 0.01
MAX_ROUNDS = 300


def reservations():
    return Reservation._get_collection()


def reserve_stock(product_id: str, quantity: int, reservation_id: str, expires_at: datetime) -> StockReservation:
    """Make reservation `reservation_id` hold exactly `quantity` units of `product_id`.

    Calling it again with the same arguments changes nothing; a new quantity reserves or
    releases only the difference. When the units are not there, other holds on the product
    that are past their expiry are released, and the reservation is tried once more: an
    abandoned cart's units come back on sale without any sweeper.
    """
    try:
        return _reserve(product_id, quantity, reservation_id, expires_at)
    except InsufficientStock:
        if not release_lapsed_holds(product_id):
            raise
    return _reserve(product_id, quantity, reservation_id, expires_at)


def release_lapsed_holds(product_id: str) -> int:
    """Release the product's lapsed holds (see models.LAPSE_GRACE); the units given back.

    Each release is claimed only while the hold is still past its expiry, so a hold its owner
    extends at the same moment is either extended or released, never both.
    """
    lapsed = lapsed_holds_filter()
    released = 0
    for hold in reservations().find({"product_id": product_id, "pending_step": None, **lapsed}, {"reservation_id": 1}):
        claimed = _claim(hold["reservation_id"], "release", lapsed, 0, {})
        if claimed is not None:
            released += claimed["quantity"]
            _drive(claimed)
    return released


def active_reservations(created_before: datetime, after: str | None, limit: int) -> tuple[StockReservation, ...]:
    """Active reservations made before `created_before`, by reservation id, after `after`."""
    made_before = created_before.astimezone(UTC).replace(tzinfo=None)  # stored as naive UTC
    query: dict[str, Any] = {"status": "active", "created_at": {"$lt": made_before}}
    if after is not None:
        query["reservation_id"] = {"$gt": after}
    found = reservations().find(query).sort("reservation_id", 1).limit(limit)
    return tuple(_to_dto(raw) for raw in found)


def _reserve(product_id: str, quantity: int, reservation_id: str, expires_at: datetime) -> StockReservation:
    expires = to_epoch_ms(expires_at)
    changing = {"product_id": product_id, "status": "active", "quantity": {"$ne": quantity}}
    for _ in range(MAX_ROUNDS):
        # The usual case (an open, idle reservation whose quantity changes) costs one command;
        # the rest (a new reservation, no change, a step in flight, a conflict) is read first.
        claimed = _claim(reservation_id, "reserve", changing, quantity, {"pending_expires_at_ms": expires})
        if claimed is not None:
            return _drive(claimed)
        current = reservations().find_one({"reservation_id": reservation_id})
        if current is None:
            claimed = _create_claimed(reservation_id, product_id, quantity, expires)
            if claimed is not None:
                return _drive(claimed)
            continue
        _check_open(current, product_id)
        if current["pending_step"]:
            _wait_or_recover(current)
        elif current["quantity"] == quantity:
            touched = _touch(current, expires)
            if touched is not None:
                return _to_dto(touched)
    raise ReservationBusy(f"Reservation {reservation_id!r} is busy; try again.")


def release_reservation(reservation_id: str) -> StockReservation:
    """Give the reserved units back. Releasing a released reservation changes nothing."""
    return _close(reservation_id, "release", "released")


def commit_reservation(reservation_id: str) -> StockReservation:
    """Turn the reservation into a stock decrement (a sale). Idempotent."""
    return _close(reservation_id, "commit", "committed")


def _close(reservation_id: str, kind: str, final_status: str) -> StockReservation:
    for _ in range(MAX_ROUNDS):
        claimed = _claim(reservation_id, kind, {"status": "active"}, 0, {})
        if claimed is not None:
            return _drive(claimed)
        current = reservations().find_one({"reservation_id": reservation_id})
        if current is None:
            raise ReservationNotFound(f"No reservation {reservation_id!r}.", reservationId=reservation_id)
        if current["status"] == final_status:
            return _to_dto(current)
        _check_open(current, current["product_id"])
        if current["pending_step"]:
            _wait_or_recover(current)
    raise ReservationBusy(f"Reservation {reservation_id!r} is busy; try again.")


def _check_open(current: dict[str, Any], product_id: str) -> None:
    if current["product_id"] != product_id:
        raise ReservationConflict(
            f"Reservation {current['reservation_id']!r} belongs to product {current['product_id']!r}.",
            reservationId=current["reservation_id"],
        )
    if current["status"] != "active":
        raise ReservationConflict(
            f"Reservation {current['reservation_id']!r} is already {current['status']}.",
            reservationId=current["reservation_id"],
            reservationStatus=current["status"],
        )


def _create_claimed(reservation_id: str, product_id: str, quantity: int, expires: int) -> dict | None:
    now = utcnow()
    document = {
        "reservation_id": reservation_id,
        "product_id": product_id,
        "quantity": 0,
        "status": "active",
        "expires_at_ms": expires,
        "version": 1,
        "pending_step": _step_id("reserve", reservation_id),
        "pending_quantity": quantity,
        "pending_since_ms": to_epoch_ms(now),
        "created_at": now,
        "updated_at": now,
    }
    try:
        reservations().insert_one(document)
    except DuplicateKeyError:
        return None
    return document


def _claim(
    reservation_id: str, kind: str, conditions: dict[str, Any], pending_quantity: int, extra: dict[str, Any]
) -> dict | None:
    """Record a `kind` step on the reservation if it is idle and `conditions` hold; the
    claimed document, or None when nothing matched (the caller then reads to learn why)."""
    return reservations().find_one_and_update(
        {"reservation_id": reservation_id, "pending_step": None, **conditions},
        stamped(
            {
                "$set": {
                    "pending_step": _step_id(kind, reservation_id),
                    "pending_quantity": pending_quantity,
                    "pending_since_ms": to_epoch_ms(utcnow()),
                    **extra,
                },
                "$inc": {"version": 1},
            }
        ),
        return_document=ReturnDocument.AFTER,
    )


def _step_id(kind: str, reservation_id: str) -> str:
    """Unique per step (the claim does not read the reservation's version to number it)."""
    return f"{kind}:{uuid.uuid4().hex}:{reservation_id}"


def _delta(claimed: dict[str, Any]) -> int:
    """What the claimed step does to the product's counters."""
    if _kind(claimed["pending_step"]) == "reserve":
        return claimed["pending_quantity"] - claimed["quantity"]
    return -claimed["quantity"]


def _kind(step: str) -> str:
    return step.partition(":")[0]


def _drive(claimed: dict[str, Any]) -> StockReservation:
    step, delta, product_id = claimed["pending_step"], _delta(claimed), claimed["product_id"]
    applied, product = _apply(step, product_id, delta)
    if applied:
        return _to_dto(_finalise(claimed, applied=True))
    if product is not None and step in (product.get("pending_steps") or ()):
        # Fenced by a recovering caller, which finalises the reservation (or drops a new one).
        recovered = reservations().find_one({"reservation_id": claimed["reservation_id"]})
        if recovered is None:
            raise ReservationBusy(f"Reservation {claimed['reservation_id']!r} was interrupted; try again.")
        return _to_dto(recovered)
    _finalise(claimed, applied=False)
    if product is None or product["status"] != "active":
        raise ProductNotFound(f"No product with productId {product_id!r}.", productId=product_id)
    available = product["stock"] - product["reserved"]
    raise InsufficientStock(
        f"Only {available} of product {product_id!r} available; {delta} more requested.",
        productId=product_id,
        available=available,
        requested=claimed["pending_quantity"],
    )


def _apply(step: str, product_id: str, delta: int) -> tuple[bool, dict[str, Any] | None]:
    """Apply a step's effect on the product's counters, at most once: (True, None) when
    this call applied it, else (False, the product as read, None if there is none).

    One conditional update whose filter holds the whole rule (`available >= delta` to
    reserve, enough reserved to release or sell). Not `$expr` over `stock` and `reserved`:
    nx-27017 then ignores the `product_id` index and scans every product (14 ms at 1,000
    products, on a single-threaded server). Only when it matches nothing is the product
    read, to tell why (or to retry when the counters moved in between).
    """
    kind = _kind(step)
    if kind == "commit":
        guard, increments = {"reserved": {"$gte": -delta}, "stock": {"$gte": -delta}}, {"stock": delta}
    elif delta > 0:
        guard, increments = {"status": "active", "available": {"$gte": delta}}, {"available": -delta}
    else:
        guard, increments = {"reserved": {"$gte": -delta}, "available": {"$exists": True}}, {"available": -delta}
    for _ in range(CAS_ATTEMPTS):
        result = products().update_one(
            {"product_id": product_id, "pending_steps": {"$nin": [step]}, **guard},
            stamped({"$inc": {"reserved": delta, **increments, "version": 1}, "$push": {"pending_steps": step}}),
        )
        if result.modified_count == 1:
            return True, None
        product = products().find_one({"product_id": product_id}, PRODUCT_FIELDS)
        if product is None or step in (product.get("pending_steps") or ()) or not _allows(kind, delta, product):
            return False, product
        backfill_available(product)  # a product stored before `available` existed; else a race: again
    raise ReservationBusy(f"Product {product_id!r} is changing too fast; try again.")


def _allows(kind: str, delta: int, product: dict[str, Any]) -> bool:
    stock, reserved = product["stock"], product["reserved"]
    if kind == "commit":
        return reserved >= -delta and stock >= -delta
    if delta > 0:
        return product.get("status") == "active" and stock - reserved >= delta
    return reserved >= -delta


def _finalise(claimed: dict[str, Any], *, applied: bool) -> dict[str, Any]:
    step = claimed["pending_step"]
    changes: dict[str, Any] = {"pending_step": None, "pending_quantity": 0, "pending_expires_at_ms": None}
    kind = _kind(step)
    if applied and kind == "reserve":
        # The new expiry comes with the new quantity: a refused change leaves a lapsed hold lapsed.
        changes["quantity"] = claimed["pending_quantity"]
        changes["expires_at_ms"] = claimed.get("pending_expires_at_ms") or claimed["expires_at_ms"]
    elif applied:
        changes["status"] = "released" if kind == "release" else "committed"
    if not applied and kind == "reserve" and claimed["quantity"] == 0:
        reservations().delete_one({"reservation_id": claimed["reservation_id"], "pending_step": step})
        final = None
    else:
        final = reservations().find_one_and_update(
            {"reservation_id": claimed["reservation_id"], "pending_step": step},
            stamped({"$set": changes, "$inc": {"version": 1}}),
            return_document=ReturnDocument.AFTER,
        )
    products().update_one({"product_id": claimed["product_id"]}, {"$pull": {"pending_steps": step}})
    return final or reservations().find_one({"reservation_id": claimed["reservation_id"]}) or claimed


def _wait_or_recover(current: dict[str, Any]) -> None:
    if not recover_stale_step(current):
        time.sleep(WAIT_SECONDS)


def is_stale(current: dict[str, Any]) -> bool:
    """Whether the pending step of reservation `current` is old enough to be recovered."""
    return utcnow() - from_epoch_ms(current["pending_since_ms"]).replace(tzinfo=None) >= STALE_AFTER


def recover_stale_step(current: dict[str, Any]) -> bool:
    """Finish the step a dead process left on reservation `current`; True if this call did.

    Answers False, changing nothing, while the step is fresh (its process may still be at
    work) or when another caller took the recovery over first. Taking over moves
    `pending_since_ms` on with a compare-and-set, so the step looks fresh to every other
    caller: two recoverers (a request and `flask inventory reconcile`, say) never both
    fence one step, where the second would mistake the first's fence for an applied step.
    """
    if not is_stale(current):
        return False
    step, product_id = current["pending_step"], current["product_id"]
    taken = reservations().update_one(
        {
            "reservation_id": current["reservation_id"],
            "pending_step": step,
            "pending_since_ms": current["pending_since_ms"],
        },
        {"$set": {"pending_since_ms": to_epoch_ms(utcnow())}},
    )
    if taken.modified_count != 1:
        return False
    fence = products().update_one(
        {"product_id": product_id, "pending_steps": {"$nin": [step]}}, {"$push": {"pending_steps": step}}
    )
    applied = fence.matched_count == 0 and exists({"product_id": product_id})
    _finalise(current, applied=applied)
    return True


def _touch(current: dict[str, Any], expires: int) -> dict[str, Any] | None:
    """Move an idle hold's expiry; None if a step was claimed on it in between (a release of
    the lapsed hold, say), so the caller reads it again."""
    if current["expires_at_ms"] == expires:
        return current
    touched = reservations().update_one(
        {"reservation_id": current["reservation_id"], "status": "active", "pending_step": None},
        stamped({"$set": {"expires_at_ms": expires}}),
    )
    return {**current, "expires_at_ms": expires} if touched.modified_count == 1 else None


def _to_dto(raw: dict[str, Any]) -> StockReservation:
    return StockReservation(
        reservation_id=raw["reservation_id"],
        product_id=raw["product_id"],
        quantity=raw["quantity"],
        status=raw["status"],
        expires_at=from_epoch_ms(raw["expires_at_ms"]),
    )
