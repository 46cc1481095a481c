"""Exceptions of the cart module; re-exported by `interface.py`."""

from app.errors import DomainError


class CartError(DomainError):
    """Base of every error the cart module raises."""


class LineNotFound(CartError):
    status, code = 404, "line_not_found"


class QuantityLimitExceeded(CartError):
    status, code = 409, "quantity_limit_exceeded"
