"""Cart rules: one active cart per owner, lines that always hold a stock reservation.

Stock lives in the products store and carts in PostgreSQL, with no shared transaction, so
the steps are ordered to fail safe: stock is reserved *before* a line is written or grown,
and released only *after* a line is shrunk or deleted. A crash in between leaves a
reservation without a line (released when it expires) or nothing, never a line without
its reservation. Each cart write locks the cart's row, so parallel writes never lose one
another.

Reads go through the CartCache (cache.py): every committed write moves the owner's cache
generation on before it answers, so a read never shows a cart older than the last write.
Each request is one PostgreSQL transaction whose ORM objects are copied into plain
`_Contents` before the commit, so nothing is loaded again after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from app.cart.cache import CartCache
from app.cart.dto import Cart as CartDto
from app.cart.dto import CartItem, MergeAdjustment, MergeResult, OrderPage
from app.cart.dto import Order as OrderDto
from app.cart.dto import OrderLine as OrderLineDto
from app.cart.errors import (
    CartChanged,
    CartEmpty,
    LineNotFound,
    OrderNotFound,
    QuantityLimitExceeded,
    ReservationExpired,
)
from app.cart.models import Cart, CartLine, Order, OrderLine, utcnow
from app.extensions import db
from app.products import interface as products

MAX_LINE_QUANTITY = 100
CENT = Decimal("0.01")


@dataclass(frozen=True)
class _Line:
    product_id: str
    sku: str
    name: str
    unit_price: Decimal
    quantity: int


@dataclass(frozen=True)
class _Contents:
    """A cart as committed, copied out of the ORM objects (which expire at the commit)."""

    cart_id: str
    owner_id: str
    currency: str
    version: int
    lines: tuple[_Line, ...]

    @property
    def product_ids(self) -> list[str]:
        return [line.product_id for line in self.lines]


def _contents(cart: Cart) -> _Contents:
    lines = tuple(
        _Line(line.product_id, line.sku, line.name, Decimal(line.unit_price).quantize(CENT), line.quantity)
        for line in cart.lines
    )
    return _Contents(str(cart.id), cart.owner_id, cart.currency, cart.version, lines)


class Carts:
    def __init__(self, reservation_ttl: int, guest_cart_days: int, user_cart_days: int, cache: CartCache):
        self.reservation_ttl = timedelta(seconds=reservation_ttl)
        self.guest_cart_lifetime = timedelta(days=guest_cart_days)
        self.user_cart_lifetime = timedelta(days=user_cart_days)
        self.cache = cache

    # --- reads -------------------------------------------------------------------------

    def get(self, owner_id: str) -> CartDto:
        return self.cache.cart(owner_id, lambda: self._load(owner_id))

    def _load(self, owner_id: str) -> tuple[CartDto, bool]:
        """The cart from the databases, every product read fresh; cacheable unless the
        products store could not be reached."""
        contents = _contents(self._active_cart(owner_id))
        db.session.rollback()  # ends the read-only transaction before the products store is asked
        current = self._current_products(contents.product_ids, fresh=contents.product_ids)
        return _render(contents, current), current is not None

    # --- writes ------------------------------------------------------------------------

    def add(self, owner_id: str, product_id: str, quantity: int, expected_version: int | None = None) -> CartDto:
        """Add `quantity` units (the original's POST /v1/cart/products)."""
        cart = self._locked_cart(owner_id, expected_version)
        line = self._line(cart, product_id)
        current = line.quantity if line else 0
        return self._set(cart, line, product_id, current + quantity)

    def set_quantity(
        self, owner_id: str, product_id: str, quantity: int, expected_version: int | None = None
    ) -> CartDto:
        cart = self._locked_cart(owner_id, expected_version)
        line = self._line(cart, product_id)
        if line is None and quantity == 0:
            raise LineNotFound(f"Product {product_id!r} is not in the cart.", productId=product_id)
        return self._set(cart, line, product_id, quantity)

    def remove(
        self, owner_id: str, product_id: str, *, whole_line: bool, expected_version: int | None = None
    ) -> CartDto:
        """Remove one unit (the original's DELETE), or the whole line."""
        cart = self._locked_cart(owner_id, expected_version)
        line = self._line(cart, product_id)
        if line is None:
            raise LineNotFound(f"Product {product_id!r} is not in the cart.", productId=product_id)
        return self._set(cart, line, product_id, 0 if whole_line else line.quantity - 1)

    def empty(self, owner_id: str, expected_version: int | None = None) -> CartDto:
        cart = self._locked_cart(owner_id, expected_version)
        released = [line.reservation_id for line in cart.lines]
        cart.lines.clear()
        self._bump(cart)
        contents = _contents(cart)
        self._commit(owner_id)
        for reservation_id in released:
            products.release_reservation(reservation_id=reservation_id)
        return _render(contents, {})

    def merge(self, guest_id: str, user_id: str) -> MergeResult:
        """Move a guest's cart into a user's: quantities add up, capped by the line maximum
        and by what can be reserved. The guest cart ends `merged`; merging again is a no-op.

        Order of steps, as everywhere here: grow the user's holds, then commit the lines,
        then release the guest's holds, so a failure only ever leaves stock over-held; then
        lines cut short because the guest's own units were still held take them up.
        """
        guest_cart = self._find_cart(guest_id, lock=True)
        if guest_cart is None or not guest_cart.lines:
            db.session.rollback()
            return MergeResult(cart=self.get(user_id), merged_lines=0, adjustments=())
        cart = self._locked_cart(user_id)  # in the same transaction: the guest cart stays locked
        adjustments, released, merged_lines = [], [], len(guest_cart.lines)
        try:
            for guest_line in list(guest_cart.lines):
                line = self._line(cart, guest_line.product_id)
                if line is None:  # the line moves over with its hold
                    guest_cart.lines.remove(guest_line)
                    cart.lines.append(guest_line)
                    continue
                requested = line.quantity + guest_line.quantity
                merged = self._grow_for_merge(line, min(requested, MAX_LINE_QUANTITY))
                if merged < requested:
                    reason = "quantity_limit" if merged == MAX_LINE_QUANTITY else "insufficient_stock"
                    adjustments.append(MergeAdjustment(line.product_id, requested, merged, reason))
                line.quantity = merged
                released.append(guest_line.reservation_id)
                guest_cart.lines.remove(guest_line)
        except Exception:
            db.session.rollback()
            raise
        guest_cart.status = "merged"
        self._bump(guest_cart)
        self._bump(cart)
        contents = _contents(cart)
        self._commit(guest_id, user_id)
        for reservation_id in released:
            products.release_reservation(reservation_id=reservation_id)
        short = [adjustment for adjustment in adjustments if adjustment.reason == "insufficient_stock"]
        if not short:
            current = self._current_products(contents.product_ids, fresh=contents.product_ids)
            return MergeResult(
                cart=_render(contents, current), merged_lines=merged_lines, adjustments=tuple(adjustments)
            )
        topped_up = {adjustment.product_id: self._top_up(user_id, adjustment) for adjustment in short}
        kept = [topped_up.get(adjustment.product_id, adjustment) for adjustment in adjustments]
        remaining = tuple(adjustment for adjustment in kept if adjustment.merged < adjustment.requested)
        return MergeResult(cart=self.get(user_id), merged_lines=merged_lines, adjustments=remaining)

    def _top_up(self, user_id: str, adjustment: MergeAdjustment) -> MergeAdjustment:
        """Grow a merged line that stock cut short, now that the guest's own holds are released.

        While the user's line first grew, the guest's units were still held, so they counted as
        taken. Released, they are free again: the line takes as many as it can get (another
        buyer may have taken some in between), in a transaction of its own, reserve first.
        """
        wanted = adjustment.requested
        try:
            self.set_quantity(user_id, adjustment.product_id, wanted)
        except products.InsufficientStock as short:
            wanted = adjustment.merged + short.extensions["available"]
            if wanted <= adjustment.merged:
                return adjustment
            try:
                self.set_quantity(user_id, adjustment.product_id, wanted)
            except products.InsufficientStock:
                return adjustment
        return replace(adjustment, merged=wanted)

    def _grow_for_merge(self, line: CartLine, wanted: int) -> int:
        """Hold up to `wanted` units on the line; returns how many it holds."""
        until = utcnow() + self.reservation_ttl
        try:
            products.reserve_stock(
                product_id=line.product_id, quantity=wanted, reservation_id=line.reservation_id, expires_at=until
            )
        except products.InsufficientStock as short:
            wanted = line.quantity + short.extensions["available"]
            products.reserve_stock(
                product_id=line.product_id, quantity=wanted, reservation_id=line.reservation_id, expires_at=until
            )
        line.reserved_until = until
        return wanted

    def checkout(self, owner_id: str, expected_version: int | None = None) -> OrderDto:
        """Turn the cart into an order: every line's hold becomes a sale, or nothing is sold.

        All holds are confirmed (and extended) before any is committed, so a lost hold fails
        the checkout before stock moves. Committing a hold is idempotent, so a checkout that
        failed after some commits completes when retried.
        """
        cart = self._locked_cart(owner_id, expected_version)
        if not cart.lines:
            db.session.rollback()
            raise CartEmpty("The cart is empty.")
        try:
            for line in cart.lines:
                self._confirm_hold(line)
            for line in cart.lines:
                products.commit_reservation(reservation_id=line.reservation_id)
        except Exception:
            db.session.rollback()
            raise
        order = _order_from(cart)
        cart.status = "checked_out"
        self._bump(cart)
        db.session.add(order)
        db.session.flush()
        placed = order_to_dto(order)
        self._commit(owner_id)
        return placed

    def _confirm_hold(self, line: CartLine) -> None:
        until = utcnow() + self.reservation_ttl
        try:
            products.reserve_stock(
                product_id=line.product_id, quantity=line.quantity, reservation_id=line.reservation_id, expires_at=until
            )
        except products.ReservationConflict as conflict:
            if conflict.extensions.get("reservationStatus") != "committed":  # committed: a retried checkout
                raise ReservationExpired(
                    f"The hold on {line.product_id!r} has expired; add it to the cart again.", productId=line.product_id
                ) from None

    def list_orders(self, owner_id: str | None, page: int, page_size: int) -> OrderPage:
        """The owner's orders, newest first (every order when owner_id is None)."""
        query = select(Order)
        if owner_id is not None:
            query = query.where(Order.owner_id == owner_id)
        total = db.session.scalar(select(func.count()).select_from(query.subquery()))
        orders = db.session.scalars(
            query.order_by(Order.created_at.desc(), Order.id).offset((page - 1) * page_size).limit(page_size)
        )
        return OrderPage(items=tuple(order_to_dto(order) for order in orders), total=total)

    def get_order(self, order_id: str, owner_id: str | None) -> OrderDto:
        try:
            order = db.session.get(Order, uuid.UUID(order_id))
        except ValueError:
            order = None
        if order is None or (owner_id is not None and order.owner_id != owner_id):
            raise OrderNotFound(f"No order {order_id!r}.", orderId=order_id)
        return order_to_dto(order)

    def _set(self, cart: Cart, line: CartLine | None, product_id: str, quantity: int) -> CartDto:
        if quantity > MAX_LINE_QUANTITY:
            db.session.rollback()
            raise QuantityLimitExceeded(
                f"A cart line holds at most {MAX_LINE_QUANTITY} units.", maximum=MAX_LINE_QUANTITY, productId=product_id
            )
        if line is None or quantity > line.quantity:
            return self._grow(cart, line, product_id, quantity)
        return self._shrink(cart, line, quantity)

    def _grow(self, cart: Cart, line: CartLine | None, product_id: str, quantity: int) -> CartDto:
        """Reserve first, then write the line; undo the reservation if the write fails.

        The reservation checks that the product exists and is on sale; the products are read
        after it (the changed one fresh, so the answer shows the units just held), which
        also gives a new line its snapshot of SKU, name and price.
        """
        reservation_id = line.reservation_id if line else str(uuid.uuid4())
        until = utcnow() + self.reservation_ttl
        try:
            products.reserve_stock(
                product_id=product_id, quantity=quantity, reservation_id=reservation_id, expires_at=until
            )
        except Exception:
            db.session.rollback()
            raise
        previous = line.quantity if line else 0
        try:
            product_ids = [*(existing.product_id for existing in cart.lines), *([] if line else [product_id])]
            try:
                current = self.cache.products(product_ids, fresh=(product_id,))
            except products.ProductsUnavailable:
                if line is None:
                    raise  # a new line needs its snapshot
                current = None  # the line grows all the same; the answer shows the snapshots
            if line is None:
                product = current.get(product_id)
                if product is None or product.status != "active":
                    raise products.ProductNotFound(f"No product with productId {product_id!r}.", productId=product_id)
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
            contents = _contents(cart)
            db.session.commit()
        except Exception:
            db.session.rollback()
            products.reserve_stock(
                product_id=product_id, quantity=previous, reservation_id=reservation_id, expires_at=until
            )
            raise
        self.cache.changed(contents.owner_id)
        return _render(contents, current)

    def _shrink(self, cart: Cart, line: CartLine, quantity: int) -> CartDto:
        """Write the smaller line first, then give the difference back."""
        reservation_id, product_id, reserved_until = line.reservation_id, line.product_id, line.reserved_until
        if quantity == 0:
            cart.lines.remove(line)
        else:
            line.quantity = quantity
        self._bump(cart)
        contents = _contents(cart)
        self._commit(contents.owner_id)
        if quantity == 0:
            products.release_reservation(reservation_id=reservation_id)
        else:
            products.reserve_stock(
                product_id=product_id, quantity=quantity, reservation_id=reservation_id, expires_at=reserved_until
            )
        fresh = (product_id,) if quantity else ()
        return _render(contents, self._current_products(contents.product_ids, fresh=fresh))

    # --- helpers -----------------------------------------------------------------------

    def _find_cart(self, owner_id: str, *, lock: bool) -> Cart | None:
        """The owner's active cart with its lines, in one statement; `lock` holds its row
        until the transaction ends."""
        query = (
            select(Cart)
            .options(joinedload(Cart.lines))
            .where(Cart.owner_id == owner_id, Cart.status == "active")
            .execution_options(populate_existing=True)
        )
        if lock:
            query = query.with_for_update(of=Cart)
        return db.session.execute(query).unique().scalar_one_or_none()

    def _active_cart(self, owner_id: str, *, lock: bool = False) -> Cart:
        """The owner's active cart, created if there is none (committed at once unless the
        row is to stay locked for a write); safe when two first requests race."""
        cart = self._find_cart(owner_id, lock=lock)
        if cart is not None:
            return cart
        try:
            with db.session.begin_nested():
                cart = Cart(owner_id=owner_id, expires_at=utcnow() + self._lifetime(owner_id), lines=[])
                db.session.add(cart)
        except IntegrityError:  # the other request's cart, once it has committed
            return self._find_cart(owner_id, lock=lock)
        if not lock:
            db.session.commit()
        return cart

    def _locked_cart(self, owner_id: str, expected_version: int | None = None) -> Cart:
        """The active cart, its row locked until the caller commits: writes to one cart queue up."""
        cart = self._active_cart(owner_id, lock=True)
        if expected_version is not None and cart.version != expected_version:
            db.session.rollback()
            raise CartChanged(
                f"The cart has changed (now version {cart.version}); fetch it again.", currentVersion=cart.version
            )
        return cart

    def _commit(self, *owner_ids: str) -> None:
        """Commit a cart write, then stop the cache serving the owners' carts as they were."""
        db.session.commit()
        self.cache.changed(*owner_ids)

    def _line(self, cart: Cart, product_id: str) -> CartLine | None:
        return next((line for line in cart.lines if line.product_id == product_id), None)

    def _bump(self, cart: Cart) -> None:
        """Every change: a new version, and the cart lives on for its owner kind's lifetime."""
        cart.version += 1
        cart.updated_at = utcnow()
        cart.expires_at = cart.updated_at + self._lifetime(cart.owner_id)

    def _lifetime(self, owner_id: str) -> timedelta:
        return self.guest_cart_lifetime if owner_id.startswith("guest:") else self.user_cart_lifetime

    def _current_products(self, product_ids: list[str], fresh: Collection[str]) -> dict[str, products.Product] | None:
        """The lines' products (see CartCache.products); None when the store cannot be reached."""
        try:
            return self.cache.products(product_ids, fresh=fresh)
        except products.ProductsUnavailable:
            return None


def _render(contents: _Contents, current: dict[str, products.Product] | None) -> CartDto:
    """The cart as answered; `current` None: the products store could not be reached, so
    the lines answer from their snapshots."""
    items = tuple(_item(line, (current or {}).get(line.product_id), current is not None) for line in contents.lines)
    return CartDto(
        shopping_cart_id=contents.cart_id,
        user_id=contents.owner_id,
        currency=contents.currency,
        total_price=sum((item.line_total for item in items), Decimal("0.00")),
        total_quantity=sum(item.quantity for item in items),
        items=items,
        version=contents.version,
    )


def _item(line: _Line, product: products.Product | None, reachable: bool) -> CartItem:
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
    )


def _order_from(cart: Cart) -> Order:
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
        cart_id=cart.id,
        currency=cart.currency,
        total_price=sum((line.line_total for line in lines), Decimal("0.00")),
        total_quantity=sum(line.quantity for line in lines),
        lines=lines,
    )


def order_to_dto(order: Order) -> OrderDto:
    created_at = order.created_at if order.created_at.tzinfo else order.created_at.replace(tzinfo=UTC)
    return OrderDto(
        order_id=str(order.id),
        user_id=order.owner_id,
        shopping_cart_id=str(order.cart_id),
        status=order.status,
        currency=order.currency,
        total_price=Decimal(order.total_price).quantize(CENT),
        total_quantity=order.total_quantity,
        items=tuple(
            OrderLineDto(
                product_id=line.product_id,
                sku=line.sku,
                name=line.name,
                price=Decimal(line.unit_price).quantize(CENT),
                quantity=line.quantity,
                line_total=Decimal(line.line_total).quantize(CENT),
            )
            for line in order.lines
        ),
        created_at=created_at,
    )
