"""Connection, indexes and health of the products store (MongoDB)."""

from __future__ import annotations

import logging

import mongoengine
from pymongo.errors import ConnectionFailure, PyMongoError

from app.errors import StoreGuard
from app.products.errors import ProductsUnavailable
from app.products.models import DOCUMENTS

logger = logging.getLogger(__name__)

# Fail fast when MongoDB is unreachable instead of hanging a worker for pymongo's 30 s
# default; any of these can be overridden in MONGODB_URI's query string.
CLIENT_DEFAULTS = {
    "serverSelectionTimeoutMS": 3000,
    "connectTimeoutMS": 3000,
    "socketTimeoutMS": 10000,
    "waitQueueTimeoutMS": 3000,  # the bulkhead: a request waits this long for a pooled connection
}


def connect(uri: str) -> None:
    mongoengine.disconnect()
    mongoengine.connect(host=uri, connect=False, uuidRepresentation="standard", **_defaults_not_in(uri))


def _defaults_not_in(uri: str) -> dict[str, int]:
    query = uri.partition("?")[2].lower()
    return {key: value for key, value in CLIENT_DEFAULTS.items() if key.lower() + "=" not in query}


translate_store_errors = StoreGuard(
    (ConnectionFailure,),
    lambda: ProductsUnavailable("The products store is unavailable; try again shortly."),
    store="mongodb",
)


def ping() -> bool:
    try:
        mongoengine.get_connection().admin.command("ping")
    except PyMongoError:
        return False
    return True


def ensure_indexes() -> None:
    """Create every declared index; safe to run again and from several processes.

    A store that is down at start-up is logged, not fatal: the app still starts, reports
    `degraded` on /v1/health, and the next start creates the indexes.
    """
    try:
        for document in DOCUMENTS:
            document.ensure_indexes()
    except ConnectionFailure as error:
        logger.error("products store unreachable at start-up, indexes not checked: %s", error)
