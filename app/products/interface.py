"""The products module's public port: the only thing other modules may import from it.

Functions take and return the frozen dataclasses below and raise the exceptions below;
every call is written as if it could become a network call (see http_client.py later).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from flask import current_app as _current_app

from app.ports import Port as _Port
from app.products import catalog as _catalog
from app.products import events as _events
from app.products import holds as _holds
from app.products import reconcile as _reconcile
from app.products.database import ping as _ping
from app.products.database import translate_store_errors as _translate_store_errors
from app.products.dto import (
    DEFAULT_SORT,
    SORT_KEYS,
    Product,
    ProductChanges,
    ProductDraft,
    ProductFilters,
    ProductPage,
    StockReservation,
)
from app.products.errors import (
    InsufficientStock,
    ProductIdTaken,
    ProductNotFound,
    ProductsError,
    ProductsUnavailable,
    ReservationBusy,
    ReservationConflict,
    ReservationIdInvalid,
    ReservationNotFound,
    SkuTaken,
    StockBelowReserved,
    VersionMismatch,
)
from app.products.events import PendingProductEvents
from app.products.reconcile import ReconcileReport, ReservedFix

_NO_FILTERS = ProductFilters()

__all__ = [
    "DEFAULT_SORT",
    "SORT_KEYS",
    "InsufficientStock",
    "PendingProductEvents",
    "Product",
    "ProductChanges",
    "ProductDraft",
    "ProductFilters",
    "ProductIdTaken",
    "ProductNotFound",
    "ProductPage",
    "ProductsError",
    "ProductsUnavailable",
    "ReconcileReport",
    "ReservationBusy",
    "ReservationConflict",
    "ReservationIdInvalid",
    "ReservationNotFound",
    "ReservedFix",
    "SkuTaken",
    "StockBelowReserved",
    "StockReservation",
    "VersionMismatch",
    "adjust_stock",
    "archive_product",
    "commit_reservation",
    "create_product",
    "delete_all_products",
    "get_product",
    "get_products",
    "import_products",
    "is_available",
    "list_active_reservations",
    "list_products",
    "reconcile_inventory",
    "release_reservation",
    "reserve_stock",
    "update_product",
]

port = _Port("products", unavailable=ProductsUnavailable)


@port.expose(idempotent=True)
@_translate_store_errors
def get_product(*, product_id: str) -> Product:
    return _catalog.get_product(product_id)


@port.expose(idempotent=True)
@_translate_store_errors
def get_products(*, product_ids: Iterable[str]) -> tuple[Product, ...]:
    """The products that exist among `product_ids`, in the order asked for."""
    return _catalog.get_products(product_ids)


@port.expose(idempotent=True)
@_translate_store_errors
def list_products(
    *, filters: ProductFilters = _NO_FILTERS, sort: str = DEFAULT_SORT, page: int = 1, page_size: int = 20
) -> ProductPage:
    """Active products matching `filters`; `sort` is one of SORT_KEYS."""
    return _catalog.list_products(filters, sort, page, page_size)


@port.expose
@_translate_store_errors
def create_product(*, draft: ProductDraft) -> Product:
    return _catalog.create_product(draft)


@port.expose
@_translate_store_errors
def update_product(*, product_id: str, changes: ProductChanges, expected_version: int) -> Product:
    """Apply `changes` only if the product is still at `expected_version` (else VersionMismatch)."""
    return _catalog.update_product(product_id, changes, expected_version)


@port.expose(idempotent=True)
@_translate_store_errors
def archive_product(*, product_id: str) -> Product:
    return _catalog.archive_product(product_id)


@port.expose
@_translate_store_errors
def adjust_stock(*, product_id: str, delta: int, reason: str) -> Product:
    """Change on-hand stock; raises StockBelowReserved rather than drop below the reserved units."""
    return _catalog.adjust_stock(product_id, delta, reason)


@port.expose(idempotent=True)
@_translate_store_errors
def reserve_stock(
    *, product_id: str, quantity: int, reservation_id: str, expires_at: datetime, held: int | None = None
) -> StockReservation:
    """Hold exactly `quantity` units for `reservation_id` until `expires_at` (idempotent; 0
    releases the hold). `held` is what the caller believes the hold has now (0: none yet, None:
    unknown): right, the change is one store command; wrong, it costs a read, never correctness.
    A hold that lapsed and was released is held again under its id if the units are there."""
    return _holds.reserve_stock(product_id, quantity, reservation_id, expires_at, held)


@port.expose(idempotent=True)
@_translate_store_errors
def list_active_reservations(
    *, created_before: datetime, after: str | None = None, limit: int = 500
) -> tuple[StockReservation, ...]:
    """Holds made before `created_before`, a page at a time by reservation id (pass the last
    id seen as `after`); a maintenance read that scans the products holding anything."""
    return _holds.active_holds(created_before, after, limit)


@port.expose(idempotent=True)
@_translate_store_errors
def release_reservation(*, product_id: str, reservation_id: str, held: int | None = None) -> StockReservation:
    """Give the hold's units back; a hold that is not there (released already) changes nothing."""
    return _holds.release_reservation(product_id, reservation_id, held)


@port.expose(idempotent=True)
@_translate_store_errors
def commit_reservation(*, product_id: str, reservation_id: str, held: int | None = None) -> StockReservation:
    """Sell the hold's units (idempotent); ReservationNotFound if the hold lapsed and was released."""
    return _holds.commit_reservation(product_id, reservation_id, held)


@port.expose(idempotent=True)
@_translate_store_errors
def reconcile_inventory(*, dry_run: bool = False) -> ReconcileReport:
    """Make each product's `reserved` and `available` match its holds, and report what changed
    (safe while the app serves traffic, see reconcile.py); `dry_run` changes nothing."""
    return _reconcile.reconcile_inventory(dry_run=dry_run)


@port.expose(idempotent=True)
@_translate_store_errors
def import_products(*, drafts: Iterable[ProductDraft]) -> int:
    """Bulk insert for seeding: skips drafts whose productId or SKU exists; returns the count inserted."""
    return _catalog.import_products(drafts)


@port.expose(idempotent=True)
@_translate_store_errors
def delete_all_products() -> int:
    return _catalog.delete_all_products()


@port.expose(idempotent=True)
@_translate_store_errors
def pending_events(*, limit: int = 100) -> tuple[PendingProductEvents, ...]:
    """Events of up to `limit` products not yet moved into the outbox (app/events/relay.py),
    each product's oldest first, with the figures after each stock change and the
    product.low_stock events they imply."""
    return _events.pending(limit, _current_app.extensions["settings"].low_stock_threshold)


@port.expose(idempotent=True)
@_translate_store_errors
def drop_events(*, product_id: str, event_ids: Iterable[str]) -> None:
    """Forget a product's events once the outbox has them (dropping twice changes nothing)."""
    _events.dropped(product_id, tuple(event_ids))


@port.expose(idempotent=True)
def is_available() -> bool:
    """Whether the products store answers (for health checks)."""
    return _ping()
