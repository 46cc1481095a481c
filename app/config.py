"""Typed settings read from the environment, validated once at start-up.

Each setting is declared once, on its field below: its variable, its default, how its text is
read and what it means (`setting(...)`). `load_settings` reads every declared variable, the
README's table of settings is generated from the same declarations (`python -m
app.config_docs`), and nothing else holds a default. Variable names follow the original
system's `.env` so existing deployments keep working.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from limits import parse_many
from pymongo.errors import ConfigurationError, InvalidURI
from pymongo.uri_parser import parse_uri

REPOSITORY = Path(__file__).resolve().parent.parent
DEVELOPMENT_JWT_SECRET = "dev-only-jwt-secret-change-me-in-production"  # noqa: S105 (refused in production)
ENVIRONMENTS = ("development", "test", "production")
MODULES = ("products", "cart", "accounts", "gateway")
# The modules each module calls: served in the same process, or reached at their *_SERVICE_URL.
CALLS = {"gateway": ("products", "cart", "accounts"), "cart": ("products",)}
# What each caller may call over the internal service API (app/ports.py), by module: "*" for
# every function. The gateway serves the public API and runs the maintenance commands (seed,
# inventory reconcile, create-admin), so it needs all of them; the cart service only the
# product reads and the hold changes a cart makes.
SERVICE_SCOPES: dict[str, dict[str, tuple[str, ...]]] = {
    "gateway": {"products": ("*",), "cart": ("*",), "accounts": ("*",)},
    "cart": {
        "products": (
            "get_product",
            "get_products",
            "reserve_stock",
            "release_reservation",
            "commit_reservation",
            "is_available",
        )
    },
}
MIN_PRODUCTION_SECRET_LENGTH = 32
MIN_PRODUCTION_RESERVATION_TTL = 60  # seconds; shorter holds are for tests and local experiments
# argon2id's floor for passwords (OWASP's password storage cheat sheet: 19 MiB, 2 iterations);
# cheaper hashing is for tests.
MIN_PRODUCTION_HASH_TIME_COST = 2
MIN_PRODUCTION_HASH_MEMORY_KIB = 19 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
HTTP = ("http", "https")


class ConfigError(SystemExit):
    """A bad setting. Subclasses SystemExit so that gunicorn, `flask` and `python` all stop
    with this one line on stderr (exit status 1) instead of a traceback."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"Configuration error: {variable} {problem}")
        self.variable = variable


# How a variable's text (stripped, never blank) becomes its value: (name, text) -> value, or
# ConfigError naming the variable.
Parse = Callable[[str, str], Any]


def _text(_name: str, raw: str) -> str:
    return raw


def _integer(minimum: int | None = None, maximum: int | None = None) -> Parse:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError(name, f"must be {bounds}, got {value}")
        return value

    return parse


_port = _integer(1, 65535)


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number of seconds, got {raw!r}") from None
    if not 0 < value <= 3600:
        raise ConfigError(name, f"must be between 0 and 3600 seconds, got {raw}")
    return value


