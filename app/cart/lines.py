"""Writes to a cart's lines: add, set a quantity, remove, empty; the limits a cart keeps.

Every write locks the cart (store.py) and moves each line's stock hold with it (holds.py):
growing, hold first and then write; shrinking, write first and then give back.
"""

from __future__ import annotations

from collections.abc import Callable

from app.cart import events, holds
from app.cart.contents import Draft, render
from app.cart.dto import Cart as CartDto
from app.cart.errors import CurrencyMismatch, LineLimitExceeded, LineNotFound, QuantityLimitExceeded, UnitLimitExceeded
from app.cart.models import Line, utcnow
from app.cart.store import MAX_LINE_QUANTITY, CartStore
from app.products import interface as products
from app.transactions import unit_of_work


class LineWrites(CartStore):
    def add(self, owner_id: str, product_id: str, quantity: int, expected_version: int | None = None) -> CartDto:
        """Add `quantity` units (the original's POST /v1/cart/products)."""
        return self._change_line(
            owner_id, product_id, expected_version, lambda line: (line.quantity if line else 0) + quantity
        )

    def set_quantity(
        self, owner_id: str, product_id: str, quantity: int, expected_version: int | None = None
    ) -> CartDto:
        return self._change_line(
            owner_id, product_id, expected_version, lambda _line: quantity, must_exist=quantity == 0
        )

    def remove(
        self, owner_id: str, product_id: str, *, whole_line: bool, expected_version: int | None = None
    ) -> CartDto:
        """Remove one unit (the original's DELETE), or the whole line."""
        return self._change_line(
            owner_id, product_id, expected_version, lambda line: 0 if whole_line else line.quantity - 1, must_exist=True
        )

    def _change_line(
        self,
        owner_id: str,
        product_id: str,
        expected_version: int | None,
        target: Callable[[Line | None], int],
        *,
        must_exist: bool = False,
    ) -> CartDto:
        """Give one line the quantity `target` computes from it (the line as locked).

        Growing, or touching a line whose hold expired: hold the stock first, then write the
        line (the hold is undone if the write fails). Shrinking: write the line, then give
        the difference back. Either way the products call answers the product as it is
        after the change: the changed line's fresh figures.
        """
        hold: holds.Hold | None = None
        shrunk: Callable[[], products.StockReservation] | None = None
        try:
            with unit_of_work():
                cart = self._locked_cart(owner_id, expected_version)
                line = cart.line(product_id)
                if line is None and must_exist:
                    raise LineNotFound(f"Product {product_id!r} is not in the cart.", product_id=product_id)
                quantity = target(line)
                self._check_limits(cart, line, product_id, quantity)
                before = line.quantity if line else 0
                now = utcnow()
                if quantity == 0 or (line and quantity <= line.quantity and not holds.expired(line, now)):
                    shrunk = holds.shrink(
                        line.reservation_id,
                        product_id,
                        quantity,
                        now + self.reservation_ttl,
                        holds.held_units(line, now),
                    )
                    if quantity == 0:
                        cart.lines.remove(line)
                    else:
                        line.quantity, line.reserved_until = quantity, now + self.reservation_ttl
                else:
                    hold = self._hold(line, product_id, quantity, now)
                    if line is None:
                        line = self._new_line(cart, hold.product, product_id, hold.reservation_id)
                    line.quantity, line.reservation_id, line.reserved_until = quantity, hold.reservation_id, hold.until
                events.line_changed(cart, product_id, before, quantity, line.unit_price)
                self._bump(cart)
                contents = cart.contents()
        except Exception:
            if hold is not None:
                holds.settle([hold.undo])
            raise
        fresh: dict[str, products.Product] = {}
        if hold is not None:
            fresh[product_id] = hold.product
        elif (given_back := holds.settle([shrunk])) and quantity:
            fresh[product_id] = given_back[0].product
        return render(contents, self.cache.after_write((owner_id,), contents.product_ids, fresh))

    def _check_limits(self, cart: Draft, line: Line | None, product_id: str, quantity: int) -> None:
        if quantity > MAX_LINE_QUANTITY:
            raise QuantityLimitExceeded(
                f"A cart line holds at most {MAX_LINE_QUANTITY} units.",
                maximum=MAX_LINE_QUANTITY,
                product_id=product_id,
            )
        if line is None and quantity and len(cart.lines) >= self.limits.max_lines:
            raise LineLimitExceeded(
                f"A cart holds at most {self.limits.max_lines} different products.", maximum=self.limits.max_lines
            )
        units = sum(other.quantity for other in cart.lines if other is not line) + quantity
        if units > self.limits.max_units and quantity > (line.quantity if line else 0):
            raise UnitLimitExceeded(
                f"A cart holds at most {self.limits.max_units} units in all.",
                maximum=self.limits.max_units,
                product_id=product_id,
            )

    def _new_line(self, cart: Draft, product: products.Product, product_id: str, reservation_id: str) -> Line:
        """A line for `product` (as the hold just answered it): its snapshot, in the cart's currency."""
        if product.status != "active":
            raise products.ProductNotFound(f"No product with productId {product_id!r}.", product_id=product_id)
        if not cart.lines:
            cart.row.currency = product.currency
        elif product.currency != cart.currency:
            raise CurrencyMismatch(
                f"This cart is in {cart.currency}; product {product_id!r} is priced in {product.currency}.",
                product_id=product_id,
                cart_currency=cart.currency,
                product_currency=product.currency,
            )
        line = Line(
            product_id=product_id,
            sku=product.sku,
            name=product.name,
            unit_price=product.price,
            quantity=0,
            reservation_id=reservation_id,
            reserved_until=utcnow(),
        )
        cart.lines.append(line)
        return line

    def empty(self, owner_id: str, expected_version: int | None = None) -> CartDto:
        with unit_of_work():
            cart = self._locked_cart(owner_id, expected_version)
            now = utcnow()
            released = [holds.release_line(line, now) for line in cart.lines]
            events.emptied(cart, [line.product_id for line in cart.lines])
            cart.lines.clear()
            self._bump(cart)
            contents = cart.contents()
        self.cache.changed(owner_id)
        holds.settle(released)
        return render(contents, {})
