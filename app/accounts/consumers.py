"""The accounts module's event consumers (app/events/consumers.py): the emails that follow events.

- `order-confirmation-email` (order.placed): the buyer's confirmation naming the order id,
  sent to the address of the user the order belongs to (`ownerId`); guests and unknown users
  get none.
- `low-stock-email` (product.low_stock): every active administrator is told which product's
  available units dropped below LOW_STOCK_THRESHOLD.

Each runs in the consumer's unit of work, the email sent last: a delivery that fails (the mail
relay down) raises, nothing is recorded, and the event is delivered again. Unlike the emails of
a request (service.Accounts._send), a failure is not swallowed: it is what retries are for.
"""

from __future__ import annotations

import logging
import uuid

from flask import Flask, current_app
from sqlalchemy import String, cast, select

from app.accounts import emails
from app.accounts.mail import Mailer
from app.accounts.models import User
from app.events.consumers import Consumer, register
from app.extensions import db

logger = logging.getLogger(__name__)
ORDER_CONFIRMATION = "order-confirmation-email"
LOW_STOCK = "low-stock-email"


def _mailer() -> Mailer:
    return current_app.extensions["accounts"].mailer


def send_order_confirmation(event: dict) -> None:
    order = event["payload"]
    owner = order["ownerId"]
    try:
        user = db.session.get(User, uuid.UUID(owner))
    except ValueError:  # a guest ("guest:<uuid>"): guests cannot check out, and have no address
        user = None
    if user is None:
        logger.info("order %s: its owner %s is no user; no confirmation sent", order["orderId"], owner)
        return
    _mailer().send(emails.order_confirmation(user.email, order))


def administrators() -> list[User]:
    """Active users with the admin role. `roles` is a JSON list of fixed names, so matching its
    text for `"admin"` finds them on PostgreSQL and SQLite alike; checked again in Python."""
    candidates = db.session.scalars(
        select(User).where(User.is_active.is_(True), cast(User.roles, String).like('%"admin"%')).order_by(User.email)
    )
    return [user for user in candidates if "admin" in (user.roles or ())]


def send_low_stock_alert(event: dict) -> None:
    admins = administrators()
    if not admins:
        logger.warning("product %s is low on stock, and there is no administrator to tell", event["aggregateId"])
    for admin in admins:  # one failing address fails the event: all are mailed again on the retry
        _mailer().send(emails.low_stock(admin.email, event["payload"]))


def register_consumers(app: Flask) -> None:
    register(app, Consumer(ORDER_CONFIRMATION, frozenset({"order.placed"}), send_order_confirmation))
    register(app, Consumer(LOW_STOCK, frozenset({"product.low_stock"}), send_low_stock_alert))