def _boolean(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def _choice(*choices: str, upper: bool = False) -> Parse:
    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _url(*schemes: str) -> Parse:
    def parse(name: str, raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ConfigError(name, f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


def _base_url(name: str, raw: str) -> str:
    return _url(*HTTP)(name, raw).rstrip("/")


def _database_url(name: str, raw: str) -> str:
    url = _url("postgres", "postgresql", "postgresql+psycopg2", "sqlite")(name, raw)
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; we ship psycopg2.
    scheme, _, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgres", "postgresql") else url


def _rate_limit(name: str, raw: str) -> str:
    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(name, f"must be a rate limit such as '10 per minute', got {raw!r}") from None
    return raw


def _mongodb_uri(name: str, raw: str) -> str:
    try:
        parsed = parse_uri(raw, validate=True, warn=False, connect_timeout=None)
    except (InvalidURI, ConfigurationError, ValueError) as error:
        raise ConfigError(name, f"is not a valid MongoDB URI ({error})") from None
    if not parsed.get("database"):
        raise ConfigError(name, "must name a database, e.g. mongodb://host:27017/products")
    return raw


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin == "*" or parts.scheme not in HTTP or not parts.netloc:
            raise ConfigError(name, f"must list origins such as https://shop.example.com, got {origin!r}")
    return origins


def _modules(name: str, raw: str) -> tuple[str, ...]:
    wanted = {module.strip().lower() for module in raw.split(",") if module.strip()}
    unknown = sorted(wanted - set(MODULES))
    if unknown or not wanted:
        raise ConfigError(name, f"must list modules among {', '.join(MODULES)}, got {raw!r}")
    return tuple(module for module in MODULES if module in wanted)


def _caller_keys(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    """`caller=key` pairs, comma-separated; a caller may have several keys (rotation)."""
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        caller, _, key = item.partition("=")
        caller, key = caller.strip(), key.strip()
        if caller not in SERVICE_SCOPES or not key:
            known = ", ".join(SERVICE_SCOPES)
            raise ConfigError(name, f"must be comma-separated caller=key pairs, the callers one of {known}")
        pairs.append((caller, key))
    return tuple(pairs)


def _readable_file(name: str, path: str) -> str:
    if not os.access(path, os.R_OK):
        raise ConfigError(name, f"names no readable file: {path}")
    return path


def _file_text(name: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        raise ConfigError(name, f"cannot be read ({error.strerror}: {path})") from None


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, default and meaning, and how its text is read."""

    name: str
    default: Any
    doc: str
    parse: Parse = _text
    aliases: tuple[str, ...] = ()  # other names for the same value, read when `name` is unset
    parts: tuple[Variable, ...] = ()  # variables the value is built from when `name` is unset
    production_default: Any = None  # the default in production, where it is another
    shown_default: str | None = None  # the README's default, where the value itself would mislead
    # Reads the value itself, from the reader and the group's values read so far, where it
    # depends on another setting.
    read: Callable[[_Reader, Variable, dict[str, Any]], Any] | None = None


def setting(name: str, default: Any, doc: str, parse: Parse = _text, **details: Any) -> Any:
    """A settings field read from the variable `name`; `default` is its one default."""
    variable = Variable(name, default, doc, parse, **details)
    if default is MISSING:
        return field(metadata={"variable": variable})
    return field(default=default, metadata={"variable": variable})


# The original system's way to say DATABASE_URL.
DB_HOST = Variable("DB_HOST", None, "the PostgreSQL host; when set, the URL is built from the DB_* variables")
DB_PORT = Variable("DB_PORT", 5432, "the PostgreSQL port", _port)
DB_USERNAME = Variable("DB_USERNAME", "postgres", "the PostgreSQL user")
DB_PASSWORD = Variable("DB_PASSWORD", None, "the PostgreSQL user's password")
DB_DATABASE = Variable("DB_DATABASE", "storefront", "the PostgreSQL database")


def _database_url_from_parts(reader: _Reader, variable: Variable, _values: dict[str, Any]) -> str:
    """DATABASE_URL, else one built from the original system's DB_* variables."""
    if reader.text(variable.name) or not reader.text(DB_HOST.name):
        return reader.value(variable)
    host = reader.value(DB_HOST)
    user = quote(reader.value(DB_USERNAME), safe="")
    password = reader.value(DB_PASSWORD)
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    database = quote(reader.value(DB_DATABASE), safe="")
    return f"postgresql+psycopg2://{credentials}@{host}:{reader.value(DB_PORT)}/{database}"


def _rs256_key(reader: _Reader, variable: Variable, values: dict[str, Any]) -> str | None:
    """A key file's PEM text, read with JWT_ALGORITHM=RS256 only."""
    if values["algorithm"] != "RS256":
        return None
    path = reader.text(variable.name)
    if path is None:
        raise ConfigError(variable.name, "must name a PEM file when JWT_ALGORITHM is RS256")
    return variable.parse(variable.name, path)


@dataclass(frozen=True)
class ServiceTls:
    """Mutual TLS between services (PEM files). A service process serves its internal listener
    with TLS and requires a client certificate signed by the CA (gunicorn.conf.py); every call to
    another service presents this process's certificate and verifies the callee's against the CA
    (app/http_client.py)."""

    cert: str = setting(
        "SERVICE_TLS_CERT",
        MISSING,
        "This service's certificate (PEM), presented to the services it calls and to its callers;"
        " SERVICE_TLS_CERT, SERVICE_TLS_KEY and SERVICE_TLS_CA are set together or not at all",
        _readable_file,
    )
    key: str = setting("SERVICE_TLS_KEY", MISSING, "The private key of SERVICE_TLS_CERT (PEM)", _readable_file)
    ca: str = setting(
        "SERVICE_TLS_CA",
        MISSING,
        "The CA (PEM) that signs every service's certificate; callers and callees are checked against it",
        _readable_file,
    )


def _service_tls(reader: _Reader) -> ServiceTls | None:
    """All three files or none; each must be readable."""
    files = {item.metadata["variable"]: reader.text(item.metadata["variable"].name) for item in fields(ServiceTls)}
    if not any(files.values()):
        return None
    readable = []
    for variable, path in files.items():
        if not path:
            raise ConfigError(variable.name, "must be set with the other SERVICE_TLS_* files (certificate, key and CA)")
        readable.append(variable.parse(variable.name, path))
    return ServiceTls(*readable)


@dataclass(frozen=True)
class MailSettings:
    backend: str = setting(
        "MAIL_BACKEND",
        "console",
        "How mail (address verification, password reset) is sent: `console` writes each message to the"
        " log (refused in production: links' tokens would be logged), `file` one .eml file per message in"
        " MAIL_FILE_DIR, `smtp` through SMTP_HOST",
        _choice("console", "file", "smtp"),
    )
    smtp_host: str = setting("SMTP_HOST", "localhost", "SMTP server host")
    smtp_port: int = setting(
        "SMTP_PORT", 25, "SMTP server port (usually 587 with STARTTLS, 25 for a local relay)", _port
    )
    smtp_username: str | None = setting(
        "SMTP_USERNAME", None, "Log in to the SMTP server as this user (unset: a relay that needs no login)"
    )
    smtp_password: str | None = setting("SMTP_PASSWORD", None, "The SMTP user's password")
    smtp_starttls: bool = setting(
        "SMTP_STARTTLS",
        False,
        "Upgrade the SMTP connection with STARTTLS (the server's certificate is verified) before logging in",
        _boolean,
    )
    sender: str = setting("MAIL_FROM", "Storefront <no-reply@localhost>", "The sender in the From header")
    file_dir: str = setting(
        "MAIL_FILE_DIR",
        "var/mail",
        "Folder of the `file` backend (created when missing; files readable by their owner)",
    )


@dataclass(frozen=True)
class AuthSettings:
    access_ttl: int = setting("JWT_ACCESS_TTL", 15 * 60, "Lifetime of an access token, in seconds", _integer(30))
    refresh_ttl: int = setting(
        "JWT_REFRESH_TTL", 30 * 24 * 3600, "Lifetime of a refresh token, in seconds", _integer(60)
    )
    algorithm: str = setting(
        "JWT_ALGORITHM",
        "HS256",
        "Token signing: `HS256` with JWT_SECRET, or `RS256` with the key files below",
        _choice("HS256", "RS256", upper=True),
    )
    private_key: str | None = setting(
        "JWT_PRIVATE_KEY_FILE", None, "With RS256: the PEM file of the signing key", _file_text, read=_rs256_key
    )
    public_key: str | None = setting(
        "JWT_PUBLIC_KEY_FILE", None, "With RS256: the PEM file of the verifying key", _file_text, read=_rs256_key
    )
    issuer: str = setting("JWT_ISSUER", "storefront", "The tokens' `iss` claim, checked on every token")
    audience: str = setting("JWT_AUDIENCE", "storefront-api", "The tokens' `aud` claim, checked on every token")
    login_max_failures: int = setting(
        "LOGIN_MAX_FAILURES",
        5,
        "Failed logins at one account from one client IP within LOGIN_LOCK_SECONDS after which that IP's"
        " logins to it answer 429 `login_locked` until the window ends",
        _integer(1),
    )
    login_lock_seconds: int = setting(
        "LOGIN_LOCK_SECONDS", 15 * 60, "The window of LOGIN_MAX_FAILURES, in seconds", _integer(1)
    )
    login_account_max_failures: int = setting(
        "LOGIN_ACCOUNT_MAX_FAILURES",
        50,
        "Failed logins at one account from any IP within LOGIN_ACCOUNT_LOCK_SECONDS that lock it for every"
        " IP (the backstop against distributed guessing; a password reset lifts it)",
        _integer(1),
    )
    login_account_lock_seconds: int = setting(
        "LOGIN_ACCOUNT_LOCK_SECONDS", 3600, "The window of LOGIN_ACCOUNT_MAX_FAILURES, in seconds", _integer(1)
    )
    password_hash_time_cost: int = setting(
        "PASSWORD_HASH_TIME_COST",
        3,
        f"argon2id iterations (argon2-cffi's default); production refuses fewer than {MIN_PRODUCTION_HASH_TIME_COST}"
        " (OWASP's floor)",
        _integer(1, 100),
    )
    password_hash_memory_kib: int = setting(
        "PASSWORD_HASH_MEMORY_KIB",
        64 * 1024,
        "argon2id memory in KiB (argon2-cffi's default); production refuses less than"
        f" {MIN_PRODUCTION_HASH_MEMORY_KIB} (OWASP's floor)."
        " A hash made at another cost still verifies and is replaced at the next login",
        _integer(64, 4 * 1024 * 1024),
    )
    email_token_ttl: int = setting(
        "EMAIL_TOKEN_TTL", 24 * 3600, "Lifetime of an emailed verification link, in seconds", _integer(60)
    )
    reset_token_ttl: int = setting(
        "PASSWORD_RESET_TTL", 3600, "Lifetime of an emailed password reset link, in seconds", _integer(60)
    )
    public_base_url: str = setting(
        "PUBLIC_BASE_URL",
        "http://localhost:3000",
        "Where the links in emails point: your front end (`/verify-email?token=...`, `/reset-password?token=...`)",
        _base_url,
    )


@dataclass(frozen=True)
class ResilienceSettings:
    """Bounds on every outbound call, so that no dependency can hang or exhaust a worker."""

    service_connect_timeout: float = setting(
        "SERVICE_CONNECT_TIMEOUT", 1.0, "Connect timeout of a call to another module's service, in seconds", _seconds
    )
    service_read_timeout: float = setting(
        "SERVICE_READ_TIMEOUT", 5.0, "Read timeout of a call to another module's service, in seconds", _seconds
    )
    service_retries: int = setting(
        "SERVICE_RETRIES", 2, "Extra attempts at a call to another service, for idempotent calls only", _integer(0, 10)
    )
    service_pool_size: int = setting(
        "SERVICE_POOL_SIZE",
        10,
        "Calls in flight at once per service (the bulkhead: more answer 503 at once) and pooled connections",
        _integer(1, 1000),
    )
    breaker_failures: int = setting(
        "BREAKER_FAILURES",
        5,
        "Failures in a row that open a dependency's circuit breaker (per service, MongoDB and PostgreSQL,"
        " in each process): calls then answer 503 with Retry-After",
        _integer(1),
    )
    breaker_reset_seconds: int = setting(
        "BREAKER_RESET_SECONDS", 10, "How long a breaker stays open before one probe is let through", _integer(1)
    )
    db_connect_timeout: int = setting("DB_CONNECT_TIMEOUT", 3, "PostgreSQL connect timeout, in seconds", _integer(1))
    db_statement_timeout_ms: int = setting(
        "DB_STATEMENT_TIMEOUT_MS", 10_000, "PostgreSQL statement timeout, in milliseconds", _integer(100)
    )
    db_pool_size: int = setting("DB_POOL_SIZE", 5, "Pooled PostgreSQL connections per process", _integer(1, 1000))
    db_pool_timeout: int = setting(
        "DB_POOL_TIMEOUT",
        3,
        "Seconds a request waits for a pooled PostgreSQL connection (the database's bulkhead) before a 503",
        _integer(1),
    )
    redis_timeout: float = setting("REDIS_TIMEOUT", 0.5, "Redis connect and read timeout, in seconds", _seconds)


@dataclass(frozen=True)
class ServerSettings:
    """How gunicorn runs the app (gunicorn.conf.py); the port is the app's own (listen_port)."""

    host: str | None = setting(
        "API_HOST",
        None,
        "The address gunicorn listens on; outside production only loopback unless ALLOW_PUBLIC_BIND=true",
        shown_default="`127.0.0.1`; `0.0.0.0` in production",
    )
    workers: int | None = setting(
        "GUNICORN_WORKERS",
        None,
        "gunicorn worker processes",
        _integer(1),
        shown_default="twice the CPUs plus one, at most 8",
    )
    worker_class: str = setting("GUNICORN_WORKER_CLASS", "sync", "gunicorn's worker class")
    timeout: int = setting(
        "GUNICORN_TIMEOUT", 30, "Seconds a worker may spend on a request before gunicorn restarts it", _integer(0)
    )
    graceful_timeout: int = setting(
        "GUNICORN_GRACEFUL_TIMEOUT", 20, "Seconds a stopping worker gets to finish its requests", _integer(0)
    )
    keepalive: int = setting("GUNICORN_KEEPALIVE", 5, "Seconds an idle keep-alive connection stays open", _integer(0))
    access_log: str = setting("GUNICORN_ACCESS_LOG", "-", "Where gunicorn writes access lines (`-`: stdout)")


@dataclass(frozen=True)
class Settings:
    env: str = setting(
        "APP_ENV",
        "development",
        "`development`, `test` or `production`. Production refuses the development JWT secret, SQLite and"
        " MAIL_BACKEND=console; the Docker image and docker-compose.yml default to production",
        _choice(*ENVIRONMENTS),
        aliases=("NODE_ENV",),
    )
    modules: tuple[str, ...] = setting(
        "APP_MODULES",
        MODULES,
        "The modules this process serves (comma-separated; all: the monolith). A module it needs but does not"
        " serve is called at its `*_SERVICE_URL`",
        _modules,
    )
    api_port: int = setting("API_PORT", 3000, "Port of a process serving the gateway (the public API)", _port)
    products_service_port: int = setting(
        "PRODUCTS_SERVICE_PORT", 3001, "Port of a service process whose first module is products", _port
    )
    cart_service_port: int = setting(
        "CART_SERVICE_PORT", 3002, "Port of a service process whose first module is cart", _port
    )
    accounts_service_port: int = setting(
        "ACCOUNTS_SERVICE_PORT", 3003, "Port of a service process whose first module is accounts", _port
    )
    products_service_url: str | None = setting(
        "PRODUCTS_SERVICE_URL", None, "The products service, required when this process calls it", _url(*HTTP)
    )
    cart_service_url: str | None = setting(
        "CART_SERVICE_URL", None, "The cart service, required when this process calls it", _url(*HTTP)
    )
    accounts_service_url: str | None = setting(
        "ACCOUNTS_SERVICE_URL", None, "The accounts service, required when this process calls it", _url(*HTTP)
    )
    mongodb_uri: str = setting(
        "MONGODB_URI",
        "mongodb://127.0.0.1:27017/products",
        "The products store; must name a database. Driver options may follow as a query string",
        _mongodb_uri,
    )
    database_url: str = setting(
        "DATABASE_URL",
        f"sqlite:///{REPOSITORY / 'var' / 'storefront.db'}",
        "Carts, orders and accounts: PostgreSQL (required in production) or SQLite. Unset: built from the"
        " original system's DB_* variables when DB_HOST is set",
        _database_url,
        parts=(DB_HOST, DB_PORT, DB_USERNAME, DB_PASSWORD, DB_DATABASE),
        shown_default="`sqlite:///var/storefront.db` in the checkout",
        read=_database_url_from_parts,
    )
    redis_url: str | None = setting(
        "REDIS_URL",
        None,
        "Redis for rate-limit counters, login failures, revoked tokens and cached carts, shared by every worker;"
        " unset: counted per worker in memory, revocations in PostgreSQL",
        _url("redis", "rediss", "unix"),
    )
    rabbitmq_url: str | None = setting(
        "RABBITMQ_URL",
        None,
        "Where `flask events relay` publishes the outbox and `flask events consume` reads it (amqp:// or"
        " amqps://, with a vhost path); unset: the relay hands events to the consumers in its own process",
        _url("amqp", "amqps"),
    )
    jwt_secret: str = setting(
        "JWT_SECRET",
        DEVELOPMENT_JWT_SECRET,
        f"HS256 signing secret of the tokens; at least {MIN_PRODUCTION_SECRET_LENGTH} characters in production",
        shown_default="a development-only secret, refused in production",
    )
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS",
        ("http://localhost:3000",),
        "Browser origins allowed by CORS, comma-separated (`*` is refused: credentials are allowed)",
        _origins,
    )
    trusted_proxies: int = setting(
        "TRUSTED_PROXIES",
        0,
        "Proxy hops in front of the app whose X-Forwarded-For/-Proto are believed: exactly the number of"
        " proxies that append to X-Forwarded-For (0: the socket peer is the client)",
        _integer(0, 10),
    )
    allow_public_bind: bool = setting(
        "ALLOW_PUBLIC_BIND",
        False,
        "Outside production, listen beyond loopback all the same (such a process may run with the development"
        " JWT secret and console mail)",
        _boolean,
    )
    service_api_key: str | None = setting(
        "SERVICE_API_KEY",
        None,
        "The key this process sends (X-Service-Key) to the services it calls; required when it calls one",
    )
    service_caller_keys: tuple[tuple[str, str], ...] = setting(
        "SERVICE_CALLER_KEYS",
        (),
        "On a service process: who may call it, as `caller=key` pairs, comma-separated (callers `gateway` and"
        " `cart`; list one twice to rotate its key); required there",
        _caller_keys,
    )
    service_tls: ServiceTls | None = field(default=None, metadata={"group": ServiceTls, "read": _service_tls})
    throttle_ttl: int = setting(
        "THROTTLE_TTL",
        60,
        "The window of THROTTLE_LIMIT, in seconds",
        _integer(1),
    )
    throttle_limit: int = setting(
        "THROTTLE_LIMIT",
        100,
        "Requests every client may make per THROTTLE_TTL seconds: the default limit of every route, in the"
        " original system's format (the `*_RATE_LIMIT` below set some routes' own limits)",
        _integer(1),
    )
    auth_rate_limit: str = setting(
        "AUTH_RATE_LIMIT",
        "10 per minute",
        "Per client IP on login, register, resend and password endpoints, in the `limits` format"
        " (`10 per minute`, `10/minute`, `5 per second; 100 per hour`), as are the other `*_RATE_LIMIT`",
        _rate_limit,
    )
    guest_rate_limit: str = setting(
        "GUEST_RATE_LIMIT",
        "120 per minute",
        "Guest sessions (POST /v1/auth/guest) per client IP, sized for many shoppers behind one NAT",
        _rate_limit,
    )
    health_rate_limit: str = setting(
        "HEALTH_RATE_LIMIT", "120 per minute", "GET /v1/health per client IP (loopback is not counted)", _rate_limit
    )
    max_content_length: int = setting(
        "MAX_CONTENT_LENGTH",
        64 * 1024,
        "Largest request body in bytes, chunked ones included (413 past it)",
        _integer(1024, 100 * 1024 * 1024),
    )
    catalog_cache_ttl: int = setting(
        "CATALOG_CACHE_TTL",
        2,
        "Seconds each worker keeps anonymous catalog reads (GET /v1/products...); 0: no cache",
        _integer(0, 3600),
    )
    cart_cache_ttl: int = setting(
        "CART_CACHE_TTL",
        2,
        "With REDIS_URL: seconds a cart answer's product figures may be old (the contents are always"
        " current); 0: no cart cache",
        _integer(0, 60),
    )
    cart_reservation_ttl: int = setting(
        "CART_RESERVATION_TTL",
        15 * 60,
        "Seconds a cart line holds its stock, refreshed whenever the line changes; at least"
        f" {MIN_PRODUCTION_RESERVATION_TTL} in production",
        _integer(1),
    )
    cart_max_lines: int = setting("CART_MAX_LINES", 50, "Different products in one cart, at most", _integer(1, 1000))
    cart_max_units: int = setting("CART_MAX_UNITS", 500, "Units in one cart, at most", _integer(1, 100_000))
    guest_cart_days: int = setting(
        "GUEST_CART_DAYS", 30, "`flask carts sweep` expires guest carts untouched this many days", _integer(1)
    )
    user_cart_days: int = setting(
        "USER_CART_DAYS", 90, "`flask carts sweep` expires users' carts untouched this many days", _integer(1)
    )
    events_max_attempts: int = setting(
        "EVENTS_MAX_ATTEMPTS",
        5,
        "Deliveries of one event to a consumer before it is a dead letter (without RabbitMQ: marked published"
        " with its last error kept)",
        _integer(1, 100),
    )
    low_stock_threshold: int = setting(
        "LOW_STOCK_THRESHOLD",
        5,
        "`product.low_stock` (and the admins' mail) when a product's available units drop below this",
        _integer(0),
    )
    log_level: str = setting(
        "LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL", _choice(*LOG_LEVELS, upper=True)
    )
    log_format: str = setting(
        "LOG_FORMAT",
        "console",
        "`json` (one object a line) or `console` lines, for the app's and gunicorn's lines alike",
        _choice("json", "console"),
        production_default="json",
    )
    docs_enabled: bool = setting(
        "DOCS_ENABLED",
        True,
        "Swagger UI at /api and the OpenAPI document at /api/openapi.json (off: 404; `flask openapi write`"
        " still works)",
        _boolean,
        production_default=False,
    )
    metrics_port: int = setting(
        "METRICS_PORT",
        9464,
        "The metrics listener of a gunicorn master (the workers' sum at /metrics); 0: none",
        _integer(0, 65535),
    )
    metrics_host: str | None = setting(
        "METRICS_HOST", None, "The metrics listener's address", shown_default="`127.0.0.1`; `0.0.0.0` in production"
    )
    metrics_on_public_port: bool = setting(
        "METRICS_ON_PUBLIC_PORT", False, "Serve GET /metrics on the API's own port as well", _boolean
    )
    auth: AuthSettings = field(default=AuthSettings(), metadata={"group": AuthSettings})
    mail: MailSettings = field(default=MailSettings(), metadata={"group": MailSettings})
    resilience: ResilienceSettings = field(default=ResilienceSettings(), metadata={"group": ResilienceSettings})
    server: ServerSettings = field(default=ServerSettings(), metadata={"group": ServerSettings})

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def override(self, **changes: object) -> Settings:
        return replace(self, **changes)

    def serves(self, module: str) -> bool:
        return module in self.modules

    def service_url(self, module: str) -> str | None:
        return getattr(self, f"{module}_service_url")

    def serves_internal_api(self) -> bool:
        """A service process (no gateway) serves its modules at /internal; a process serving the
        public API never does, so that /internal is not reachable on the public listener."""
        return not self.serves("gateway")

    def caller_name(self) -> str:
        """Who this process is to the services it calls (SERVICE_SCOPES): the gateway, or the
        first module it serves."""
        return "gateway" if self.serves("gateway") else self.modules[0]

    def remote_modules(self) -> tuple[str, ...]:
        """The modules this process calls over HTTP: called by a served module, not served here."""
        called = {callee for module in self.modules for callee in CALLS.get(module, ())}
        return tuple(module for module in MODULES if module in called and not self.serves(module))


# Read before the settings can be, by the libraries themselves; declared here for the table.
READ_BEFORE_SETTINGS = (
    Variable(
        "PROMETHEUS_MULTIPROC_DIR",
        None,
        "Where gunicorn's workers write their metrics (emptied at start); read by prometheus-client at import",
        shown_default="a temporary folder, removed at exit",
    ),
)


def default_host(settings: Settings) -> str:
    """Where the server listens unless API_HOST says: every interface in production (a
    container's port), else loopback only (check_bind)."""
    return "0.0.0.0" if settings.is_production else "127.0.0.1"  # noqa: S104 (container port)


def check_bind(settings: Settings, address: str, variable: str = "API_HOST") -> None:
    """Outside production the app may run with the development JWT secret and the console mail
    backend, so it listens on loopback only unless ALLOW_PUBLIC_BIND=true. `address` as gunicorn
    takes it: HOST, HOST:PORT, [IPV6]:PORT; unix: and fd:// sockets are not network-reachable."""
    if settings.is_production or settings.allow_public_bind or address.startswith(("unix:", "fd://")):
        return
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    if host == "localhost" or _is_loopback(host):
        return
    raise ConfigError(
        variable,
        f"is {address!r}, not loopback: in {settings.env} mode the app listens on 127.0.0.1 only;"
        " set APP_ENV=production, or ALLOW_PUBLIC_BIND=true to listen there anyway",
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_port(settings: Settings) -> int:
    """The port a process serves: the gateway's API_PORT, else its first module's service port."""
    if settings.serves("gateway"):
        return settings.api_port
    first = next(module for module in MODULES if settings.serves(module))
    return getattr(settings, f"{first}_service_port")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Every declared setting from its variable, then the rules that span variables."""
    settings = _Reader(os.environ if environ is None else environ).group(Settings)
    validate(settings)
    return settings


class _Reader:
    """Reads declared variables from one environment."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def text(self, name: str) -> str | None:
        """The variable's value, None when unset or blank (compose passes `${VAR:-}` as blank)."""
        value = self.environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def value(self, variable: Variable) -> Any:
        """The first of the variable's names that is set, parsed; else its default."""
        for name in (variable.name, *variable.aliases):
            raw = self.text(name)
            if raw is not None:
                return variable.parse(name, raw)
        if variable.production_default is not None and self.production:
            return variable.production_default
        return variable.default

    @cached_property
    def production(self) -> bool:
        return self.value(_declared(Settings, "env")) == "production"

    def group(self, kind: type) -> Any:
        values: dict[str, Any] = {}
        for item in fields(kind):
            if "group" in item.metadata:
                read = item.metadata.get("read")
                values[item.name] = read(self) if read else self.group(item.metadata["group"])
                continue
            variable = item.metadata["variable"]
            values[item.name] = variable.read(self, variable, values) if variable.read else self.value(variable)
        return kind(**values)


def _declared(kind: type, name: str) -> Variable:
    return next(item.metadata["variable"] for item in fields(kind) if item.name == name)


def declared_variables(kind: type = Settings) -> Iterator[Variable]:
    """Every declared variable, in declaration order, groups in place; then those the libraries
    read themselves (READ_BEFORE_SETTINGS)."""
    for item in fields(kind):
        if "group" in item.metadata:
            yield from declared_variables(item.metadata["group"])
        else:
            yield item.metadata["variable"]
    if kind is Settings:
        yield from READ_BEFORE_SETTINGS


def variable_names() -> set[str]:
    """Every name a setting is read from: its own, its aliases' and its parts'."""
    return {
        name
        for variable in declared_variables()
        for name in (variable.name, *variable.aliases, *(part.name for part in variable.parts))
    }


def validate(settings: Settings) -> None:
    """Rules that span variables; also applied to settings built by tests."""
    for module in settings.remote_modules():
        if settings.service_url(module) is None:
            served = ",".join(settings.modules)
            raise ConfigError(
                f"{module.upper()}_SERVICE_URL",
                f"must be set: APP_MODULES={served} calls the {module} module but does not serve it",
            )
    if not settings.service_api_key and settings.remote_modules():
        raise ConfigError("SERVICE_API_KEY", "must be set when this process calls modules served elsewhere")
    if not settings.service_caller_keys and settings.serves_internal_api():
        raise ConfigError("SERVICE_CALLER_KEYS", "must be set: this process serves modules to other services")
    if not settings.is_production:
        return
    if settings.auth.algorithm == "HS256":
        if settings.jwt_secret == DEVELOPMENT_JWT_SECRET:
            raise ConfigError("JWT_SECRET", "is the development default; set a secret of your own")
        if len(settings.jwt_secret) < MIN_PRODUCTION_SECRET_LENGTH:
            raise ConfigError("JWT_SECRET", f"must be at least {MIN_PRODUCTION_SECRET_LENGTH} characters in production")
    if settings.auth.password_hash_time_cost < MIN_PRODUCTION_HASH_TIME_COST:
        raise ConfigError("PASSWORD_HASH_TIME_COST", f"must be at least {MIN_PRODUCTION_HASH_TIME_COST} in production")
    if settings.auth.password_hash_memory_kib < MIN_PRODUCTION_HASH_MEMORY_KIB:
        raise ConfigError(
            "PASSWORD_HASH_MEMORY_KIB", f"must be at least {MIN_PRODUCTION_HASH_MEMORY_KIB} in production"
        )
    if settings.database_url.startswith("sqlite"):
        raise ConfigError("DATABASE_URL", "must point at PostgreSQL in production (set DATABASE_URL or DB_HOST)")
    if settings.cart_reservation_ttl < MIN_PRODUCTION_RESERVATION_TTL:
        raise ConfigError(
            "CART_RESERVATION_TTL", f"must be at least {MIN_PRODUCTION_RESERVATION_TTL} seconds in production"
        )
    if settings.mail.backend == "console":
        raise ConfigError(
            "MAIL_BACKEND",
            "is console, which writes every message to the log, reset and verification links included;"
            " set MAIL_BACKEND=smtp (with SMTP_HOST) in production",
        )
