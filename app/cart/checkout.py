"""Checkout: the cart, at the catalog's current prices, into an order, every hold confirmed
and then sold; or, when a price changed or a product left the catalog, nothing sold."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from app import metrics
from app.cart import events, holds
from app.cart.contents import CENT, Draft
from app.cart.dto import Order as OrderDto
from app.cart.errors import CartEmpty, PriceChanged, ProductUnavailable, ReservationExpired
from app.cart.models import Line, Order, OrderLine, utcnow
from app.cart.orders import order_to_dto
from app.cart.store import CartStore
from app.extensions import db
from app.products import interface as products
from app.transactions import unit_of_work


class Checkout(CartStore):
    def checkout(self, owner_id: str, expected_version: int | None = None) -> OrderDto:
        """Turn the cart into an order at the catalog's current prices, or sell nothing.

        One unit of work, the cart locked throughout. Every line is checked against the
        catalog first: a changed price or a product no longer on sale updates the cart and
        answers 409, so the shopper sees what the next checkout will charge. Otherwise every
        hold is confirmed (extended, or made again if it was released) before any is sold, so
        a hold whose stock went to another buyer fails the checkout before any stock moves;
        then every hold becomes a sale and the order is written. Committing a hold is
        idempotent, so a checkout that failed after some commits completes when retried.
        """
        unavailable: list[Line] = []
        with unit_of_work():
            cart = self._locked_cart(owner_id, expected_version)
            if not cart.lines:
                raise CartEmpty("The cart is empty.")
            product_ids = [line.product_id for line in cart.lines]
            current = self.cache.products(product_ids, fresh=product_ids)
            changed = _reprice(cart, current)
            for line in list(cart.lines):
                product = current.get(line.product_id)
                if product is None or product.status != "active" or product.currency != cart.currency:
                    unavailable.append(line)
                    cart.lines.remove(line)
            if changed or unavailable:
                self._bump(cart)
            else:
                self._confirm_holds(cart)
                for line in cart.lines:
                    products.commit_reservation(
                        product_id=line.product_id, reservation_id=line.reservation_id, held=line.quantity
                    )
                order = _order_from(cart)
                cart.row.status = "checked_out"
                self._bump(cart)
                db.session.add(order)
                db.session.flush()
                placed = order_to_dto(order)
                events.checked_out(cart, placed)
        self.cache.changed(owner_id)
        if unavailable:
            holds.settle([holds.release_line(gone, utcnow()) for gone in unavailable])
            raise ProductUnavailable(
                "Some products are no longer on sale and left the cart; check the cart and try again.",
                products=[gone.product_id for gone in unavailable],
                price_changes=changed,
            )
        if changed:
            raise PriceChanged(
                "Some prices have changed; the cart now shows them. Check out again to pay these prices.",
                price_changes=changed,
            )
        metrics.order_placed(placed.currency, placed.total_price)
        return placed

    def _confirm_holds(self, cart: Draft) -> None:
        """Confirm every line's hold, all or none: a line short of stock raises
        ReservationExpired after the holds confirmed here are undone."""
        now = utcnow()
        confirmed: list[holds.Hold] = []
        try:
            for line in cart.lines:
                if (hold := self._confirm_hold(line, now)) is not None:
                    confirmed.append(hold)
        except Exception:
            holds.settle([hold.undo for hold in confirmed])  # the lines still record the holds as they were
            raise

    def _confirm_hold(self, line: Line, now: datetime) -> holds.Hold | None:
        """Extend the line's hold for the checkout, or make it again; None: it is sold already
        (a retried checkout)."""
        try:
            hold = self._hold(line, line.product_id, line.quantity, now)
        except products.ReservationConflict as conflict:
            if conflict.reservation_status == "committed":
                return None
            raise
        except products.InsufficientStock as short:
            raise ReservationExpired(
                f"The hold on {line.product_id!r} has expired and its stock was sold; change the line's quantity.",
                product_id=line.product_id,
                available=short.available,
            ) from None
        line.reservation_id, line.reserved_until = hold.reservation_id, hold.until
        return hold


def _reprice(cart: Draft, current: Mapping[str, products.Product]) -> list[dict[str, str]]:
    """Give every line whose product is on sale the catalog's price; the changes made."""
    changes = []
    for line in cart.lines:
        product = current.get(line.product_id)
        if product is None or product.status != "active" or product.currency != cart.currency:
            continue
        old = line.unit_price.quantize(CENT)
        if product.price != old:
            changes.append({"productId": line.product_id, "oldPrice": str(old), "newPrice": str(product.price)})
            line.unit_price = product.price
    return changes


def _order_from(cart: Draft) -> Order:
    lines = [
        OrderLine(
            position=position,
            product_id=line.product_id,
            sku=line.sku,
            name=line.name,
            unit_price=line.unit_price,
            quantity=line.quantity,
            line_total=line.unit_price * line.quantity,
        )
        for position, line in enumerate(cart.lines)
    ]
    return Order(
        owner_id=cart.owner_id,
        cart_id=cart.row.id,
        currency=cart.currency,
        total_price=sum((line.line_total for line in lines), Decimal("0.00")),
        total_quantity=sum(line.quantity for line in lines),
        lines=lines,
    )
