"""`flask carts sweep`: give back stock whose hold expired, expire abandoned carts, and
forget Idempotency-Keys past their lifetime (idempotency.py).

A line cannot exist without its stock hold, so a line whose hold expired (no cart activity
for CART_RESERVATION_TTL) leaves the cart and its units go back on sale. Carts past their
`expires_at` (GUEST_CART_DAYS or USER_CART_DAYS after their last change) end `expired`. The
carts to visit are found by index: `holds_expire_at` is the earliest hold expiry of a cart's
lines (kept with the lines, models.py). Each cart is locked while it is swept (`SKIP LOCKED`:
a cart being changed right now is left for the next run), lines are removed before their
holds are released, so the job is safe to run while the app serves traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import or_, select

from app.cart.holds import release_line
from app.cart.idempotency import forget_expired
from app.cart.models import Cart, aware, utcnow
from app.extensions import db
from app.transactions import unit_of_work


@dataclass(frozen=True)
class SweepReport:
    lines_released: int
    carts_swept: int
    carts_expired: int
    keys_forgotten: int


def sweep(*, now: datetime | None = None) -> SweepReport:
    now = now or utcnow()
    lines_released = carts_swept = carts_expired = 0
    for cart_id in _carts_to_visit(now):
        with unit_of_work():
            cart = db.session.scalar(
                select(Cart)
                .where(Cart.id == cart_id, Cart.status == "active")
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
            if cart is None:
                continue
            lines = cart.read_lines()
            abandoned = cart.expires_at is not None and aware(cart.expires_at) < now
            leaving = lines if abandoned else [line for line in lines if line.reserved_until < now]
            released = [release_line(line, now) for line in leaving]
            cart.write_lines([line for line in lines if line not in leaving])
            if abandoned:
                cart.status = "expired"
                carts_expired += 1
            if leaving:
                cart.version += 1
                carts_swept += 1
            owner_id = cart.owner_id
        if leaving or abandoned:
            current_app.extensions["carts"].cache.changed(owner_id)
        for release in released:
            release()
        lines_released += len(leaving)
    return SweepReport(
        lines_released=lines_released,
        carts_swept=carts_swept,
        carts_expired=carts_expired,
        keys_forgotten=forget_expired(now),
    )


def _carts_to_visit(now: datetime) -> list:
    query = select(Cart.id).where(Cart.status == "active", or_(Cart.holds_expire_at < now, Cart.expires_at < now))
    with unit_of_work(write=False):
        return list(db.session.scalars(query))
