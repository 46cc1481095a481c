"""A cart in its three shapes: inside a write (`Draft`: the locked row and its lines), as
committed (`Contents`, copied out of the unit of work) and as answered (`render`, a dto.Cart
with each line's product figures)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from app.cart.dto import Cart as CartDto
from app.cart.dto import CartItem
from app.cart.models import Cart, Line, utcnow
from app.products import interface as products

CENT = Decimal("0.01")


@dataclass
class Draft:
    """A cart inside a write unit of work: its (locked) row and its lines, which `save`
    writes back into the row (the JSON column sees only a new list, never changes in place)."""

    row: Cart
    lines: list[Line]

    @property
    def owner_id(self) -> str:
        return self.row.owner_id

    @property
    def version(self) -> int:
        return self.row.version

    @property
    def currency(self) -> str:
        return self.row.currency

    def line(self, product_id: str) -> Line | None:
        return next((line for line in self.lines if line.product_id == product_id), None)

    def save(self) -> None:
        """The lines back into the row (flushed with the row's other changes: one UPDATE)."""
        self.row.write_lines(self.lines)

    def contents(self) -> Contents:
        lines = tuple(
            _Line(
                line.product_id, line.sku, line.name, line.unit_price.quantize(CENT), line.quantity, line.reserved_until
            )
            for line in self.lines
        )
        return Contents(str(self.row.id), self.owner_id, self.currency, self.version, lines)


@dataclass(frozen=True)
class _Line:
    product_id: str
    sku: str
    name: str
    unit_price: Decimal
    quantity: int
    reserved_until: datetime


@dataclass(frozen=True)
class Contents:
    """A cart as committed, copied out of the unit of work."""

    cart_id: str
    owner_id: str
    currency: str
    version: int
    lines: tuple[_Line, ...]

    @property
    def product_ids(self) -> list[str]:
        return [line.product_id for line in self.lines]


def render(contents: Contents, current: Mapping[str, products.Product] | None) -> CartDto:
    """The cart as answered; `current` None: the products store could not be reached, so
    the lines answer from their snapshots."""
    now = utcnow()
    items = tuple(
        _item(line, (current or {}).get(line.product_id), current is not None, now) for line in contents.lines
    )
    return CartDto(
        shopping_cart_id=contents.cart_id,
        user_id=contents.owner_id,
        currency=contents.currency,
        total_price=sum((item.line_total for item in items), Decimal("0.00")),
        total_quantity=sum(item.quantity for item in items),
        items=items,
        version=contents.version,
    )


def _item(line: _Line, product: products.Product | None, reachable: bool, now: datetime) -> CartItem:
    available = (product.available if product.status == "active" else 0) if product else None
    return CartItem(
        product_id=line.product_id,
        sku=line.sku,
        name=line.name,
        price=line.unit_price,
        quantity=line.quantity,
        line_total=line.unit_price * line.quantity,
        available=available if reachable else None,
        current_price=product.price if product else None,
        price_changed=bool(product and product.price != line.unit_price),
        reserved_until=line.reserved_until,
        reservation_expired=line.reserved_until <= now,
    )
