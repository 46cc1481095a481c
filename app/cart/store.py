"""Finding, creating and locking an owner's cart; reading it; what every write does to it.

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

Reads go through the CartCache (cache.py): every committed write moves the owner's cache
generation on before it answers, so a read never shows a cart older than the last write; that
and the other lines' product snapshots are one Redis round trip after the commit
(CartCache.after_write).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.cart import holds
from app.cart.cache import CartCache
from app.cart.contents import Contents, Draft, render
from app.cart.dto import Cart as CartDto
from app.cart.errors import CartChanged
from app.cart.models import Cart, CartLine, Line, utcnow
from app.extensions import db
from app.products import interface as products
from app.transactions import unit_of_work

MAX_LINE_QUANTITY = 100


@dataclass(frozen=True)
class Limits:
    """What one cart may hold (CART_MAX_LINES, CART_MAX_UNITS), against hoarding."""

    max_lines: int = 50
    max_units: int = 500


class CartStore:
    """The settings and the cart's row, shared by the parts of `Carts` (service.py)."""

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
        return render(contents, current), current is not None

    def _read(self, owner_id: str) -> Contents:
        """The owner's active cart as committed; an empty one is created if there is none."""
        with unit_of_work(write=False):
            cart = self._find_cart(owner_id, lock=False)
            if cart is not None:
                return cart.contents()
        with unit_of_work():
            return self._locked_cart(owner_id).contents()

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

    # --- inside a write ----------------------------------------------------------------

    def _find_cart(self, owner_id: str, *, lock: bool) -> Draft | None:
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
        return None if cart is None else Draft(cart, cart.read_lines())

    def _locked_cart(self, owner_id: str, expected_version: int | None = None) -> Draft:
        """The active cart, created if there is none, its row locked until the unit of work
        ends: writes to one cart queue up. Safe when two first requests race."""
        cart = self._find_cart(owner_id, lock=True)
        if cart is None:
            try:
                with db.session.begin_nested():
                    row = Cart(owner_id=owner_id, expires_at=utcnow() + self._lifetime(owner_id), lines=[])
                    db.session.add(row)
                cart = Draft(row, [])
            except IntegrityError:  # the other request's cart, once it has committed
                cart = self._find_cart(owner_id, lock=True)
        if expected_version is not None and cart.version != expected_version:
            raise CartChanged(
                f"The cart has changed (now version {cart.version}); fetch it again.", current_version=cart.version
            )
        return cart

    def _bump(self, cart: Draft) -> None:
        """Every change: a new version, and the cart lives on for its owner kind's lifetime;
        the lines are written with them, in the same UPDATE."""
        row = cart.row
        row.version += 1
        row.updated_at = utcnow()
        row.expires_at = row.updated_at + self._lifetime(row.owner_id)
        cart.save()

    def _lifetime(self, owner_id: str) -> timedelta:
        return self.guest_cart_lifetime if owner_id.startswith("guest:") else self.user_cart_lifetime

    def _current_products(self, product_ids: list[str], fresh: Collection[str]) -> dict[str, products.Product] | None:
        """The lines' products (see CartCache.products); None when the store cannot be reached."""
        try:
            return self.cache.products(product_ids, fresh=fresh)
        except products.ProductsUnavailable:
            return None

    def _hold(self, line: Line | None, product_id: str, quantity: int, now: datetime) -> holds.Hold:
        """Hold `quantity` units for the line (a new reservation for a new line); a hold that
        lapsed, even one released for another buyer, is held again under its id."""
        until = now + self.reservation_ttl
        if line is None:
            reservation_id = str(uuid.uuid4())
            reservation = holds.reserve(product_id, reservation_id, quantity, until, held=0)
            return holds.Hold(reservation_id, product_id, quantity, until, 0, until, reservation.product)
        reservation = holds.reserve(product_id, line.reservation_id, quantity, until, held=holds.held_units(line, now))
        return holds.Hold(
            line.reservation_id, product_id, quantity, until, line.quantity, line.reserved_until, reservation.product
        )
