"""Turns database outages into the module's own CartUnavailable."""

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.cart.errors import CartUnavailable
from app.errors import StoreGuard
from app.extensions import db

translate_database_errors = StoreGuard(
    (OperationalError, PoolTimeout),  # down, or every pooled connection busy for DB_POOL_TIMEOUT
    lambda: CartUnavailable("The cart database is unavailable; try again shortly."),
    store="postgresql",
    cleanup=db.session.rollback,
)
