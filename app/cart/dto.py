"""Plain data that crosses the cart module's boundary (re-exported by interface.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
    reserved_until: datetime  # the hold lasts until then; extended by every change to the line
    reservation_expired: bool  # past it: the units may go to another buyer until the line's next write


@dataclass(frozen=True)
class Cart:
    shopping_cart_id: str
    user_id: str
    currency: str
    total_price: Decimal
    total_quantity: int
    items: tuple[CartItem, ...]
    version: int


@dataclass(frozen=True)
class OrderLine:
    product_id: str
    sku: str
    name: str
    price: Decimal
    quantity: int
    line_total: Decimal


@dataclass(frozen=True)
class Order:
    order_id: str
    user_id: str
    shopping_cart_id: str
    status: str
    currency: str
    total_price: Decimal
    total_quantity: int
    items: tuple[OrderLine, ...]
    created_at: datetime


@dataclass(frozen=True)
class StoredResponse:
    """The answer given to the first request with an Idempotency-Key, replayed for repeats."""

    status: int
    body: dict
    etag: str | None


@dataclass(frozen=True)
class OrderPage:
    items: tuple[Order, ...]
    total: int


@dataclass(frozen=True)
class MergeAdjustment:
    """A guest line that could not be merged whole."""

    product_id: str
    requested: int  # the user's units plus the guest's
    merged: int  # what the user's line holds now
    reason: str  # "quantity_limit", "insufficient_stock", "line_limit", "unit_limit" or "currency_mismatch"


@dataclass(frozen=True)
class MergeResult:
    cart: Cart
    merged_lines: int
    adjustments: tuple[MergeAdjustment, ...]
