"""Cart rules: one active cart per owner, lines that always hold a stock reservation.

Stock lives in the products store and carts in PostgreSQL, with no shared transaction, so
the steps are ordered to fail safe: stock is reserved *before* a line is written or grown,
and released only *after* a line is shrunk or deleted. A crash in between leaves a
reservation without a line (released when it expires, or by `flask inventory reconcile`)
or nothing, never a line without its reservation.

Each interface call is one unit of work (app/transactions.py). A write locks the cart's row
with `SELECT ... FOR UPDATE` and reads the lines from that very row: they are kept in the
row itself (`carts.lines`, a JSON array of at most CART_MAX_LINES lines, models.py). After
waiting for the lock, PostgreSQL re-reads the locked row and returns its newest version, so
the lines are the ones the previous writer committed. That is what went wrong when the lines
lived in a table of their own and were read in the locking statement (`SELECT ... JOIN
cart_lines ... FOR UPDATE OF carts`): only the locked cart row is re-checked after the wait,
the joined lines came from the snapshot taken before it, and two adds both wrote quantity + 1.
With the lines in a second table the fix took a second SELECT; with the lines in the row, a
write is BEGIN, one locking SELECT, one UPDATE (lines, version, updated_at, expires_at and
holds_expire_at together), the INSERT of its event into the outbox (events.py) and COMMIT:
5 PostgreSQL round trips. The lock is held across the
call that reserves the line's stock, because a hold's quantity must follow the line's.

A hold lasts CART_RESERVATION_TTL after the line's last change. Past it, the line shows
`reservation_expired` and its units may be taken by another buyer (the products module
releases expired holds when it needs their units); the line's next write holds its stock
again under the same reservation id. Each hold change tells the products module how many
units the line believes its hold has (`held`: the line's quantity while the hold is live,
0 for a new line, None once it may have lapsed), so that a right guess is one MongoDB
command; the change returns the product as it is right after it, which gives a new line its
snapshot and the answer the changed line's figures, with no second read.

Reads go through the CartCache (cache.py): every committed write moves the owner's cache
generation on before it answers, so a read never shows a cart older than the last write; that
and the other lines' product snapshots are one Redis round trip after the commit
(CartCache.after_write).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app import metrics
from app.cart import events
from app.cart.cache import CartCache
from app.cart.dto import Cart as CartDto
from app.cart.dto import CartItem, MergeAdjustment, MergeResult, OrderPage
from app.cart.dto import Order as OrderDto
from app.cart.dto import OrderLine as OrderLineDto
from app.cart.errors import (
    CartChanged,
    CartEmpty,
    CurrencyMismatch,
    LineLimitExceeded,
    LineNotFound,
    OrderNotFound,
    PriceChanged,
    ProductUnavailable,
    QuantityLimitExceeded,
    ReservationExpired,
    UnitLimitExceeded,
)
from app.cart.models import Cart, CartLine, Line, Order, OrderLine, aware, utcnow
from app.extensions import db
from app.products import interface as products
from app.transactions import unit_of_work

__all__ = ["MAX_LINE_QUANTITY", "Carts", "Limits", "aware", "order_to_dto"]

logger = logging.getLogger(__name__)
MAX_LINE_QUANTITY = 100
SETTLE_FAILURES = (
    products.ProductsUnavailable,
    products.ReservationBusy,
    products.ReservationConflict,
    products.ReservationNotFound,
)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Limits:
    """What one cart may hold (CART_MAX_LINES, CART_MAX_UNITS), against hoarding."""

    max_lines: int = 50
    max_units: int = 500


@dataclass(frozen=True)
class _Line:
    product_id: str
    sku: str
    name: str
    unit_price: Decimal
    quantity: int
    reserved_until: datetime


@dataclass(frozen=True)
class _Contents:
    """A cart as committed, copied out of the unit of work."""

    cart_id: str
    owner_id: str
    currency: str
    version: int
    lines: tuple[_Line, ...]

    @property
    def product_ids(self) -> list[str]:
        return [line.product_id for line in self.lines]


@dataclass
class _Draft:
    """A cart inside a write unit of work: its (locked) row and its lines, which `_save`
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


