"""Stock holds: kept in the product's own document, each change one conditional update.

A product document keeps its live holds keyed by reservation id,
`holds.<id>: {qty, until, since}` (epoch milliseconds), next to the counters `reserved` and
`available` (= stock - reserved). Every change of a hold is one `find_one_and_update` whose
filter states what must be true before it (the hold absent, or holding `held` units; enough
`available` when it grows) and whose update moves the hold and both counters together. A
single-document update is atomic, so no interleaving can oversell or count a hold twice, and
a process that dies leaves either the whole change or none of it.

Retrying a change that was applied matches nothing (the hold no longer has the quantity the
filter names); the product is then read and the change recognised as applied, so every call
is idempotent by reservation id. The caller's `held` (the quantity it believes the hold has)
is only a guess that saves a read: a wrong guess costs one `find_one`, never correctness.

A sale (`commit`) moves the hold to `sold.<id>: {qty, at}`, remembered for SOLD_MEMORY so that
a retried checkout recognises its sale instead of holding the units again; older entries are
dropped by the next sale of that product.

Holds lapse by themselves: one past its expiry (plus models.LAPSE_GRACE) is not counted by
reads (catalog.to_dto), and a reservation short of units first releases the lapsed holds of
its product (one update whose filter names each lapsed hold as read). Their number is
bounded by the stock, since each hold holds at least one unit.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument

from app import metrics
from app.products import events
from app.products.catalog import PROJECTION, backfill_available, to_dto
from app.products.catalog import collection as products
from app.products.dto import StockReservation
from app.products.errors import (
    InsufficientStock,
    ProductNotFound,
    ReservationBusy,
    ReservationConflict,
    ReservationIdInvalid,
    ReservationNotFound,
)
from app.products.models import LAPSE_GRACE, from_epoch_ms, to_epoch_ms, utcnow
from app.products.mongo_dialect import projected_subfield, stamped

ATTEMPTS = 50  # rounds of read-and-retry when other changes keep winning; each is one command or two
SOLD_MEMORY = timedelta(hours=1)
FIELDS = {**PROJECTION, "available": 1}
# A reservation id is a field name under `holds` and `sold`: a dot would make it a path, a
# leading `$` an operator, so the update would move the counters for a hold no read finds.
RESERVATION_ID = re.compile(r"[A-Za-z0-9_:-]{1,64}")


def reserve_stock(
    product_id: str, quantity: int, reservation_id: str, expires_at: datetime, held: int | None = None
) -> StockReservation:
    """Make reservation `reservation_id` hold exactly `quantity` units of `product_id` until
    `expires_at` (0 releases it). A hold released meanwhile (it lapsed and another buyer took
    its units) is held again under the same id if the units are there."""
    _check(reservation_id)
    until = to_epoch_ms(expires_at)
    for _ in range(ATTEMPTS):
        if held is not None:
            changed = _change(product_id, reservation_id, held, quantity, until)
            if changed is not None:
                if quantity:
                    metrics.HOLDS.labels("made").inc()
                return _answer(changed, reservation_id)
        current = _read(product_id, reservation_id)
        if _sale(current, reservation_id):
            raise ReservationConflict(
                f"Reservation {reservation_id!r} is already committed.",
                reservation_id=reservation_id,
                reservation_status="committed",
            )
        actual = _held(current, reservation_id)
        if actual == quantity and (quantity == 0 or _hold(current, reservation_id)["until"] == until):
            return _answer(current, reservation_id)  # applied already (a retry), or nothing to do
        if actual != held:
            held = actual  # the guess was wrong, or another change came first: start from what is there
            continue
        if quantity > held and not _can_grow(current, quantity - held):
            if not _lapsed_released(current, keep=reservation_id):
                short = _short(current, quantity)
                if isinstance(short, InsufficientStock):
                    metrics.HOLDS.labels("refused").inc()  # the oversell guard at work
                raise short
        elif "available" not in current:
            backfill_available(current)
    raise ReservationBusy(f"Product {product_id!r} is changing too fast; try again.")


def release_reservation(product_id: str, reservation_id: str, held: int | None = None) -> StockReservation:
    """Give the hold's units back. Releasing a hold that is not there changes nothing."""
    return reserve_stock(product_id, 0, reservation_id, utcnow(), held)


