"""The cart module's public port: the only thing other modules may import from it.

Owners are user ids or guest subjects ("guest:<uuid>"); quantities are whole units. Writes
take an optional `expected_version` (the cart's ETag): a stale one raises CartChanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import current_app

from app.cart import idempotency as _idempotency
from app.cart.database import translate_database_errors as _translate_database_errors
from app.cart.dto import Cart, CartItem, MergeAdjustment, MergeResult, Order, OrderLine, OrderPage, StoredResponse
from app.cart.errors import (
    CartChanged,
    CartEmpty,
    CartError,
    CartUnavailable,
    CurrencyMismatch,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    LineLimitExceeded,
    LineNotFound,
    OrderNotFound,
    PriceChanged,
    ProductUnavailable,
    QuantityLimitExceeded,
    ReservationExpired,
    UnitLimitExceeded,
)
from app.cart.store import MAX_LINE_QUANTITY
from app.extensions import database_answers as _database_answers
from app.ports import Port as _Port

__all__ = [
    "MAX_LINE_QUANTITY",
    "Cart",
    "CartChanged",
    "CartEmpty",
    "CartError",
    "CartItem",
    "CartUnavailable",
    "CurrencyMismatch",
    "IdempotencyKeyInUse",
    "IdempotencyKeyReused",
    "LineLimitExceeded",
    "LineNotFound",
    "MergeAdjustment",
    "MergeResult",
    "Order",
    "OrderLine",
    "OrderNotFound",
    "OrderPage",
    "PriceChanged",
    "ProductUnavailable",
    "QuantityLimitExceeded",
    "ReservationExpired",
    "StoredResponse",
    "UnitLimitExceeded",
    "add_item",
    "check_out",
    "claim_idempotency_key",
    "complete_idempotency_key",
    "empty_cart",
    "get_cart",
    "get_order",
    "held_reservations",
    "is_available",
    "list_orders",
    "merge_guest_cart",
    "release_idempotency_key",
    "remove_item",
    "set_item_quantity",
]

port = _Port("cart", unavailable=CartUnavailable)


def _carts():
    return current_app.extensions["carts"]


@port.expose(idempotent=True)
@_translate_database_errors
def get_cart(*, owner_id: str) -> Cart:
    """The owner's active cart; an empty one is created if there is none."""
    return _carts().get(owner_id)


@port.expose
@_translate_database_errors
def add_item(*, owner_id: str, product_id: str, quantity: int, expected_version: int | None = None) -> Cart:
    """Add units, reserving them; raises ProductNotFound or InsufficientStock (products module)."""
    return _carts().add(owner_id, product_id, quantity, expected_version)


@port.expose(idempotent=True)
@_translate_database_errors
def set_item_quantity(*, owner_id: str, product_id: str, quantity: int, expected_version: int | None = None) -> Cart:
    """Set a line's quantity (0 removes it), reserving or releasing the difference."""
    return _carts().set_quantity(owner_id, product_id, quantity, expected_version)


@port.expose
@_translate_database_errors
def remove_item(
    *, owner_id: str, product_id: str, whole_line: bool = False, expected_version: int | None = None
) -> Cart:
    """Remove one unit (deleting the line at zero), or the whole line."""
    return _carts().remove(owner_id, product_id, whole_line=whole_line, expected_version=expected_version)


@port.expose(idempotent=True)
@_translate_database_errors
def empty_cart(*, owner_id: str, expected_version: int | None = None) -> Cart:
    return _carts().empty(owner_id, expected_version)


@port.expose(idempotent=True)
@_translate_database_errors
def merge_guest_cart(*, guest_id: str, user_id: str) -> MergeResult:
    """Move the guest's active cart into the user's (idempotent: a merged cart is not merged again)."""
    return _carts().merge(guest_id, user_id)


@port.expose
@_translate_database_errors
def check_out(*, owner_id: str, expected_version: int | None = None) -> Order:
    """Turn the active cart into an order; its stock holds become sales."""
    return _carts().checkout(owner_id, expected_version)


@port.expose(idempotent=True)
@_translate_database_errors
def list_orders(*, owner_id: str | None, page: int = 1, page_size: int = 20) -> OrderPage:
    """The owner's orders, newest first; every order when owner_id is None (admins)."""
    return _carts().list_orders(owner_id, page, page_size)


@port.expose(idempotent=True)
@_translate_database_errors
def get_order(*, order_id: str, owner_id: str | None) -> Order:
    """One order; OrderNotFound when it is not the owner's (unless owner_id is None)."""
    return _carts().get_order(order_id, owner_id)


@port.expose
@_translate_database_errors
def claim_idempotency_key(*, owner_id: str, key: str, request_hash: str) -> StoredResponse | None:
    """None: the caller owns the key and does the work; else the first request's answer."""
    return _idempotency.claim(owner_id, key, request_hash)


@port.expose(idempotent=True)
@_translate_database_errors
def complete_idempotency_key(*, owner_id: str, key: str, response: StoredResponse) -> None:
    _idempotency.complete(owner_id, key, response)


@port.expose(idempotent=True)
@_translate_database_errors
def release_idempotency_key(*, owner_id: str, key: str) -> None:
    """Give up a claimed key after a failed request, so that the client may retry with it."""
    _idempotency.give_up(owner_id, key)


@port.expose(idempotent=True)
@_translate_database_errors
def held_reservations(*, reservation_ids: Iterable[str]) -> tuple[str, ...]:
    """The ids among `reservation_ids` that a line of an active cart holds."""
    return _carts().held_reservations(reservation_ids)


@port.expose(idempotent=True)
def is_available() -> bool:
    """Whether the cart database answers (for health checks)."""
    return _database_answers()
