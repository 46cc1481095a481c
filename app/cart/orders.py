"""Orders read back: a page of an owner's orders, one order, and an order as answered."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select

from app.cart.contents import CENT
from app.cart.dto import Order as OrderDto
from app.cart.dto import OrderLine as OrderLineDto
from app.cart.dto import OrderPage
from app.cart.errors import OrderNotFound
from app.cart.models import Order, aware
from app.extensions import db
from app.transactions import unit_of_work


class OrderReads:
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
                raise OrderNotFound(f"No order {order_id!r}.", order_id=order_id)
            return order_to_dto(order)


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