def commit_reservation(product_id: str, reservation_id: str, held: int | None = None) -> StockReservation:
    """Turn the hold into a sale: stock and reserved go down by its units. Idempotent; a hold
    that is gone (it lapsed and was released) raises ReservationNotFound."""
    _check(reservation_id)
    for _ in range(ATTEMPTS):
        if not held:  # unknown, or believed gone: only a read tells
            current = _read(product_id, reservation_id, with_sales=True)
            if _sale(current, reservation_id):
                return _answer(current, reservation_id)
            held = _held(current, reservation_id)
        if held == 0:
            raise ReservationNotFound(
                f"Reservation {reservation_id!r} holds nothing of product {product_id!r}.",
                reservation_id=reservation_id,
            )
        now = to_epoch_ms(utcnow())
        sold = products().find_one_and_update(
            {"product_id": product_id, f"holds.{reservation_id}.qty": held},
            stamped(
                events.stock_changed(
                    {
                        "$unset": {f"holds.{reservation_id}": ""},
                        "$set": {f"sold.{reservation_id}": {"qty": held, "at": now}},
                        "$inc": {"stock": -held, "reserved": -held, "version": 1},
                    },
                    product_id,
                    "sale",
                    stock=-held,
                    reserved=-held,
                    reservations=(reservation_id,),
                )
            ),
            projection={**FIELDS, "sold": 1},
            return_document=ReturnDocument.AFTER,
        )
        if sold is not None:
            _forget_old_sales(sold, now)
            return _answer(sold, reservation_id)
        held = None  # changed in between: read it again
    raise ReservationBusy(f"Product {product_id!r} is changing too fast; try again.")


def active_holds(created_before: datetime, after: str | None, limit: int) -> tuple[StockReservation, ...]:
    """Holds made before `created_before`, by reservation id, after `after` (a maintenance
    read: it scans the products that hold anything)."""
    made_before = to_epoch_ms(created_before)
    found: list[tuple[str, dict[str, Any]]] = []
    for product in products().find({"reserved": {"$gt": 0}}, FIELDS):
        for reservation_id, hold in (product.get("holds") or {}).items():
            if hold["since"] < made_before and (after is None or reservation_id > after):
                found.append((reservation_id, product))
    found.sort(key=lambda pair: pair[0])
    return tuple(_answer(product, reservation_id) for reservation_id, product in found[:limit])


def _check(reservation_id: str) -> None:
    if not RESERVATION_ID.fullmatch(reservation_id):
        raise ReservationIdInvalid(
            f"Reservation id {reservation_id!r} is not 1-64 letters, digits, '_', ':' or '-'.",
            reservation_id=reservation_id,
        )


def _change(product_id: str, reservation_id: str, held: int, quantity: int, until: int) -> dict[str, Any] | None:
    """The one conditional update: from `held` units to `quantity`; the product after it, or
    None when the product is not as the filter says."""
    key = f"holds.{reservation_id}"
    delta = quantity - held
    conditions: dict[str, Any] = {"product_id": product_id}
    if held:
        conditions[f"{key}.qty"] = held
    else:
        conditions[key] = {"$exists": False}
        conditions[f"sold.{reservation_id}"] = {"$exists": False}  # a sold hold is never held again
    if delta > 0:
        conditions.update({"status": "active", "available": {"$gte": delta}})
    elif delta < 0:
        conditions["available"] = {"$exists": True}
    update: dict[str, Any] = {}
    if quantity == 0:
        update["$unset"] = {key: ""}
    elif held == 0:
        update["$set"] = {key: {"qty": quantity, "until": until, "since": to_epoch_ms(utcnow())}}
    else:
        update["$set"] = {f"{key}.qty": quantity, f"{key}.until": until}
    if delta:
        update["$inc"] = {"reserved": delta, "available": -delta, "version": 1}
        reason = "hold" if delta > 0 else "release"
        update = events.stock_changed(
            update, product_id, reason, reserved=delta, available=-delta, reservations=(reservation_id,)
        )
    if held == quantity == 0:  # nothing held, nothing wanted: only a read tells the product exists
        return None
    return products().find_one_and_update(
        conditions, stamped(update), projection=_fields(reservation_id), return_document=ReturnDocument.AFTER
    )


