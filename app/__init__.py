"""The composition root: builds the Flask app from settings and registers the modules."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from swagger_ui_bundle import swagger_ui_path
from werkzeug.middleware.proxy_fix import ProxyFix

from app import cli, logs, metrics, tracing
from app.accounts import interface as accounts_interface
from app.accounts import setup as accounts
from app.cart import interface as cart_interface
from app.cart import setup as cart
from app.config import Settings, load_settings, validate
from app.errors import keep_retry_after, register_error_handlers
from app.events import setup as events
from app.extensions import StorefrontApi, cache, cors, db, jwt, limiter, migrate
from app.gateway import setup as gateway
from app.http_client import ServiceClient
from app.products import interface as products_interface
from app.products import setup as products
from app.sql_pool import MeasuredPool, count_connections_in_use
from app.transactions import sqlite_transactions

SWAGGER_UI_ASSETS = "/api/assets"
# Response headers a browser client may read across origins.
EXPOSED_HEADERS = [
    "ETag",
    "Location",
    "X-Pagination",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-Request-ID",
]
SQLITE_BUSY_TIMEOUT_SECONDS = 15
# A pooled PostgreSQL connection idle longer than this is pinged before it is used again.
IDLE_PING_SECONDS = 5.0
MIGRATIONS = str(Path(__file__).resolve().parent.parent / "migrations")
PORTS = {port.module: port for port in (products_interface.port, cart_interface.port, accounts_interface.port)}


def create_app(config: Settings | None = None) -> Flask:
    """The app for `config` (tests pass loaded settings they override), else for the
    environment's settings; either way validated once. The app's own code reads them from
    `app.extensions["settings"]`; app.config holds what Flask and its extensions read."""
    if config is None:
        settings = load_settings()
    else:
        validate(config)
        settings = config
    logs.configure(settings)

    docs = str(swagger_ui_path) if settings.docs_enabled else None
    app = Flask(__name__, static_folder=docs, static_url_path=SWAGGER_UI_ASSETS)
    app.config.from_mapping(flask_config(settings))
    app.json.sort_keys = False
    if settings.trusted_proxies:
        app.wsgi_app = behind_proxies(app.wsgi_app, settings.trusted_proxies)

    db.init_app(app)
    with app.app_context():
        tracing.instrument(app, settings, db.engine)  # first: before the Mongo client, other hooks
        if db.engine.dialect.name == "sqlite":
            sqlite_transactions(db.engine)
        else:
            ping_idle_connections(db.engine, IDLE_PING_SECONDS)
            count_connections_in_use(db.engine)
    migrate.init_app(app, db, directory=MIGRATIONS)
    api = StorefrontApi()  # one per app: an app's OpenAPI document describes what that app serves
    api.init_app(app)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    api.spec.components.security_scheme("serviceKey", {"type": "apiKey", "in": "header", "name": "X-Service-Key"})
    jwt.init_app(app)
    metrics.init_app(app, settings)  # before the limiter, so that the requests it refuses are counted too
    app.after_request(keep_retry_after)  # before the limiter's own hook, so that it runs after it
    limiter.init_app(app)
    cache.init_app(app)
    cors.init_app(app, origins=list(settings.cors_origins), supports_credentials=True, expose_headers=EXPOSED_HEADERS)
    register_error_handlers(app)
    logs.init_app(app)
    app.extensions["remote_ports"] = {
        module: ServiceClient(PORTS[module], settings.service_url(module), settings)
        for module in settings.remote_modules()
    }

    app.extensions["settings"] = settings
    if settings.serves("gateway"):
        gateway.register(app, api)  # first, so the public API leads the docs
    else:
        gateway.register_health(app, api)
    if settings.serves("products"):
        products.register(app, settings)
    if settings.serves("accounts"):
        accounts.register(app, settings)
    if settings.serves("cart"):
        cart.register(app, settings)
    events.register(app)  # the audit trail's consumer; the modules registered theirs above
    if settings.serves_internal_api():  # a service process: its listener is not the public one
        for module in PORTS:
            if settings.serves(module):
                app.register_blueprint(PORTS[module].blueprint())
                PORTS[module].document(api.spec)
    cli.init_app(app)
    return app


def flask_config(settings: Settings) -> dict[str, object]:
    return {
        "API_TITLE": "Storefront API",
        "API_VERSION": "1",
        "MAX_CONTENT_LENGTH": settings.max_content_length,
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api" if settings.docs_enabled else None,  # None: no /api routes
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "/",
        "OPENAPI_SWAGGER_UI_URL": SWAGGER_UI_ASSETS + "/",
        # A token typed into Swagger UI stays in that page only (not in localStorage), and the
        # spec's URL is never sent to swagger.io's validator.
        "OPENAPI_SWAGGER_UI_CONFIG": {"persistAuthorization": False, "validatorUrl": None},
        "API_SPEC_OPTIONS": {
            "info": {
                "description": "Products, cart and accounts behind one gateway. Errors are "
                "`application/problem+json` with a machine-readable `code`."
            }
        },
        "SQLALCHEMY_DATABASE_URI": settings.database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": database_bounds(settings),
        "JWT_SECRET_KEY": settings.jwt_secret,
        "JWT_ALGORITHM": settings.auth.algorithm,
        "JWT_PRIVATE_KEY": settings.auth.private_key,
        "JWT_PUBLIC_KEY": settings.auth.public_key,
        "JWT_ENCODE_ISSUER": settings.auth.issuer,
        "JWT_DECODE_ISSUER": settings.auth.issuer,
        "JWT_ENCODE_AUDIENCE": settings.auth.audience,
        "JWT_DECODE_AUDIENCE": settings.auth.audience,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=settings.auth.access_ttl),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(seconds=settings.auth.refresh_ttl),
        "RATELIMIT_DEFAULT": f"{settings.throttle_limit} per {settings.throttle_ttl} seconds",
        "RATELIMIT_STORAGE_URI": settings.redis_url or "memory://",
        # With Redis down, limits count per worker in memory until it answers again.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_STORAGE_OPTIONS": redis_bounds(settings),
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_HEADER_LIMIT": "RateLimit-Limit",
        "RATELIMIT_HEADER_REMAINING": "RateLimit-Remaining",
        "RATELIMIT_HEADER_RESET": "RateLimit-Reset",
        "CACHE_TYPE": "SimpleCache" if settings.catalog_cache_ttl else "NullCache",
        "CACHE_DEFAULT_TIMEOUT": settings.catalog_cache_ttl,
        "CACHE_NO_NULL_WARNING": True,
    }


def behind_proxies(wsgi_app, hops: int) -> ProxyFix:
    """Believe the last `hops` entries of X-Forwarded-For and X-Forwarded-Proto, which the
    proxies in front of the app append (nginx: `$proxy_add_x_forwarded_for`), so that
    `request.remote_addr` is the client's address (rate limits, the login lockout) and the
    scheme is the one the client used. Entries left of those are the client's to write and
    never believed; a request with fewer entries (one that bypassed the proxy) keeps the
    socket peer. The host, port and prefix stay the request's own: proxies pass `Host` on as
    it came (nginx: `proxy_set_header Host $host`), and believing `X-Forwarded-Host` would
    let a client pick the host of the URLs the app writes (`Location`) wherever a proxy does
    not overwrite that header."""
    return ProxyFix(wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0)


def database_bounds(settings: Settings) -> dict[str, object]:
    """Timeouts and a bounded pool for PostgreSQL; for the embedded SQLite, how long a writer
    waits for the write lock (app/transactions.py) before the request fails."""
    if not settings.database_url.startswith("postgresql"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    limits = settings.resilience
    return {
        "poolclass": MeasuredPool,
        "pool_size": limits.db_pool_size,
        "pool_timeout": limits.db_pool_timeout,
        "connect_args": {
            "connect_timeout": limits.db_connect_timeout,
            "options": f"-c statement_timeout={limits.db_statement_timeout_ms}",
        },
    }


def ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection before use only when it has been idle for `idle_seconds`.

    `pool_pre_ping` would cost a round trip at every checkout, that is in every transaction.
    Under load connections go back and forth within milliseconds and are never pinged; after
    a quiet spell (when a database restart or failover most likely happened, or a proxy
    dropped the connection) the first checkout pings, and a dead connection raises
    DisconnectionError, on which the pool discards it and connects again: the request
    succeeds. SQLAlchemy's "pessimistic disconnect handling" recipe, with an age check.
    A connection that dies within `idle_seconds` of its last use fails that one request.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy) -> None:
        checked_in_at = record.info.pop("checked_in_at", None)
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return  # just connected, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError(f"pooled connection idle for a while is gone: {error}") from error


def redis_bounds(settings: Settings) -> dict[str, float]:
    if not settings.redis_url:
        return {}
    timeout = settings.resilience.redis_timeout
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}
