"""The cart module's event consumers (app/events/consumers.py), internal to the module.

`order-status`: an order placed at checkout becomes `confirmed` once its `order.placed` event
is consumed, off the checkout request. The UPDATE only moves a `placed` order on, so a redelivery
changes nothing.
"""

from __future__ import annotations

import logging
import uuid

from flask import Flask
from sqlalchemy import update

from app.cart.models import Order
from app.events.consumers import Consumer, register
from app.extensions import db

logger = logging.getLogger(__name__)
ORDER_STATUS = "order-status"


def confirm_order(event: dict) -> None:
    order_id = event["payload"]["orderId"]
    changed = db.session.execute(
        update(Order).where(Order.id == uuid.UUID(order_id), Order.status == "placed").values(status="confirmed")
    ).rowcount
    if not changed:
        logger.warning("order %s was not placed (unknown, or moved on already): left as it is", order_id)


def register_consumers(app: Flask) -> None:
    register(app, Consumer(ORDER_STATUS, frozenset({"order.placed"}), confirm_order))
