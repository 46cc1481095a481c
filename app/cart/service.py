"""Cart rules: one active cart per owner, lines that always hold a stock reservation.

Stock lives in the products store and carts in PostgreSQL, with no shared transaction, so
the steps are ordered to fail safe: stock is reserved *before* a line is written or grown,
and released only *after* a line is shrunk or deleted. A crash in between leaves a
reservation without a line (released when it expires) or nothing, never a line without
its reservation. Each cart write locks the cart's row, so parallel writes never lose one
another.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.cart.dto import Cart as CartDto
from app.cart.dto import CartItem
from app.cart.errors import LineNotFound, QuantityLimitExceeded
from app.cart.models import Cart, CartLine, utcnow
from app.extensions import db
from app.products import interface as products

MAX_LINE_QUANTITY = 100


class Carts:
    def __init__(self, reservation_ttl: int):
        self.reservation_ttl = timedelta(seconds=reservation_ttl)

    # --- reads -------------------------------------------------------------------------

    def get(self, owner_id: str) -> CartDto:
        cart = self._active_cart(owner_id)
        db.session.commit()
        return self._to_dto(cart)

    # --- writes ------------------------------------------------------------------------

    def add(self, owner_id: str, product_id: str, quantity: int) -> CartDto:
        """Add `quantity` units (the original's POST /v1/cart/products)."""
        cart = self._locked_cart(owner_id)
        line = self._line(cart, product_id)
        current = line.quantity if line else 0
        return self._set(cart, line, product_id, current + quantity)

    def set_quantity(self, owner_id: str, product_id: str, quantity: int) -> CartDto:
        cart = self._locked_cart(owner_id)
        line = self._line(cart, product_id)
        if line is None and quantity == 0:
            raise LineNotFound(f"Product {product_id!r} is not in the cart.", productId=product_id)
        return self._set(cart, line, product_id, quantity)

    def remove(self, owner_id: str, product_id: str, *, whole_line: bool) -> CartDto:
        """Remove one unit (the original's DELETE), or the whole line."""
        cart = self._locked_cart(owner_id)
        line = self._line(cart, product_id)
        if line is None:
            raise LineNotFound(f"Product {product_id!r} is not in the cart.", productId=product_id)
        return self._set(cart, line, product_id, 0 if whole_line else line.quantity - 1)

    def empty(self, owner_id: str) -> CartDto:
        cart = self._locked_cart(owner_id)
        released = [line.reservation_id for line in cart.lines]
        cart.lines.clear()
        self._bump(cart)
        db.session.commit()
        for reservation_id in released:
            products.release_reservation(reservation_id=reservation_id)
        return self._to_dto(cart)

    def _set(self, cart: Cart, line: CartLine | None, product_id: str, quantity: int) -> CartDto:
        if quantity > MAX_LINE_QUANTITY:
            db.session.rollback()
            raise QuantityLimitExceeded(
                f"A cart line holds at most {MAX_LINE_QUANTITY} units.", maximum=MAX_LINE_QUANTITY, productId=product_id
            )
        if line is None or quantity > line.quantity:
            self._grow(cart, line, product_id, quantity)
        else:
            self._shrink(cart, line, quantity)
        return self._to_dto(cart)

    def _grow(self, cart: Cart, line: CartLine | None, product_id: str, quantity: int) -> None:
        """Reserve first, then write the line; undo the reservation if the write fails."""
        try:
            product = products.get_product(product_id=product_id)
            if product.status != "active":
                raise products.ProductNotFound(f"No product with productId {product_id!r}.", productId=product_id)
            reservation_id = line.reservation_id if line else str(uuid.uuid4())
            until = utcnow() + self.reservation_ttl
            products.reserve_stock(
                product_id=product_id, quantity=quantity, reservation_id=reservation_id, expires_at=until
            )
        except Exception:
            db.session.rollback()
            raise
        previous = line.quantity if line else 0
        try:
            if line is None:
                line = CartLine(
                    product_id=product_id,
                    sku=product.sku,
                    name=product.name,
                    unit_price=product.price,
                    quantity=quantity,
                    reservation_id=reservation_id,
                    reserved_until=until,
                )
                cart.lines.append(line)
            line.quantity, line.reserved_until = quantity, until
            self._bump(cart)
            db.session.commit()
        except Exception:
            db.session.rollback()
            products.reserve_stock(
                product_id=product_id, quantity=previous, reservation_id=reservation_id, expires_at=until
            )
            raise

    def _shrink(self, cart: Cart, line: CartLine, quantity: int) -> None:
        """Write the smaller line first, then give the difference back."""
        reservation_id, product_id = line.reservation_id, line.product_id
        if quantity == 0:
            cart.lines.remove(line)
        else:
            line.quantity = quantity
        self._bump(cart)
        db.session.commit()
        if quantity == 0:
            products.release_reservation(reservation_id=reservation_id)
        else:
            products.reserve_stock(
                product_id=product_id, quantity=quantity, reservation_id=reservation_id, expires_at=line.reserved_until
            )

    # --- helpers -----------------------------------------------------------------------

    def _active_cart(self, owner_id: str) -> Cart:
        """The owner's active cart, created if there is none (safe when two requests race)."""
        query = select(Cart).where(Cart.owner_id == owner_id, Cart.status == "active")
        cart = db.session.scalar(query)
        if cart is not None:
            return cart
        try:
            with db.session.begin_nested():
                cart = Cart(owner_id=owner_id)
                db.session.add(cart)
        except IntegrityError:
            cart = db.session.scalar(query)
        return cart

    def _locked_cart(self, owner_id: str) -> Cart:
        cart = self._active_cart(owner_id)
        db.session.commit()
        return db.session.scalar(
            select(Cart).where(Cart.id == cart.id).with_for_update().execution_options(populate_existing=True)
        )

    def _line(self, cart: Cart, product_id: str) -> CartLine | None:
        return next((line for line in cart.lines if line.product_id == product_id), None)

    def _bump(self, cart: Cart) -> None:
        cart.version += 1
        cart.updated_at = utcnow()

    def _to_dto(self, cart: Cart) -> CartDto:
        try:
            current = {
                product.product_id: product
                for product in products.get_products(product_ids=[line.product_id for line in cart.lines])
            }
            reachable = True
        except products.ProductsUnavailable:
            current, reachable = {}, False
        items = tuple(self._item(line, current.get(line.product_id), reachable) for line in cart.lines)
        return CartDto(
            shopping_cart_id=str(cart.id),
            user_id=cart.owner_id,
            currency=cart.currency,
            total_price=sum((item.line_total for item in items), Decimal("0.00")),
            total_quantity=sum(item.quantity for item in items),
            items=items,
            version=cart.version,
        )

    @staticmethod
    def _item(line: CartLine, product: products.Product | None, reachable: bool) -> CartItem:
        unit_price = Decimal(line.unit_price).quantize(Decimal("0.01"))
        available = (product.available if product.status == "active" else 0) if product else None
        return CartItem(
            product_id=line.product_id,
            sku=line.sku,
            name=line.name,
            price=unit_price,
            quantity=line.quantity,
            line_total=unit_price * line.quantity,
            available=available if reachable else None,
            current_price=product.price if product else None,
            price_changed=bool(product and product.price != unit_price),
        )
