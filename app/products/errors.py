"""Exceptions of the products module; re-exported by `interface.py`."""

from app.errors import DomainError


class ProductsError(DomainError):
    """Base of every error the products module raises."""


class ProductNotFound(ProductsError):
    status, code = 404, "product_not_found"
    product_id: str


class ProductIdTaken(ProductsError):
    status, code = 409, "product_id_taken"
    product_id: str


class SkuTaken(ProductsError):
    status, code = 409, "sku_taken"
    sku: str


class VersionMismatch(ProductsError):
    status, code = 412, "precondition_failed"
    current_version: int


class InsufficientStock(ProductsError):
    status, code = 409, "insufficient_stock"
    product_id: str
    available: int
    requested: int


class StockBelowReserved(ProductsError):
    status, code = 409, "stock_below_reserved"
    stock: int
    reserved: int
    available: int


class ReservationNotFound(ProductsError):
    status, code = 404, "reservation_not_found"
    reservation_id: str


class ReservationConflict(ProductsError):
    """The reservation id is in use for another product, or is already closed."""

    status, code = 409, "reservation_conflict"
    reservation_id: str
    reservation_status: str | None  # "committed" when it was sold already


class ReservationIdInvalid(ProductsError):
    """A reservation id must be usable as a field name of the product document (holds.py)."""

    status, code = 400, "reservation_id_invalid"
    reservation_id: str


class ReservationBusy(ProductsError):
    """Another call is changing this reservation right now; retrying later succeeds."""

    status, code = 409, "reservation_busy"


class ProductsUnavailable(ProductsError):
    status, code = 503, "dependency_unavailable"
