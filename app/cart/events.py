"""The cart module's events (app/events), recorded inside the unit of work of their change."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from app.cart.dto import MergeAdjustment
from app.cart.dto import Order as OrderDto
from app.events.envelope import new_event
from app.events.outbox import record

if TYPE_CHECKING:
    from app.cart.contents import Draft


def _cart_event(event_type: str, cart: Draft, **payload: object) -> None:
    record(new_event(event_type, str(cart.row.id), {"cartId": str(cart.row.id), "ownerId": cart.owner_id, **payload}))


def line_changed(cart: Draft, product_id: str, before: int, after: int, unit_price: Decimal) -> None:
    """One line's quantity went from `before` to `after` units (0: no line)."""
    if after == before:
        return  # a hold renewed, the contents unchanged
    if before == 0:
        _cart_event(
            "cart.item_added",
            cart,
            productId=product_id,
            quantity=after,
            unitPrice=str(unit_price),
            currency=cart.currency,
        )
    elif after == 0:
        _cart_event("cart.item_removed", cart, productId=product_id, previousQuantity=before)
    else:
        _cart_event("cart.item_changed", cart, productId=product_id, quantity=after, previousQuantity=before)


def emptied(cart: Draft, product_ids: list[str]) -> None:
    if product_ids:
        _cart_event("cart.emptied", cart, productIds=product_ids)


def merged(cart: Draft, guest_cart: Draft, merged_lines: int, adjustments: list[MergeAdjustment]) -> None:
    _cart_event(
        "cart.merged",
        cart,
        guestId=guest_cart.owner_id,
        guestCartId=str(guest_cart.row.id),
        mergedLines=merged_lines,
        adjustments=[
            {"productId": item.product_id, "requested": item.requested, "merged": item.merged, "reason": item.reason}
            for item in adjustments
        ],
    )


def checked_out(cart: Draft, order: OrderDto) -> None:
    _cart_event("cart.checked_out", cart, orderId=order.order_id)
    payload = {
        "orderId": order.order_id,
        "ownerId": order.user_id,
        "cartId": order.shopping_cart_id,
        "status": order.status,
        "currency": order.currency,
        "totalPrice": str(order.total_price),
        "totalQuantity": order.total_quantity,
        "items": [
            {
                "productId": item.product_id,
                "sku": item.sku,
                "name": item.name,
                "unitPrice": str(item.price),
                "quantity": item.quantity,
                "lineTotal": str(item.line_total),
            }
            for item in order.items
        ],
    }
    record(new_event("order.placed", order.order_id, payload))