def _fields(reservation_id: str) -> dict[str, int]:
    """What a hold change needs back: the product as answered, and this reservation's sale."""
    return {**FIELDS, f"sold.{reservation_id}": 1}


def _read(product_id: str, reservation_id: str, *, with_sales: bool = False) -> dict[str, Any]:
    fields = {**FIELDS, "sold": 1} if with_sales else _fields(reservation_id)
    current = products().find_one({"product_id": product_id}, fields)
    if current is None:
        raise ProductNotFound(f"No product with productId {product_id!r}.", product_id=product_id)
    return current


def _hold(product: dict[str, Any], reservation_id: str) -> dict[str, Any]:
    return (product.get("holds") or {}).get(reservation_id) or {}


def _sale(product: dict[str, Any], reservation_id: str) -> dict[str, Any] | None:
    """The reservation's sale, if any (read with `sold` or `sold.<id>` projected)."""
    return projected_subfield(product, "sold", reservation_id)


def _held(product: dict[str, Any], reservation_id: str) -> int:
    return _hold(product, reservation_id).get("qty", 0)


def _can_grow(product: dict[str, Any], delta: int) -> bool:
    return (
        product.get("status") == "active" and product.get("available", product["stock"] - product["reserved"]) >= delta
    )


def _lapsed_released(product: dict[str, Any], keep: str) -> bool:
    """Release the product's lapsed holds (but `keep`'s, which its owner is renewing) in one
    update that applies only if each is still as read; False when there were none. Released
    or not (someone renewed or released one of them first), the caller looks again."""
    lapsed_before = to_epoch_ms(utcnow() - LAPSE_GRACE)
    lapsed = {
        reservation_id: hold
        for reservation_id, hold in (product.get("holds") or {}).items()
        if hold["until"] < lapsed_before and reservation_id != keep
    }
    if not lapsed:
        return False
    units = sum(hold["qty"] for hold in lapsed.values())
    conditions: dict[str, Any] = {"product_id": product["product_id"]}
    for reservation_id, hold in lapsed.items():
        conditions[f"holds.{reservation_id}.qty"] = hold["qty"]
        conditions[f"holds.{reservation_id}.until"] = hold["until"]
    released = products().update_one(
        conditions,
        stamped(
            events.stock_changed(
                {
                    "$unset": {f"holds.{reservation_id}": "" for reservation_id in lapsed},
                    "$inc": {"reserved": -units, "available": units, "version": 1},
                },
                product["product_id"],
                "expiry",
                reserved=-units,
                available=units,
                reservations=tuple(lapsed),
            )
        ),
    )
    if released.modified_count:
        metrics.HOLDS.labels("expired").inc(len(lapsed))
    return True


def _forget_old_sales(product: dict[str, Any], now: int) -> None:
    forget_before = now - int(SOLD_MEMORY.total_seconds() * 1000)
    old = [reservation_id for reservation_id, sale in (product.get("sold") or {}).items() if sale["at"] < forget_before]
    if old:
        products().update_one(
            {"product_id": product["product_id"]}, {"$unset": {f"sold.{reservation_id}": "" for reservation_id in old}}
        )


def _short(product: dict[str, Any], quantity: int) -> ProductNotFound | InsufficientStock:
    product_id = product["product_id"]
    if product.get("status") != "active":
        return ProductNotFound(f"No product with productId {product_id!r}.", product_id=product_id)
    visible = to_dto(product).available
    return InsufficientStock(
        f"Only {visible} of product {product_id!r} available; {quantity} requested.",
        product_id=product_id,
        available=visible,
        requested=quantity,
    )


def _answer(product: dict[str, Any], reservation_id: str) -> StockReservation:
    hold = _hold(product, reservation_id)
    sale = _sale(product, reservation_id)
    if hold:
        quantity, status, until = hold["qty"], "active", hold["until"]
    elif sale:
        quantity, status, until = sale["qty"], "committed", sale["at"]
    else:
        quantity, status, until = 0, "released", to_epoch_ms(utcnow())
    return StockReservation(
        reservation_id=reservation_id,
        product_id=product["product_id"],
        quantity=quantity,
        status=status,
        expires_at=from_epoch_ms(until),
        product=to_dto(product),
    )
