"""Plain data that crosses the cart module's boundary (re-exported by interface.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class CartItem:
    product_id: str
    sku: str
    name: str
    price: Decimal  # the snapshot taken when the line was created
    quantity: int
    line_total: Decimal
    available: int | None  # None when the products store cannot be reached
    current_price: Decimal | None
    price_changed: bool


@dataclass(frozen=True)
class Cart:
    shopping_cart_id: str
    user_id: str
    currency: str
    total_price: Decimal
    total_quantity: int
    items: tuple[CartItem, ...]
    version: int
