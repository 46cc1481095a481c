"""Exceptions of the cart module; re-exported by `interface.py`."""

from app.errors import DomainError


class CartError(DomainError):
    """Base of every error the cart module raises."""


class LineNotFound(CartError):
    status, code = 404, "line_not_found"
    product_id: str


class QuantityLimitExceeded(CartError):
    status, code = 409, "quantity_limit_exceeded"
    maximum: int
    product_id: str


class CartEmpty(CartError):
    status, code = 409, "cart_empty"


class ReservationExpired(CartError):
    """A line's stock was released (its hold expired); the shopper must add it again."""

    status, code = 409, "reservation_expired"
    product_id: str
    available: int


class CartChanged(CartError):
    status, code = 412, "precondition_failed"
    current_version: int


class IdempotencyKeyReused(CartError):
    status, code = 422, "idempotency_key_reused"


class IdempotencyKeyInUse(CartError):
    status, code = 409, "idempotency_key_in_use"


class OrderNotFound(CartError):
    status, code = 404, "order_not_found"
    order_id: str


class CartUnavailable(CartError):
    status, code = 503, "dependency_unavailable"


class LineLimitExceeded(CartError):
    status, code = 409, "cart_line_limit_exceeded"
    maximum: int


class UnitLimitExceeded(CartError):
    status, code = 409, "cart_unit_limit_exceeded"
    maximum: int
    product_id: str


class CurrencyMismatch(CartError):
    """A cart has one currency: that of its first line."""

    status, code = 409, "currency_mismatch"
    product_id: str
    cart_currency: str
    product_currency: str


class PriceChanged(CartError):
    """Checkout found catalog prices other than the lines'; the lines now carry the new ones."""

    status, code = 409, "price_changed"
    price_changes: list[dict[str, str]]


class ProductUnavailable(CartError):
    """Checkout found products no longer on sale; their lines left the cart."""

    status, code = 409, "product_unavailable"
    products: list[str]
    price_changes: list[dict[str, str]]
