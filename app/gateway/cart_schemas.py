"""Request and response schemas of /v1/cart (the original's shapes, with more fields)."""

import functools
import json

import marshmallow as ma
from marshmallow import validate

from app.cart.interface import MAX_LINE_QUANTITY, Cart, CartItem
from app.extensions import ProblemSchema, ProductProblemSchema
from app.gateway.fields import Money, TrimmedString


class CartItemSchema(ma.Schema):
    product_id = ma.fields.String(data_key="productId", metadata={"example": "42"})
    sku = ma.fields.String()
    name = ma.fields.String()
    price = Money(metadata={"description": "Unit price when the product was first added"})
    quantity = ma.fields.Integer()
    line_total = Money(data_key="lineTotal")
    available = ma.fields.Integer(allow_none=True, metadata={"description": "null when stock cannot be checked"})
    price_changed = ma.fields.Boolean(data_key="priceChanged")
    current_price = Money(data_key="currentPrice", allow_none=True)
    reserved_until = ma.fields.DateTime(
        data_key="reservedUntil", metadata={"description": "The line's stock is held until then"}
    )
    reservation_expired = ma.fields.Boolean(
        data_key="reservationExpired",
        metadata={
            "description": "The hold has expired: its units may go to another buyer; the line's next change "
            "(or checkout) holds them again if stock allows"
        },
    )


class CartSchema(ma.Schema):
    shopping_cart_id = ma.fields.String(data_key="shoppingCartId")
    user_id = ma.fields.String(data_key="userId")
    currency = ma.fields.String(metadata={"example": "USD"})
    total_price = Money(data_key="totalPrice", metadata={"example": "534.00"})
    total_quantity = ma.fields.Integer(data_key="totalQuantity")
    items = ma.fields.List(ma.fields.Nested(CartItemSchema))
    version = ma.fields.Integer(metadata={"description": "Bumped on every change; the ETag"})


def cart_body(cart: Cart) -> dict:
    """CartSchema's dump written out, as product_body is ProductSchema's (app/gateway/schemas.py).
    tests/unit/test_cart_body.py holds them equal."""
    return {
        "shoppingCartId": cart.shopping_cart_id,
        "userId": cart.user_id,
        "currency": cart.currency,
        "totalPrice": f"{cart.total_price:.2f}",
        "totalQuantity": cart.total_quantity,
        "items": [_item_body(item) for item in cart.items],
        "version": cart.version,
    }


def _item_body(item: CartItem) -> dict:
    return {
        "productId": item.product_id,
        "sku": item.sku,
        "name": item.name,
        "price": f"{item.price:.2f}",
        "quantity": item.quantity,
        "lineTotal": f"{item.line_total:.2f}",
        "available": item.available,
        "priceChanged": item.price_changed,
        "currentPrice": None if item.current_price is None else f"{item.current_price:.2f}",
        "reservedUntil": item.reserved_until.isoformat(),
        "reservationExpired": item.reservation_expired,
    }


CART_JSON_MEMO = 1024  # carts per worker; an entry is the frozen DTO and its body (a few KB)


@functools.lru_cache(maxsize=CART_JSON_MEMO)
def cart_json(cart: Cart) -> bytes:
    """The cart's JSON body as bytes, rendered once per distinct cart in a worker: a cached
    cart is the same DTO on every hit. Keyed by the frozen DTO itself, so an entry is found
    only for an equal cart (every field equal, version included), which renders to the same
    body: it can never answer a stale one. (Equal datetimes are the same instant; the cart
    module gives them in UTC.) Encoded as jsonify does outside debug mode: compact, ASCII,
    in the schema's key order, a newline at the end."""
    return (json.dumps(cart_body(cart), ensure_ascii=True, separators=(",", ":")) + "\n").encode()


class AddItemSchema(ma.Schema):
    product_id = TrimmedString(required=True, data_key="productId", validate=validate.Length(1, 64))
    quantity = ma.fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_LINE_QUANTITY))


class SetQuantitySchema(ma.Schema):
    quantity = ma.fields.Integer(required=True, strict=True, validate=validate.Range(0, MAX_LINE_QUANTITY))


class RemoveItemQuerySchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    all = ma.fields.Boolean(load_default=False, metadata={"description": "Remove the whole line, not one unit"})


class OrderLineSchema(ma.Schema):
    product_id = ma.fields.String(data_key="productId")
    sku = ma.fields.String()
    name = ma.fields.String()
    price = Money()
    quantity = ma.fields.Integer()
    line_total = Money(data_key="lineTotal")


class OrderSchema(ma.Schema):
    order_id = ma.fields.String(data_key="orderId")
    user_id = ma.fields.String(data_key="userId")
    shopping_cart_id = ma.fields.String(data_key="shoppingCartId")
    status = ma.fields.String(
        metadata={
            "enum": ["placed", "confirmed"],
            "description": "`placed` at checkout, then `confirmed` once the order is processed (moments later, "
            "off the request; the confirmation email goes out then)",
        }
    )
    currency = ma.fields.String()
    total_price = Money(data_key="totalPrice")
    total_quantity = ma.fields.Integer(data_key="totalQuantity")
    items = ma.fields.List(ma.fields.Nested(OrderLineSchema))
    created_at = ma.fields.DateTime(data_key="createdAt")


class MergeAdjustmentSchema(ma.Schema):
    product_id = ma.fields.String(data_key="productId")
    requested = ma.fields.Integer()
    merged = ma.fields.Integer()
    reason = ma.fields.String(
        metadata={"enum": ["quantity_limit", "insufficient_stock", "line_limit", "unit_limit", "currency_mismatch"]}
    )


class MergeResultSchema(ma.Schema):
    cart = ma.fields.Nested(CartSchema)
    merged_lines = ma.fields.Integer(data_key="mergedLines", metadata={"description": "Guest lines merged"})
    adjustments = ma.fields.List(ma.fields.Nested(MergeAdjustmentSchema))


class MergeRequestSchema(ma.Schema):
    guest_token = ma.fields.String(
        data_key="guestToken", validate=validate.Length(1, 4096), metadata={"description": "Or send X-Guest-Token"}
    )


class PriceChangeSchema(ma.Schema):
    product_id = ma.fields.String(data_key="productId")
    old_price = Money(data_key="oldPrice", metadata={"description": "What the line said"})
    new_price = Money(data_key="newPrice", metadata={"description": "What the catalog says now, and the line now"})


class CartConflictProblemSchema(ProductProblemSchema):
    """409 from a cart write: which members come with which `code`."""

    available = ma.fields.Integer(
        metadata={"description": "`insufficient_stock`, `reservation_expired`: units that can still be held"}
    )
    requested = ma.fields.Integer(metadata={"description": "`insufficient_stock`: the quantity asked for"})
    maximum = ma.fields.Integer(
        metadata={"description": "`quantity_limit_exceeded`, `cart_line_limit_exceeded`, `cart_unit_limit_exceeded`"}
    )
    cart_currency = ma.fields.String(data_key="cartCurrency", metadata={"description": "`currency_mismatch`"})
    product_currency = ma.fields.String(data_key="productCurrency", metadata={"description": "`currency_mismatch`"})
    price_changes = ma.fields.List(
        ma.fields.Nested(PriceChangeSchema),
        data_key="priceChanges",
        metadata={"description": "`price_changed`, `product_unavailable`: lines repriced"},
    )
    products = ma.fields.List(
        ma.fields.String(), metadata={"description": "`product_unavailable`: products that left the cart"}
    )


class CartChangedProblemSchema(ProblemSchema):
    current_version = ma.fields.Integer(data_key="currentVersion", metadata={"description": "The cart's version now"})
