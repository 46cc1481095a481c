"""Exceptions of the products module; re-exported by `interface.py`."""

from app.errors import DomainError


class ProductsError(DomainError):
    """Base of every error the products module raises."""


class ProductNotFound(ProductsError):
    status, code = 404, "product_not_found"


class ProductIdTaken(ProductsError):
    status, code = 409, "product_id_taken"


class SkuTaken(ProductsError):
    status, code = 409, "sku_taken"


class VersionMismatch(ProductsError):
    status, code = 412, "precondition_failed"


class InsufficientStock(ProductsError):
    status, code = 409, "insufficient_stock"


class StockBelowReserved(ProductsError):
    status, code = 409, "stock_below_reserved"


class ReservationNotFound(ProductsError):
    status, code = 404, "reservation_not_found"


class ReservationConflict(ProductsError):
    """The reservation id is in use for another product, or is already closed."""

    status, code = 409, "reservation_conflict"


class ReservationIdInvalid(ProductsError):
    """A reservation id must be usable as a field name of the product document (holds.py)."""

    status, code = 400, "reservation_id_invalid"


class ReservationBusy(ProductsError):
    """Another call is changing this reservation right now; retrying later succeeds."""

    status, code = 409, "reservation_busy"


class ProductsUnavailable(ProductsError):
    status, code = 503, "dependency_unavailable"
