"""Shared fixtures: a real MongoDB wire-protocol server (or MONGODB_URI), the app, tokens."""

from __future__ import annotations

import os
from collections.abc import Iterator

import mongoengine
import pytest
from flask_jwt_extended import create_access_token

from app import create_app
from app.config import load_settings
from tests.mongo_server import MongoServer, free_port

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory) -> Iterator[str]:
    """MONGODB_URI when set (a real MongoDB), else an nx-27017 started for this session."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    server = MongoServer(tmp_path_factory.mktemp("mongo"), free_port())
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def settings(mongo_uri):
    return load_settings({"APP_ENV": "test", "MONGODB_URI": mongo_uri, "JWT_SECRET": TEST_SECRET}).override(
        throttle_limit=1_000_000, service_api_keys=("test-service-key",), catalog_cache_ttl=0
    )


@pytest.fixture(scope="session")
def app(settings):
    return create_app(settings)


@pytest.fixture(autouse=True)
def clean_store(app):
    """Every test starts from an empty products store."""
    database = mongoengine.get_db()
    for name in ("products", "reservations", "stock_movements"):
        database[name].delete_many({})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def token(app):
    def mint(*roles: str, subject: str = "user-1", **claims) -> str:
        with app.app_context():
            return create_access_token(identity=subject, additional_claims={"roles": list(roles), **claims})

    return mint


@pytest.fixture
def admin_headers(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('admin', subject='admin-1')}"}


@pytest.fixture
def customer_headers(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer')}"}
