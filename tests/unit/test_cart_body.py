"""The cart views answer a body written out by hand (app/gateway/cart_schemas.py `cart_body`)
and memoised per cart (`cart_json`); what they send must be what CartSchema, which the
OpenAPI document shows, would send."""

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.cart.interface import Cart, CartItem
from app.gateway.cart_schemas import CartSchema, cart_body, cart_json

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def item(product_id: str, price: Decimal, quantity: int = 2, **changes) -> CartItem:
    fields = {
        "product_id": product_id,
        "sku": f"SKU-{product_id.upper()}",
        "name": f"A {product_id}",
        "price": price,
        "quantity": quantity,
        "line_total": price * quantity,
        "available": 7,
        "current_price": price,
        "price_changed": False,
        "reserved_until": MOMENT,
        "reservation_expired": False,
        **changes,
    }
    return CartItem(**fields)


def cart_of(*items: CartItem, version: int = 3) -> Cart:
    return Cart(
        shopping_cart_id="c-1",
        user_id="user-1",
        currency="EUR",
        total_price=sum((line.line_total for line in items), Decimal("0.00")),
        total_quantity=sum(line.quantity for line in items),
        items=items,
        version=version,
    )


CARTS = {
    "empty": cart_of(),
    "one line": cart_of(item("mug", Decimal("19.99"))),
    "unreachable products store": cart_of(item("mug", Decimal("4.5"), available=None, current_price=None)),
    "several lines, repriced and expired": cart_of(
        item("mug", Decimal("0"), quantity=1),
        item("pen", Decimal("99999999.9"), quantity=100, current_price=Decimal("12"), price_changed=True),
        item(
            "cup",
            Decimal("1.50"),
            available=0,
            reserved_until=datetime(2020, 3, 1, tzinfo=UTC),
            reservation_expired=True,
        ),
        version=41,
    ),
}


@pytest.mark.parametrize("cart", CARTS.values(), ids=CARTS.keys())
def test_cart_body_is_what_cart_schema_dumps(cart):
    body = cart_body(cart)
    dumped = CartSchema().dump(cart)

    assert body == dumped
    assert list(body) == list(dumped)  # the same field order, the lines' too
    assert [list(line) for line in body["items"]] == [list(line) for line in dumped["items"]]


@pytest.mark.parametrize("cart", CARTS.values(), ids=CARTS.keys())
def test_cart_json_is_the_body_encoded(cart):
    assert json.loads(cart_json(cart)) == CartSchema().dump(cart)


def test_equal_carts_render_equal_bytes_and_a_change_other_bytes():
    cart = CARTS["several lines, repriced and expired"]
    twin = cart_of(*(replace(line) for line in cart.items), version=cart.version)  # equal, not the same object
    assert twin is not cart
    assert twin == cart

    assert cart_json(twin) == cart_json(cart)
    assert cart_json(twin) is cart_json(cart)  # rendered once, then served from the memo

    bumped = replace(cart, version=cart.version + 1)
    fewer = replace(cart, items=cart.items[:1])
    lines = list(cart.items)
    lines[0] = replace(lines[0], available=None)
    unavailable = replace(cart, items=tuple(lines))
    renders = {cart_json(changed) for changed in (cart, bumped, fewer, unavailable)}
    assert len(renders) == 4
    assert json.loads(cart_json(bumped))["version"] == cart.version + 1
    assert json.loads(cart_json(unavailable))["items"][0]["available"] is None
