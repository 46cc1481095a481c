"""Turns database outages into the module's own AccountsUnavailable."""

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.accounts.errors import AccountsUnavailable
from app.errors import StoreGuard
from app.extensions import db

translate_database_errors = StoreGuard(
    (OperationalError, PoolTimeout),  # down, or every pooled connection busy for DB_POOL_TIMEOUT
    lambda: AccountsUnavailable("The accounts database is unavailable; try again shortly."),
    store="postgresql",
    cleanup=db.session.rollback,
)
