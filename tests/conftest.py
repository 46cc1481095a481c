"""Shared fixtures: a real MongoDB wire-protocol server (or MONGODB_URI), the app, tokens."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import hypothesis
import mongoengine
import pika
import pytest
from flask_jwt_extended import create_access_token
from flask_migrate import upgrade
from sqlalchemy import create_engine, select, text

from app import clock, create_app
from app.accounts.models import User, utcnow
from app.accounts.passwords import hash_password
from app.config import load_settings
from app.extensions import db, limiter
from tests.mongo_server import MongoServer, free_port
from tests.redis_server import RedisServer
from tests.store_slots import StoreSlot, taken_slot

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
GATEWAY_KEY = "test-gateway-key"  # what the gateway sends to the services it calls
# argon2id at its cheapest: about 5 ms a hash instead of about 150 (the tests hash hundreds of passwords).
CHEAP_HASHING = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8192"}
CART_KEY = "test-cart-key"  # what the cart service sends to the products service

# Examples per property-based test (the cart model's runs): 25 in the suite, 5 under
# scripts/mutation.sh (`--hypothesis-profile=mutation`), where each surviving mutant runs it again.
hypothesis.settings.register_profile("suite", max_examples=25)
hypothesis.settings.register_profile("mutation", max_examples=5)
hypothesis.settings.load_profile("suite")


@pytest.fixture(scope="session")
def store_slot() -> Iterator[StoreSlot | None]:
    """Stores prepared by scripts/mutation.sh for this session (tests/store_slots.py), or None."""
    with taken_slot() as slot:
        yield slot


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory, store_slot) -> Iterator[str]:
    """MONGODB_URI when set (a real MongoDB), else an nx-27017 started for this session."""
    if os.environ.get("MONGODB_URI") or store_slot:
        yield os.environ.get("MONGODB_URI") or store_slot.mongo_uri
        return
    server = MongoServer(tmp_path_factory.mktemp("mongo"), free_port())
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def database_url(store_slot) -> Iterator[str]:
    """TEST_DATABASE_URL (its schema is replaced), else a database of this session's own on the
    local PostgreSQL, dropped at the end, so that concurrent test runs never meet."""
    if os.environ.get("TEST_DATABASE_URL") or store_slot:
        yield os.environ.get("TEST_DATABASE_URL") or store_slot.database_url
        return
    with scratch_database(f"storefront_test_{os.getpid()}") as name:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new, empty database on the local PostgreSQL, dropped when the block ends."""
    server = create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield name
    finally:
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        server.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """TEST_REDIS_URL when set, else a redis-server of this session's own, so that concurrent
    test runs (two checkouts, or scripts/mutation.sh's parallel mutants) never meet."""
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """TEST_RABBITMQ_URL when set, else a virtual host of this session's own on the local
    RabbitMQ (127.0.0.1:5672, guest/guest; started with `rabbitmq-server -detached` when it is
    down), deleted at the end with everything in it, so that concurrent test runs never meet."""
    if os.environ.get("TEST_RABBITMQ_URL"):
        yield os.environ["TEST_RABBITMQ_URL"]
        return
    broker = "amqp://guest:guest@127.0.0.1:5672/"
    if not _broker_answers(broker):
        subprocess.run(["rabbitmq-server", "-detached"], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 60
        while not _broker_answers(broker):
            if time.monotonic() > deadline:
                pytest.fail("RabbitMQ did not start within 60 s (rabbitmq-server -detached)")
            time.sleep(0.5)
    vhost = f"storefront_test_{os.getpid()}"
    _rabbitmqctl("delete_vhost", vhost, check=False)  # left by an earlier run with this pid
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"{broker}{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost, check=False)


def _broker_answers(url: str) -> bool:
    parameters = pika.URLParameters(f"{url}?connection_attempts=1&socket_timeout=2&blocked_connection_timeout=2")
    try:
        pika.BlockingConnection(parameters).close()
    except pika.exceptions.AMQPError:
        return False
    return True


def _rabbitmqctl(*arguments: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", "-q", *arguments], check=check, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def settings(mongo_uri, database_url, mail_dir):
    environment = {
        "APP_ENV": "test",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "MAIL_BACKEND": "file",
        "MAIL_FILE_DIR": str(mail_dir),
        **CHEAP_HASHING,
    }
    return load_settings(environment).override(
        throttle_limit=1_000_000,
        auth_rate_limit="1000 per second",
        guest_rate_limit="1000 per second",
        service_api_key=GATEWAY_KEY,
        service_caller_keys=(("gateway", GATEWAY_KEY), ("cart", CART_KEY)),
        catalog_cache_ttl=0,
    )


@pytest.fixture(scope="session")
def mail_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mail")


@pytest.fixture(scope="session")
def app(settings, store_slot):
    app = create_app(settings)
    if store_slot:  # migrated when it was prepared
        return app
    with app.app_context():
        db.session.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        db.session.commit()
        upgrade()  # the migrations, exactly as `flask db upgrade` runs them
    return app


@pytest.fixture(scope="session")
def service_app(app, settings):
    """A service process serving products, cart and accounts to other services (no gateway):
    the only kind of process with /internal routes. It shares the stores with `app`."""
    storage, strategy = limiter._storage, limiter._limiter
    service = create_app(settings.override(modules=("products", "cart", "accounts")))
    limiter._storage, limiter._limiter = storage, strategy
    return service


def empty_stores(app) -> None:
    """Empty the products store and every SQL table, and forget rate-limit counts.

    DELETE, children first, in one round trip: about 2 ms when a test left a few rows, where
    TRUNCATE takes about 100 ms (it replaces each table's files). Not a transaction rolled back
    at the end of each test: the tests drive the app through its own units of work, over
    several connections, threads and processes, and what they check (locks, isolation, what
    another worker sees) happens only when those commit."""
    database = mongoengine.get_db()
    for name in ("products", "reservations", "stock_movements"):
        database[name].delete_many({})
    with app.app_context():
        tables = reversed(db.metadata.sorted_tables)
        db.session.execute(text("; ".join(f"DELETE FROM {table.name}" for table in tables)))  # noqa: S608 (our tables)
        db.session.commit()
        limiter.reset()


@pytest.fixture(autouse=True)
def clean_stores(request):
    """Every test that uses the stores (through the app or its settings) starts from empty
    stores, no sent mail and no login failures counted. A test that does not, such as most
    unit tests, starts no store at all."""
    if not {"database_url", "mongo_uri"} & set(request.fixturenames):
        return
    empty_stores(request.getfixturevalue("app"))
    for message in request.getfixturevalue("mail_dir").glob("*.eml"):
        message.unlink()


@pytest.fixture
def other_app(settings):
    """Build apps with changed settings; the shared limiter gets its storage back afterwards."""
    storage, strategy = limiter._storage, limiter._limiter
    built = []

    def build(**changes):
        app = create_app(settings.override(**changes))
        built.append(app)
        return app

    yield build
    for app in built:
        with app.app_context():
            db.engine.dispose()
    limiter._storage, limiter._limiter = storage, strategy


@pytest.fixture
def advance_clock(monkeypatch):
    """Moves app.clock, which every expiry decision reads (holds, carts, idempotency keys,
    circuit breakers), on by the given seconds: a test waits without sleeping."""
    real_now, offset = clock.now, [timedelta()]

    def advance(seconds: float) -> None:
        offset[0] += timedelta(seconds=seconds)
        monkeypatch.setattr(clock, "now", lambda: real_now() + offset[0])

    return advance


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def token(app):
    """An access token of a real, verified user with these roles (created on first use)."""

    def mint(*roles: str, subject: str = "user-1") -> str:
        with app.app_context():
            user = db.session.scalar(select(User).where(User.email == f"{subject}@example.test"))
            if user is None:
                user = User(email=f"{subject}@example.test", password_hash=hash_password("unused-password-1"))
                db.session.add(user)
            user.roles = sorted(set(roles) | {"customer"}) if "guest" not in roles else []
            user.email_verified_at = utcnow()
            db.session.commit()
            claims = {"roles": list(roles), "gen": user.session_generation}
            return create_access_token(identity=str(user.id), additional_claims=claims)

    return mint


@pytest.fixture
def admin_headers(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('admin', subject='admin-1')}"}


@pytest.fixture
def customer_headers(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer')}"}
