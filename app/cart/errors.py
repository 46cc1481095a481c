"""Exceptions of the cart module; re-exported by `interface.py`."""

from app.errors import DomainError


class CartError(DomainError):
    """Base of every error the cart module raises."""


class LineNotFound(CartError):
    status, code = 404, "line_not_found"


class QuantityLimitExceeded(CartError):
    status, code = 409, "quantity_limit_exceeded"


class CartEmpty(CartError):
    status, code = 409, "cart_empty"


class ReservationExpired(CartError):
    """A line's stock was released (its hold expired); the shopper must add it again."""

    status, code = 409, "reservation_expired"


class CartChanged(CartError):
    status, code = 412, "precondition_failed"


class IdempotencyKeyReused(CartError):
    status, code = 422, "idempotency_key_reused"


class IdempotencyKeyInUse(CartError):
    status, code = 409, "idempotency_key_in_use"


class OrderNotFound(CartError):
    status, code = 404, "order_not_found"


class CartUnavailable(CartError):
    status, code = 503, "dependency_unavailable"


class LineLimitExceeded(CartError):
    status, code = 409, "cart_line_limit_exceeded"


class UnitLimitExceeded(CartError):
    status, code = 409, "cart_unit_limit_exceeded"


class CurrencyMismatch(CartError):
    """A cart has one currency: that of its first line."""

    status, code = 409, "currency_mismatch"


class PriceChanged(CartError):
    """Checkout found catalog prices other than the lines'; the lines now carry the new ones."""

    status, code = 409, "price_changed"


class ProductUnavailable(CartError):
    """Checkout found products no longer on sale; their lines left the cart."""

    status, code = 409, "product_unavailable"
