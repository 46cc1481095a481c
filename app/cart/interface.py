"""The cart module's public port: the only thing other modules may import from it.

Owners are user ids or guest subjects ("guest:<uuid>"); quantities are whole units.
"""

from __future__ import annotations

from flask import current_app

from app.cart.dto import Cart, CartItem
from app.cart.errors import CartError, LineNotFound, QuantityLimitExceeded
from app.cart.service import MAX_LINE_QUANTITY

__all__ = [
    "MAX_LINE_QUANTITY",
    "Cart",
    "CartError",
    "CartItem",
    "LineNotFound",
    "QuantityLimitExceeded",
    "add_item",
    "empty_cart",
    "get_cart",
    "remove_item",
    "set_item_quantity",
]


def _carts():
    return current_app.extensions["carts"]


def get_cart(*, owner_id: str) -> Cart:
    """The owner's active cart; an empty one is created if there is none."""
    return _carts().get(owner_id)


def add_item(*, owner_id: str, product_id: str, quantity: int) -> Cart:
    """Add units, reserving them; raises ProductNotFound or InsufficientStock (products module)."""
    return _carts().add(owner_id, product_id, quantity)


def set_item_quantity(*, owner_id: str, product_id: str, quantity: int) -> Cart:
    """Set a line's quantity (0 removes it), reserving or releasing the difference."""
    return _carts().set_quantity(owner_id, product_id, quantity)


def remove_item(*, owner_id: str, product_id: str, whole_line: bool = False) -> Cart:
    """Remove one unit (deleting the line at zero), or the whole line."""
    return _carts().remove(owner_id, product_id, whole_line=whole_line)


def empty_cart(*, owner_id: str) -> Cart:
    return _carts().empty(owner_id)
