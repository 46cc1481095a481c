"""The stock hold behind each cart line: making, shrinking, releasing and undoing it.

A hold lasts CART_RESERVATION_TTL after the line's last change. Past it, the line shows
`reservation_expired` and its units may be taken by another buyer (the products module
releases expired holds when it needs their units); the line's next write holds its stock
again under the same reservation id. Each hold change tells the products module how many
units the line believes its hold has (`held`: the line's quantity while the hold is live,
0 for a new line, None once it may have lapsed), so that a right guess is one MongoDB
command; the change returns the product as it is right after it, which gives a new line its
snapshot and the answer the changed line's figures, with no second read.

Units are held before the cart change that needs them and given back (`settle`) only after
the change that frees them has committed (see service.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from app.cart.models import Line, utcnow
from app.products import interface as products

logger = logging.getLogger(__name__)
SETTLE_FAILURES = (
    products.ProductsUnavailable,
    products.ReservationBusy,
    products.ReservationConflict,
    products.ReservationNotFound,
)


@dataclass
class Hold:
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
            release(self.product_id, self.reservation_id, held=self.quantity)()
        else:
            reserve(self.product_id, self.reservation_id, self.previous, self.previous_until, held=self.quantity)


def reserve(
    product_id: str, reservation_id: str, quantity: int, until: datetime, *, held: int | None
) -> products.StockReservation:
    """Hold exactly `quantity` units under `reservation_id`; the answer has the product after."""
    return products.reserve_stock(
        product_id=product_id, quantity=quantity, reservation_id=reservation_id, expires_at=until, held=held
    )


def release(product_id: str, reservation_id: str, held: int | None = None) -> Callable[[], products.StockReservation]:
    return functools.partial(
        products.release_reservation, product_id=product_id, reservation_id=reservation_id, held=held
    )


def release_line(line: Line, now: datetime) -> Callable[[], products.StockReservation]:
    return release(line.product_id, line.reservation_id, held_units(line, now))


def shrink(
    reservation_id: str, product_id: str, quantity: int, until: datetime, held: int | None
) -> Callable[[], products.StockReservation]:
    """The step that cuts a hold down to `quantity` units (0: releases it), for `settle`."""
    if quantity == 0:
        return release(product_id, reservation_id, held)
    return functools.partial(reserve, product_id, reservation_id, quantity, until, held=held)


def settle(steps: Iterable[Callable[[], object]]) -> list:
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


def expired(line: Line, now: datetime) -> bool:
    return line.reserved_until <= now


def held_units(line: Line, now: datetime) -> int | None:
    """What the line's hold has, as far as the cart knows: its quantity while live; once it may
    have lapsed, unknown (lapsed holds are released when another buyer needs their units)."""
    return None if expired(line, now) else line.quantity
