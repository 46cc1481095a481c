"""Make every product's `reserved` counter match its reservation records (`flask inventory reconcile`).

The reservation steps (reservations.py) keep counters and records in step, but only one
document changes at a time, so a bug, a hand edit or a lost write can leave drift. This
job repairs it in two passes:

1. Stale pending steps (their process died) are recovered through
   `reservations.recover_stale_step`, the same code path a request uses.
2. Each product's `reserved` is recomputed as the sum of the quantities of its "active"
   reservations, and a drifted counter is set (with `available`, which must always be
   `stock - reserved`; a drift of `available` alone is fixed too, and reported with
   `reserved` unchanged) with a compare-and-set on the product's
   `version`: the product is read first, then its reservations, and the write applies only
   if the version is still the one read (else that product is read again, a few times).

Why the compare-and-set makes it safe while the app serves traffic: every change to the
counters (`reservations._apply`, `catalog.adjust_stock`) bumps `version`. A write that
still finds the version it read therefore knows no step was applied between reading the
product and writing it, so the sum taken in between counted every applied step exactly
once: a finalised step shows in its reservation's quantity or status, a step claimed but
not applied does not count yet, and when it is applied later it adds its delta to the
corrected figure. Any other outcome fails the compare-and-set and is retried, so a
reservation made during the run is never lost.

One state is ambiguous: a step already applied to the product (its id is in the product's
`pending_steps`) whose reservation is not finalised yet. Counting it is right if it was
applied and wrong if a recoverer only fenced it (the fence records the same id), so such a
product is read again after a short pause (finalising takes milliseconds) and reported as
busy if it never settles. For the same reason the job does not add the delta of every step
in flight to be "conservative": set as an absolute figure, a delta not yet applied would be
counted again when it is.

`reserved` is set to the sum even when that exceeds `stock`: the reservations do hold those
units (carts were promised them), and a smaller figure would let them be sold again. The
product is reported as oversold; its availability stays negative, so it takes no new
reservations until stock is added or holds are released.

Expired reservations still count: releasing them is the cart sweeper's job, which knows
whether a cart line still holds them. This job only makes counters match records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.products.catalog import collection as products
from app.products.models import stamped
from app.products.reservations import is_stale, recover_stale_step, reservations

logger = logging.getLogger(__name__)

ATTEMPTS = 5
PAUSE_SECONDS = 0.02
PRODUCT_FIELDS = {
    "_id": 0,
    **dict.fromkeys(("product_id", "stock", "reserved", "available", "version", "pending_steps"), 1),
}
HOLDING_FIELDS = {"_id": 0, "product_id": 1, "quantity": 1, "pending_step": 1}
# `{"$ne": None}` would also match documents without the field on nx-27017 (MongoDB does not).
HAS_PENDING_STEP = {"status": "active", "pending_step": {"$type": "string"}}


@dataclass(frozen=True)
class ReservedFix:
    """A product whose `reserved` counter did not match its active reservations."""

    product_id: str
    reserved_before: int
    reserved_after: int
    stock: int

    @property
    def oversold(self) -> bool:
        return self.reserved_after > self.stock


@dataclass(frozen=True)
class ReconcileReport:
    """What a run found; with `dry_run`, the fixes and recoveries it would have made."""

    products_checked: int
    fixes: tuple[ReservedFix, ...]
    stale_steps_recovered: int
    busy: tuple[str, ...] = ()  # kept changing, so not checked (nor counted above); run again
    oversold: tuple[str, ...] = ()  # products whose active reservations hold more than stock
    dry_run: bool = False

    @property
    def products_fixed(self) -> int:
        return len(self.fixes)


@dataclass
class _Holding:
    quantity: int = 0
    steps_in_flight: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Checked:
    fix: ReservedFix | None
    oversold: bool


def reconcile_inventory(*, dry_run: bool = False) -> ReconcileReport:
    recovered = _recover_stale_steps(dry_run)
    snapshots = list(products().find({}, PRODUCT_FIELDS))  # every product is read before its reservations
    holdings = _holdings(reservations().find({"status": "active"}, HOLDING_FIELDS))
    fixes: list[ReservedFix] = []
    busy: list[str] = []
    oversold: list[str] = []
    for snapshot in snapshots:
        checked = _reconcile_product(snapshot, holdings.get(snapshot["product_id"], _Holding()), dry_run)
        if checked is None:
            busy.append(snapshot["product_id"])
            continue
        if checked.fix is not None:
            fixes.append(checked.fix)
        if checked.oversold:
            oversold.append(snapshot["product_id"])
    return ReconcileReport(
        products_checked=len(snapshots) - len(busy),
        fixes=tuple(fixes),
        stale_steps_recovered=recovered,
        busy=tuple(busy),
        oversold=tuple(oversold),
        dry_run=dry_run,
    )


def _recover_stale_steps(dry_run: bool) -> int:
    stale = [current for current in reservations().find(HAS_PENDING_STEP) if is_stale(current)]
    if dry_run:
        return len(stale)
    recovered = sum(1 for current in stale if recover_stale_step(current))
    if recovered:
        logger.warning("reconcile: recovered %d stale reservation steps", recovered)
    return recovered


def _holdings(active: Iterable[dict[str, Any]]) -> dict[str, _Holding]:
    holdings: dict[str, _Holding] = {}
    for reservation in active:
        holding = holdings.setdefault(reservation["product_id"], _Holding())
        holding.quantity += reservation["quantity"]
        if reservation.get("pending_step"):
            holding.steps_in_flight.append(reservation["pending_step"])
    return holdings


def _reconcile_product(snapshot: dict[str, Any], holding: _Holding, dry_run: bool) -> _Checked | None:
    """Check one product, retrying on concurrent changes; None if it never held still."""
    product_id = snapshot["product_id"]
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(PAUSE_SECONDS)
            snapshot = products().find_one({"product_id": product_id}, PRODUCT_FIELDS)
            if snapshot is None:
                return _Checked(fix=None, oversold=False)
            active = reservations().find({"product_id": product_id, "status": "active"}, HOLDING_FIELDS)
            holding = _holdings(active).get(product_id, _Holding())
        applied = set(snapshot.get("pending_steps") or ())
        if any(step in applied for step in holding.steps_in_flight):
            continue  # applied (or fenced) but not finalised yet: wait for it
        oversold = holding.quantity > snapshot["stock"]
        consistent = snapshot.get("available") == snapshot["stock"] - snapshot["reserved"]
        if snapshot["reserved"] == holding.quantity and consistent:
            return _Checked(fix=None, oversold=oversold)
        fix = ReservedFix(product_id, snapshot["reserved"], holding.quantity, snapshot["stock"])
        if dry_run or _set_reserved(snapshot, holding.quantity):
            if not dry_run:
                logger.warning(
                    "reconcile: product %s reserved %d -> %d", product_id, fix.reserved_before, fix.reserved_after
                )
            return _Checked(fix=fix, oversold=oversold)
    return None


def _set_reserved(snapshot: dict[str, Any], reserved: int) -> bool:
    """Compare-and-set on `version` (and on the `reserved` read, should a writer ever forget it).

    `available` is set with it: every change of `stock` bumps `version` too, so the stock
    read is still the stock when the write applies.
    """
    result = products().update_one(
        {"product_id": snapshot["product_id"], "version": snapshot["version"], "reserved": snapshot["reserved"]},
        stamped({"$set": {"reserved": reserved, "available": snapshot["stock"] - reserved}, "$inc": {"version": 1}}),
    )
    return result.modified_count == 1
