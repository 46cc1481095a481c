"""Plain data that crosses the products module's boundary (re-exported by interface.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

SORT_KEYS = ("createdAt", "-createdAt", "price", "-price", "name")
DEFAULT_SORT = "createdAt"  # oldest first: the original system's listing order


@dataclass(frozen=True)
class Product:
    product_id: str
    sku: str
    name: str
    description: str
    category: str
    tags: tuple[str, ...]
    price: Decimal
    currency: str
    stock: int
    reserved: int
    status: str
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def available(self) -> int:
        return self.stock - self.reserved


@dataclass(frozen=True)
class ProductDraft:
    """A product to create. `product_id` is generated when None."""

    sku: str
    name: str
    price: Decimal
    product_id: str | None = None
    description: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    currency: str = "USD"
    stock: int = 0


@dataclass(frozen=True)
class ProductChanges:
    """A partial update: None leaves a field as it is."""

    sku: str | None = None
    name: str | None = None
    description: str | None = None
    category: str | None = None
    tags: tuple[str, ...] | None = None
    price: Decimal | None = None
    currency: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class ProductFilters:
    q: str | None = None
    category: str | None = None
    tag: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None


@dataclass(frozen=True)
class ProductPage:
    items: tuple[Product, ...]
    total: int
    page: int
    page_size: int


@dataclass(frozen=True)
class StockReservation:
    """A hold: `active` while it holds `quantity` units, else `released` (quantity 0) or
    `committed` (sold); `product` is the product right after the call."""

    reservation_id: str
    product_id: str
    quantity: int
    status: str
    expires_at: datetime
    product: Product
