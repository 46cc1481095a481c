"""Make every product's counters match its holds (`flask inventory reconcile`).

Each hold change moves the hold and the counters in one update (holds.py), so they drift only
through a bug or a hand edit. This job recomputes `reserved` as the sum of the product's holds
and `available` as `stock - reserved`, and sets them with a compare-and-set on `version`, which
every change of a hold's units and of `stock` moves on: a product that changed between the
read and the write is read again (a few times, then reported as busy).

`reserved` is set to the sum even when that exceeds `stock`: the holds do hold those units
(carts were promised them), and a smaller figure would let them be sold again. The product is
reported as oversold; its availability stays negative, so it takes no new holds until stock is
added or holds are released. Lapsed holds still count: they are released when their units are
needed, or when no cart line has them (app/inventory.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.products import events
from app.products.catalog import collection as products
from app.products.mongo_dialect import stamped

logger = logging.getLogger(__name__)

ATTEMPTS = 5
FIELDS = {"_id": 0, **dict.fromkeys(("product_id", "stock", "reserved", "available", "version", "holds"), 1)}


@dataclass(frozen=True)
class ReservedFix:
    """A product whose counters did not match its holds."""

    product_id: str
    reserved_before: int
    reserved_after: int
    stock: int

    @property
    def oversold(self) -> bool:
        return self.reserved_after > self.stock


@dataclass(frozen=True)
class ReconcileReport:
    """What a run found; with `dry_run`, the fixes it would have made."""

    products_checked: int
    fixes: tuple[ReservedFix, ...]
    busy: tuple[str, ...] = ()  # kept changing, so not checked (nor counted above); run again
    oversold: tuple[str, ...] = ()  # products whose holds hold more than their stock
    dry_run: bool = False

    @property
    def products_fixed(self) -> int:
        return len(self.fixes)


def reconcile_inventory(*, dry_run: bool = False) -> ReconcileReport:
    fixes: list[ReservedFix] = []
    busy: list[str] = []
    oversold: list[str] = []
    checked = 0
    for snapshot in products().find({}, FIELDS):
        outcome = _reconcile_product(snapshot, dry_run)
        if outcome is None:
            busy.append(snapshot["product_id"])
            continue
        checked += 1
        fix, over = outcome
        if fix is not None:
            fixes.append(fix)
        if over:
            oversold.append(snapshot["product_id"])
    return ReconcileReport(checked, tuple(fixes), tuple(busy), tuple(oversold), dry_run)


def _reconcile_product(snapshot: dict[str, Any], dry_run: bool) -> tuple[ReservedFix | None, bool] | None:
    """(the fix, whether oversold) for one product; None if it never held still."""
    for _ in range(ATTEMPTS):
        held = sum(hold["qty"] for hold in (snapshot.get("holds") or {}).values())
        stock, reserved = snapshot["stock"], snapshot["reserved"]
        if reserved == held and snapshot.get("available") == stock - reserved:
            return None, held > stock
        fix = ReservedFix(snapshot["product_id"], reserved, held, stock)
        if dry_run or _set_counters(snapshot, held):
            if not dry_run:
                logger.warning("reconcile: product %s reserved %d -> %d", fix.product_id, reserved, held)
            return fix, fix.oversold
        snapshot = products().find_one({"product_id": snapshot["product_id"]}, FIELDS)
        if snapshot is None:
            return None, False
    return None


def _set_counters(snapshot: dict[str, Any], reserved: int) -> bool:
    result = products().update_one(
        {"product_id": snapshot["product_id"], "version": snapshot["version"]},
        stamped(
            events.stock_changed(
                {"$set": {"reserved": reserved, "available": snapshot["stock"] - reserved}, "$inc": {"version": 1}},
                snapshot["product_id"],
                "reconcile",
                reserved=reserved - snapshot["reserved"],
                available=snapshot["stock"]
                - reserved
                - snapshot.get("available", snapshot["stock"] - snapshot["reserved"]),
            )
        ),
    )
    return result.modified_count == 1