def _contents(cart: _Draft) -> _Contents:
    lines = tuple(
        _Line(line.product_id, line.sku, line.name, line.unit_price.quantize(CENT), line.quantity, line.reserved_until)
        for line in cart.lines
    )
    return _Contents(str(cart.row.id), cart.owner_id, cart.currency, cart.version, lines)


@dataclass
class _Hold:
    """A hold made (or grown) inside a unit of work, undone if that unit of work fails."""

    reservation_id: str
    product_id: str
    quantity: int  # units it holds now
    until: datetime
    previous: int  # units it held before, 0 for a new reservation
    previous_until: datetime  # and until when
    product: products.Product  # the product right after the change

    def undo(self) -> None:
        """Back to the units and expiry the line still records. A hold the line had let lapse
        is released instead: lapsed or released, it counts for nobody, and a release never
        needs stock (putting back a lapsed hold might)."""
        if self.previous == 0 or self.previous_until <= utcnow():
            _release(self.product_id, self.reservation_id, held=self.quantity)()
        else:
            _reserve(self.product_id, self.reservation_id, self.previous, self.previous_until, held=self.quantity)


class Carts:
    def __init__(
        self,
        reservation_ttl: int,
        guest_cart_days: int,
        user_cart_days: int,
        cache: CartCache,
        limits: Limits | None = None,
    ):
        self.reservation_ttl = timedelta(seconds=reservation_ttl)
        self.guest_cart_lifetime = timedelta(days=guest_cart_days)
        self.user_cart_lifetime = timedelta(days=user_cart_days)
        self.cache = cache
        self.limits = limits or Limits()

    # --- reads -------------------------------------------------------------------------

    def get(self, owner_id: str) -> CartDto:
        return self.cache.cart(owner_id, lambda: self._load(owner_id))

    def _load(self, owner_id: str) -> tuple[CartDto, bool]:
        """The cart from the databases, every product read fresh; cacheable unless the
        products store could not be reached."""
        contents = self._read(owner_id)
        current = self._current_products(contents.product_ids, fresh=contents.product_ids)
        return _render(contents, current), current is not None

    def _read(self, owner_id: str) -> _Contents:
        """The owner's active cart as committed; an empty one is created if there is none."""
        with unit_of_work(write=False):
            cart = self._find_cart(owner_id, lock=False)
            if cart is not None:
                return _contents(cart)
        with unit_of_work():
            return _contents(self._locked_cart(owner_id))

    # --- writes ------------------------------------------------------------------------

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
        hold: _Hold | None = None
        shrunk: Callable[[], products.StockReservation] | None = None
        try:
            with unit_of_work():
                cart = self._locked_cart(owner_id, expected_version)
                line = cart.line(product_id)
                if line is None and must_exist:
                    raise LineNotFound(f"Product {product_id!r} is not in the cart.", productId=product_id)
                quantity = target(line)
                self._check_limits(cart, line, product_id, quantity)
                before = line.quantity if line else 0
                now = utcnow()
                if quantity == 0 or (line and quantity <= line.quantity and not _expired(line, now)):
                    shrunk = _shrink_hold(
                        line.reservation_id, product_id, quantity, now + self.reservation_ttl, _held(line, now)
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
                contents = _contents(cart)
        except Exception:
            if hold is not None:
                _settle([hold.undo])
            raise
        fresh: dict[str, products.Product] = {}
        if hold is not None:
            fresh[product_id] = hold.product
        elif (given_back := _settle([shrunk])) and quantity:
            fresh[product_id] = given_back[0].product
        return _render(contents, self.cache.after_write((owner_id,), contents.product_ids, fresh))

    def _check_limits(self, cart: _Draft, line: Line | None, product_id: str, quantity: int) -> None:
        if quantity > MAX_LINE_QUANTITY:
            raise QuantityLimitExceeded(
                f"A cart line holds at most {MAX_LINE_QUANTITY} units.", maximum=MAX_LINE_QUANTITY, productId=product_id
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
                productId=product_id,
            )

    def _hold(self, line: Line | None, product_id: str, quantity: int, now: datetime) -> _Hold:
        """Hold `quantity` units for the line (a new reservation for a new line); a hold that
        lapsed, even one released for another buyer, is held again under its id."""
        until = now + self.reservation_ttl
        if line is None:
            reservation_id = str(uuid.uuid4())
            reservation = _reserve(product_id, reservation_id, quantity, until, held=0)
            return _Hold(reservation_id, product_id, quantity, until, 0, until, reservation.product)
        reservation = _reserve(product_id, line.reservation_id, quantity, until, held=_held(line, now))
        return _Hold(
            line.reservation_id, product_id, quantity, until, line.quantity, line.reserved_until, reservation.product
        )

    def _new_line(self, cart: _Draft, product: products.Product, product_id: str, reservation_id: str) -> Line:
        """A line for `product` (as the hold just answered it): its snapshot, in the cart's currency."""
        if product.status != "active":
            raise products.ProductNotFound(f"No product with productId {product_id!r}.", productId=product_id)
        if not cart.lines:
            cart.row.currency = product.currency
        elif product.currency != cart.currency:
            raise CurrencyMismatch(
                f"This cart is in {cart.currency}; product {product_id!r} is priced in {product.currency}.",
                productId=product_id,
                cartCurrency=cart.currency,
                productCurrency=product.currency,
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
            released = [_release(line.product_id, line.reservation_id, _held(line, now)) for line in cart.lines]
            events.emptied(cart, [line.product_id for line in cart.lines])
            cart.lines.clear()
            self._bump(cart)
            contents = _contents(cart)
        self.cache.changed(owner_id)
        _settle(released)
        return _render(contents, {})

    def merge(self, guest_id: str, user_id: str) -> MergeResult:
        """Move a guest's cart into a user's: quantities add up, capped by the line maximum,
        the cart's limits and by what can be reserved. The guest cart ends `merged`; merging
        again is a no-op.

        Order of steps, as everywhere here: grow the user's holds, then commit the lines,
        then release (or cut down) the guest's holds, so a failure only ever leaves stock
        over-held; then lines cut short because the guest's own units were still held take
        them up.
        """
        with unit_of_work():
            guest_cart = self._find_cart(guest_id, lock=True)
            nothing_to_merge = guest_cart is None or not guest_cart.lines
            if not nothing_to_merge:
                cart = self._locked_cart(user_id)  # in the same transaction: the guest cart stays locked
                merged_lines = len(guest_cart.lines)
                adjustments, settle = self._merge_lines(guest_cart, cart)
                guest_cart.row.status = "merged"
                events.merged(cart, guest_cart, merged_lines, adjustments)
                self._bump(guest_cart)
                self._bump(cart)
                contents = _contents(cart)
        if nothing_to_merge:
            return MergeResult(cart=self.get(user_id), merged_lines=0, adjustments=())
        self.cache.changed(guest_id, user_id)
        _settle(settle)
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

    def _merge_lines(
        self, guest_cart: _Draft, cart: _Draft
    ) -> tuple[list[MergeAdjustment], list[Callable[[], object]]]:
        """Move or add up each guest line; the adjustments, and what to do to the guest's
        holds once the lines are committed."""
        adjustments: list[MergeAdjustment] = []
        settle: list[Callable[[], object]] = []
        now = utcnow()
        for guest_line in list(guest_cart.lines):
            guest_cart.lines.remove(guest_line)
            product_id, rid = guest_line.product_id, guest_line.reservation_id
            line = cart.line(product_id)
            room = self.limits.max_units - sum(existing.quantity for existing in cart.lines)
            refusal = None
            if line is None:
                if cart.lines and guest_cart.currency != cart.currency:
                    refusal = "currency_mismatch"
                elif len(cart.lines) >= self.limits.max_lines:
                    refusal = "line_limit"
            if refusal is None and room <= 0:
                refusal = "unit_limit"
            if refusal is not None:
                adjustments.append(
                    MergeAdjustment(product_id, guest_line.quantity, line.quantity if line else 0, refusal)
                )
                settle.append(_release(product_id, rid, _held(guest_line, now)))
                continue
            if line is None:  # the line moves over with its hold, cut down to the room left
                if not cart.lines:
                    cart.row.currency = guest_cart.currency
                cart.lines.append(guest_line)
                if guest_line.quantity > room:
                    adjustments.append(MergeAdjustment(product_id, guest_line.quantity, room, "unit_limit"))
                    held = _held(guest_line, now)
                    guest_line.quantity = room
                    settle.append(_shrink_hold(rid, product_id, room, guest_line.reserved_until, held))
                continue
            requested = line.quantity + guest_line.quantity
            allowed = min(requested, MAX_LINE_QUANTITY, line.quantity + room)
            merged = self._grow_for_merge(line, allowed)
            if merged < requested:
                if merged < allowed:
                    reason = "insufficient_stock"
                else:
                    reason = "quantity_limit" if allowed == MAX_LINE_QUANTITY else "unit_limit"
                adjustments.append(MergeAdjustment(product_id, requested, merged, reason))
            settle.append(_release(product_id, rid, _held(guest_line, now)))
        return adjustments, settle

    def _grow_for_merge(self, line: Line, wanted: int) -> int:
        """Hold up to `wanted` units on the line; returns how many it holds."""
        now = utcnow()
        try:
            hold = self._hold(line, line.product_id, wanted, now)
        except products.InsufficientStock as short:
            held = 0 if _expired(line, now) else line.quantity
            wanted = held + short.extensions["available"]
            hold = self._hold(line, line.product_id, wanted, now)
        line.quantity, line.reservation_id, line.reserved_until = wanted, hold.reservation_id, hold.until
        return wanted

    def _top_up(self, user_id: str, adjustment: MergeAdjustment) -> MergeAdjustment:
        """Grow a merged line that stock cut short, now that the guest's own holds are released.

        While the user's line first grew, the guest's units were still held, so they counted as
        taken. Released, they are free again: the line takes as many as it can get up to what
        the merge allowed (another buyer may have taken some in between), in a unit of work of
        its own, reserve first.
        """
        wanted = min(adjustment.requested, MAX_LINE_QUANTITY)
        try:
            self.set_quantity(user_id, adjustment.product_id, wanted)
        except products.InsufficientStock as short:
            wanted = adjustment.merged + short.extensions["available"]
            if wanted <= adjustment.merged:
                return adjustment
            try:
                self.set_quantity(user_id, adjustment.product_id, wanted)
            except (products.InsufficientStock, QuantityLimitExceeded, UnitLimitExceeded):
                return adjustment
        except (QuantityLimitExceeded, UnitLimitExceeded):  # the cart changed meanwhile
            return adjustment
        reason = "quantity_limit" if wanted == MAX_LINE_QUANTITY < adjustment.requested else adjustment.reason
        return replace(adjustment, merged=wanted, reason=reason)

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
            _settle([_release_line(gone, utcnow()) for gone in unavailable])
            raise ProductUnavailable(
                "Some products are no longer on sale and left the cart; check the cart and try again.",
                products=[gone.product_id for gone in unavailable],
                priceChanges=changed,
            )
        if changed:
            raise PriceChanged(
                "Some prices have changed; the cart now shows them. Check out again to pay these prices.",
                priceChanges=changed,
            )
        metrics.order_placed(placed.currency, placed.total_price)
        return placed

    def _confirm_holds(self, cart: _Draft) -> None:
        """Confirm every line's hold, all or none: a line short of stock raises
        ReservationExpired after the holds confirmed here are undone."""
        now = utcnow()
        holds: list[_Hold] = []
        try:
            for line in cart.lines:
                if (hold := self._confirm_hold(line, now)) is not None:
                    holds.append(hold)
        except Exception:
            _settle([hold.undo for hold in holds])  # the lines still record the holds as they were
            raise

    def _confirm_hold(self, line: Line, now: datetime) -> _Hold | None:
        """Extend the line's hold for the checkout, or make it again; None: it is sold already
        (a retried checkout)."""
        try:
            hold = self._hold(line, line.product_id, line.quantity, now)
        except products.ReservationConflict as conflict:
            if conflict.extensions.get("reservationStatus") == "committed":
                return None
            raise
        except products.InsufficientStock as short:
            raise ReservationExpired(
                f"The hold on {line.product_id!r} has expired and its stock was sold; change the line's quantity.",
                productId=line.product_id,
                available=short.extensions["available"],
            ) from None
        line.reservation_id, line.reserved_until = hold.reservation_id, hold.until
        return hold

    def list_orders(self, owner_id: str | None, page: int, page_size: int) -> OrderPage:
        """The owner's orders, newest first (every order when owner_id is None)."""
        query = select(Order)
        if owner_id is not None:
            query = query.where(Order.owner_id == owner_id)
        with unit_of_work(write=False):
            total = db.session.scalar(select(func.count()).select_from(query.subquery()))
            orders = db.session.scalars(
                query.order_by(Order.created_at.desc(), Order.id).offset((page - 1) * page_size).limit(page_size)
            )
            return OrderPage(items=tuple(order_to_dto(order) for order in orders), total=total)

    def get_order(self, order_id: str, owner_id: str | None) -> OrderDto:
        try:
            key = uuid.UUID(order_id)
        except ValueError:
            key = None
        with unit_of_work(write=False):
            order = db.session.get(Order, key) if key else None
            if order is None or (owner_id is not None and order.owner_id != owner_id):
                raise OrderNotFound(f"No order {order_id!r}.", orderId=order_id)
            return order_to_dto(order)

    def held_reservations(self, reservation_ids: Iterable[str]) -> tuple[str, ...]:
        """The ids among `reservation_ids` that a line of an active cart holds.

        A maintenance call (`flask inventory reconcile`, a page of old holds at a time): it
        reads the `cart_lines` view, so it scans the lines of active carts. No index on the
        reservation ids inside the JSON: that would be one more index entry to write on every
        cart write, the hot path, for a job that runs now and then.
        """
        wanted = list(reservation_ids)
        query = (
            select(CartLine.reservation_id)
            .join(Cart)
            .where(Cart.status == "active", CartLine.reservation_id.in_(wanted))
        )
        with unit_of_work(write=False):
            return tuple(db.session.scalars(query))

    # --- helpers -----------------------------------------------------------------------

    def _find_cart(self, owner_id: str, *, lock: bool) -> _Draft | None:
        """The owner's active cart with its lines (they are in its row); `lock` holds the row
        until the unit of work ends, and returns it as the previous writer committed it."""
        query = (
            select(Cart)
            .where(Cart.owner_id == owner_id, Cart.status == "active")
            .execution_options(populate_existing=True)
        )
        if lock:
            query = query.with_for_update()
        cart = db.session.execute(query).scalar_one_or_none()
        return None if cart is None else _Draft(cart, cart.read_lines())

    def _locked_cart(self, owner_id: str, expected_version: int | None = None) -> _Draft:
        """The active cart, created if there is none, its row locked until the unit of work
        ends: writes to one cart queue up. Safe when two first requests race."""
        cart = self._find_cart(owner_id, lock=True)
        if cart is None:
            try:
                with db.session.begin_nested():
                    row = Cart(owner_id=owner_id, expires_at=utcnow() + self._lifetime(owner_id), lines=[])
                    db.session.add(row)
                cart = _Draft(row, [])
            except IntegrityError:  # the other request's cart, once it has committed
                cart = self._find_cart(owner_id, lock=True)
        if expected_version is not None and cart.version != expected_version:
            raise CartChanged(
                f"The cart has changed (now version {cart.version}); fetch it again.", currentVersion=cart.version
            )
        return cart

    def _bump(self, cart: _Draft) -> None:
        """Every change: a new version, and the cart lives on for its owner kind's lifetime;
        the lines are written with them, in the same UPDATE."""
        row = cart.row
        row.version += 1
        row.updated_at = utcnow()
        row.expires_at = row.updated_at + self._lifetime(row.owner_id)
        _save(cart)

    def _lifetime(self, owner_id: str) -> timedelta:
        return self.guest_cart_lifetime if owner_id.startswith("guest:") else self.user_cart_lifetime

    def _current_products(self, product_ids: list[str], fresh: Collection[str]) -> dict[str, products.Product] | None:
        """The lines' products (see CartCache.products); None when the store cannot be reached."""
        try:
            return self.cache.products(product_ids, fresh=fresh)
        except products.ProductsUnavailable:
            return None


def _save(cart: _Draft) -> None:
    """The lines back into the row (flushed with the row's other changes: one UPDATE)."""
    cart.row.write_lines(cart.lines)


def _expired(line: Line, now: datetime) -> bool:
    return line.reserved_until <= now


def _release(product_id: str, reservation_id: str, held: int | None = None) -> Callable[[], products.StockReservation]:
    return functools.partial(
        products.release_reservation, product_id=product_id, reservation_id=reservation_id, held=held
    )


def _release_line(line: Line, now: datetime) -> Callable[[], products.StockReservation]:
    return _release(line.product_id, line.reservation_id, _held(line, now))


def _shrink_hold(
    reservation_id: str, product_id: str, quantity: int, until: datetime, held: int | None
) -> Callable[[], products.StockReservation]:
    if quantity == 0:
        return _release(product_id, reservation_id, held)
    return functools.partial(_reserve, product_id, reservation_id, quantity, until, held=held)


def _settle(steps: Iterable[Callable[[], object]]) -> list:
    """Give back held units once the cart change that frees them has committed; what the
    steps that succeeded answered.

    The change stands whatever happens here: a release that fails (the products store is
    down, or the hold lapsed and was released already) only leaves units held until the
    hold lapses or `flask inventory reconcile` releases it, never sells them twice.
    """
    answers = []
    for step in steps:
        try:
            answers.append(step())
        except SETTLE_FAILURES as error:
            logger.warning("giving back held units failed; they stay held until the hold lapses: %s", error)
    return answers


def _reprice(cart: _Draft, current: Mapping[str, products.Product]) -> list[dict[str, str]]:
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


def _render(contents: _Contents, current: Mapping[str, products.Product] | None) -> CartDto:
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


def _order_from(cart: _Draft) -> Order:
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


def order_to_dto(order: Order) -> OrderDto:
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
        created_at=aware(order.created_at),
    )


def _reserve(
    product_id: str, reservation_id: str, quantity: int, until: datetime, *, held: int | None
) -> products.StockReservation:
    """Hold exactly `quantity` units under `reservation_id`; the answer has the product after."""
    return products.reserve_stock(
        product_id=product_id, quantity=quantity, reservation_id=reservation_id, expires_at=until, held=held
    )


def _held(line: Line, now: datetime) -> int | None:
    """What the line's hold has, as far as the cart knows: its quantity while live; once it may
    have lapsed, unknown (lapsed holds are released when another buyer needs their units)."""
    return None if _expired(line, now) else line.quantity
