"""Typed settings read from the environment, validated once at start-up.

Variable names follow the original system's `.env` so existing deployments keep working.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
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


class ConfigError(SystemExit):
    """A bad setting. Subclasses SystemExit so that gunicorn, `flask` and `python` all stop
    with this one line on stderr (exit status 1) instead of a traceback."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"Configuration error: {variable} {problem}")
        self.variable = variable


@dataclass(frozen=True)
class ServiceTls:
    """Mutual TLS between services (SERVICE_TLS_CERT, SERVICE_TLS_KEY, SERVICE_TLS_CA: PEM files).
    A service process serves its internal listener with TLS and requires a client certificate
    signed by the CA (gunicorn.conf.py); every call to another service presents this process's
    certificate and verifies the callee's against the CA (app/http_client.py)."""

    cert: str
    key: str
    ca: str


@dataclass(frozen=True)
class MailSettings:
    backend: str = "console"  # console | file | smtp
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    sender: str = "Storefront <no-reply@localhost>"
    file_dir: str = "var/mail"


@dataclass(frozen=True)
class AuthSettings:
    access_ttl: int = 15 * 60
    refresh_ttl: int = 30 * 24 * 3600
    algorithm: str = "HS256"  # or RS256 with the key files below
    private_key: str | None = None
    public_key: str | None = None
    issuer: str = "storefront"
    audience: str = "storefront-api"
    login_max_failures: int = 5  # per (account, client IP) in login_lock_seconds
    login_lock_seconds: int = 15 * 60
    login_account_max_failures: int = 50  # per account from any IP: the backstop against distributed guessing
    login_account_lock_seconds: int = 3600
    password_hash_time_cost: int = 3  # argon2id iterations (argon2-cffi's default)
    password_hash_memory_kib: int = 64 * 1024  # argon2id memory (argon2-cffi's default)
    email_token_ttl: int = 24 * 3600
    reset_token_ttl: int = 3600
    public_base_url: str = "http://localhost:3000"


@dataclass(frozen=True)
class ResilienceSettings:
    """Bounds on every outbound call, so that no dependency can hang or exhaust a worker."""

    service_connect_timeout: float = 1.0  # seconds, HTTP calls to another module's service
    service_read_timeout: float = 5.0
    service_retries: int = 2  # extra attempts, for idempotent calls only
    service_pool_size: int = 10  # concurrent calls per service (the bulkhead) and pooled connections
    breaker_failures: int = 5  # consecutive failures that open a dependency's circuit
    breaker_reset_seconds: int = 10  # how long it stays open before one probe is let through
    db_connect_timeout: int = 3  # seconds
    db_statement_timeout_ms: int = 10_000
    db_pool_size: int = 5
    db_pool_timeout: int = 3  # seconds to wait for a pooled connection (the database's bulkhead)
    redis_timeout: float = 0.5  # seconds, connect and read


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    api_port: int = 3000
    products_service_port: int = 3001
    cart_service_port: int = 3002
    accounts_service_port: int = 3003
    modules: tuple[str, ...] = MODULES
    products_service_url: str | None = None
    cart_service_url: str | None = None
    accounts_service_url: str | None = None
    mongodb_uri: str = "mongodb://127.0.0.1:27017/products"
    database_url: str = f"sqlite:///{REPOSITORY / 'var' / 'storefront.db'}"
    jwt_secret: str = DEVELOPMENT_JWT_SECRET
    throttle_ttl: int = 60
    throttle_limit: int = 100
    auth_rate_limit: str = "10 per minute"
    cors_origins: tuple[str, ...] = ("http://localhost:3000",)
    redis_url: str | None = None
    rabbitmq_url: str | None = None  # app/events: published there by `flask events relay`; None: in process
    events_max_attempts: int = 5  # deliveries of one event to a consumer before it is a dead letter
    low_stock_threshold: int = 5  # product.low_stock when available drops below this many units
    trusted_proxies: int = 0  # proxy hops in front of the app whose X-Forwarded-For/-Proto are believed
    log_level: str = "INFO"
    log_format: str = "console"  # json | console (app/logs.py); json by default in production
    docs_enabled: bool = True  # /api (Swagger UI) and /api/openapi.json; off by default in production
    metrics_port: int = 9464  # the metrics listener of a gunicorn master (app/metrics.py); 0: none
    metrics_host: str | None = None  # its address; None: default_host (loopback outside production)
    metrics_on_public_port: bool = False  # GET /metrics on the app's own listener as well
    max_content_length: int = 64 * 1024  # bytes of a request body (app/gateway/request_limits.py)
    allow_public_bind: bool = False  # outside production: listen beyond loopback all the same (check_bind)
    service_api_key: str | None = None  # the key this process sends to the services it calls
    service_caller_keys: tuple[tuple[str, str], ...] = ()  # (caller, key): who may call this service
    service_tls: ServiceTls | None = None
    catalog_cache_ttl: int = 2
    cart_cache_ttl: int = 2  # seconds; with REDIS_URL only (app/cart/cache.py)
    cart_reservation_ttl: int = 15 * 60
    cart_max_lines: int = 50
    cart_max_units: int = 500
    guest_rate_limit: str = "120 per minute"
    health_rate_limit: str = "120 per minute"  # GET /v1/health per client IP
    guest_cart_days: int = 30
    user_cart_days: int = 90
    mail: MailSettings = MailSettings()
    auth: AuthSettings = AuthSettings()
    resilience: ResilienceSettings = ResilienceSettings()

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
    env = os.environ if environ is None else environ
    reader = _Reader(env)
    app_env = reader.choice("APP_ENV", ENVIRONMENTS, default=env.get("NODE_ENV", "development"))
    settings = Settings(
        env=app_env,
        api_port=reader.port("API_PORT", 3000),
        products_service_port=reader.port("PRODUCTS_SERVICE_PORT", 3001),
        cart_service_port=reader.port("CART_SERVICE_PORT", 3002),
        accounts_service_port=reader.port("ACCOUNTS_SERVICE_PORT", 3003),
        modules=reader.modules("APP_MODULES"),
        products_service_url=reader.url("PRODUCTS_SERVICE_URL", schemes=("http", "https")),
        cart_service_url=reader.url("CART_SERVICE_URL", schemes=("http", "https")),
        accounts_service_url=reader.url("ACCOUNTS_SERVICE_URL", schemes=("http", "https")),
        mongodb_uri=reader.mongodb_uri("MONGODB_URI", Settings.mongodb_uri),
        database_url=_database_url(reader),
        jwt_secret=reader.text("JWT_SECRET") or DEVELOPMENT_JWT_SECRET,
        throttle_ttl=reader.integer("THROTTLE_TTL", 60, minimum=1),
        throttle_limit=reader.integer("THROTTLE_LIMIT", 100, minimum=1),
        auth_rate_limit=reader.rate_limit("AUTH_RATE_LIMIT", Settings.auth_rate_limit),
        cors_origins=reader.origins("CORS_ORIGINS", Settings.cors_origins),
        redis_url=reader.url("REDIS_URL", schemes=("redis", "rediss", "unix")),
        rabbitmq_url=reader.url("RABBITMQ_URL", schemes=("amqp", "amqps")),
        events_max_attempts=reader.integer("EVENTS_MAX_ATTEMPTS", Settings.events_max_attempts, minimum=1, maximum=100),
        low_stock_threshold=reader.integer("LOW_STOCK_THRESHOLD", Settings.low_stock_threshold, minimum=0),
        trusted_proxies=reader.integer("TRUSTED_PROXIES", Settings.trusted_proxies, minimum=0, maximum=10),
        allow_public_bind=reader.boolean("ALLOW_PUBLIC_BIND", Settings.allow_public_bind),
        docs_enabled=reader.boolean("DOCS_ENABLED", app_env != "production"),
        metrics_port=reader.integer("METRICS_PORT", Settings.metrics_port, minimum=0, maximum=65535),
        metrics_host=reader.text("METRICS_HOST"),
        metrics_on_public_port=reader.boolean("METRICS_ON_PUBLIC_PORT", Settings.metrics_on_public_port),
        log_level=reader.choice(
            "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), default="INFO", upper=True
        ),
        log_format=reader.choice(
            "LOG_FORMAT", ("json", "console"), default="json" if app_env == "production" else "console"
        ),
        max_content_length=reader.integer(
            "MAX_CONTENT_LENGTH", Settings.max_content_length, minimum=1024, maximum=100 * 1024 * 1024
        ),
        catalog_cache_ttl=reader.integer("CATALOG_CACHE_TTL", 2, minimum=0, maximum=3600),
        cart_cache_ttl=reader.integer("CART_CACHE_TTL", Settings.cart_cache_ttl, minimum=0, maximum=60),
        cart_reservation_ttl=reader.integer("CART_RESERVATION_TTL", Settings.cart_reservation_ttl, minimum=1),
        cart_max_lines=reader.integer("CART_MAX_LINES", Settings.cart_max_lines, minimum=1, maximum=1000),
        cart_max_units=reader.integer("CART_MAX_UNITS", Settings.cart_max_units, minimum=1, maximum=100_000),
        guest_rate_limit=reader.rate_limit("GUEST_RATE_LIMIT", Settings.guest_rate_limit),
        health_rate_limit=reader.rate_limit("HEALTH_RATE_LIMIT", Settings.health_rate_limit),
        guest_cart_days=reader.integer("GUEST_CART_DAYS", Settings.guest_cart_days, minimum=1),
        user_cart_days=reader.integer("USER_CART_DAYS", Settings.user_cart_days, minimum=1),
        service_api_key=reader.text("SERVICE_API_KEY"),
        service_caller_keys=reader.caller_keys("SERVICE_CALLER_KEYS"),
        service_tls=_service_tls(reader),
        mail=_mail_settings(reader),
        auth=_auth_settings(reader),
        resilience=_resilience_settings(reader),
    )
    validate(settings)
    return settings


def _mail_settings(reader: _Reader) -> MailSettings:
    defaults = MailSettings()
    return MailSettings(
        backend=reader.choice("MAIL_BACKEND", ("console", "file", "smtp"), default=defaults.backend),
        smtp_host=reader.text("SMTP_HOST") or defaults.smtp_host,
        smtp_port=reader.port("SMTP_PORT", defaults.smtp_port),
        smtp_username=reader.text("SMTP_USERNAME"),
        smtp_password=reader.text("SMTP_PASSWORD"),
        smtp_starttls=reader.boolean("SMTP_STARTTLS", defaults.smtp_starttls),
        sender=reader.text("MAIL_FROM") or defaults.sender,
        file_dir=reader.text("MAIL_FILE_DIR") or defaults.file_dir,
    )


def _auth_settings(reader: _Reader) -> AuthSettings:
    defaults = AuthSettings()
    algorithm = reader.choice("JWT_ALGORITHM", ("HS256", "RS256"), default=defaults.algorithm, upper=True)
    keys = {}
    if algorithm == "RS256":
        keys = {name: reader.file_text(f"JWT_{name.upper()}_FILE") for name in ("private_key", "public_key")}
    return AuthSettings(
        access_ttl=reader.integer("JWT_ACCESS_TTL", defaults.access_ttl, minimum=30),
        refresh_ttl=reader.integer("JWT_REFRESH_TTL", defaults.refresh_ttl, minimum=60),
        algorithm=algorithm,
        issuer=reader.text("JWT_ISSUER") or defaults.issuer,
        audience=reader.text("JWT_AUDIENCE") or defaults.audience,
        login_max_failures=reader.integer("LOGIN_MAX_FAILURES", defaults.login_max_failures, minimum=1),
        login_lock_seconds=reader.integer("LOGIN_LOCK_SECONDS", defaults.login_lock_seconds, minimum=1),
        login_account_max_failures=reader.integer(
            "LOGIN_ACCOUNT_MAX_FAILURES", defaults.login_account_max_failures, minimum=1
        ),
        login_account_lock_seconds=reader.integer(
            "LOGIN_ACCOUNT_LOCK_SECONDS", defaults.login_account_lock_seconds, minimum=1
        ),
        password_hash_time_cost=reader.integer(
            "PASSWORD_HASH_TIME_COST", defaults.password_hash_time_cost, minimum=1, maximum=100
        ),
        password_hash_memory_kib=reader.integer(
            "PASSWORD_HASH_MEMORY_KIB", defaults.password_hash_memory_kib, minimum=64, maximum=4 * 1024 * 1024
        ),
        email_token_ttl=reader.integer("EMAIL_TOKEN_TTL", defaults.email_token_ttl, minimum=60),
        reset_token_ttl=reader.integer("PASSWORD_RESET_TTL", defaults.reset_token_ttl, minimum=60),
        public_base_url=(reader.url("PUBLIC_BASE_URL", schemes=("http", "https")) or defaults.public_base_url).rstrip(
            "/"
        ),
        **keys,
    )


def _resilience_settings(reader: _Reader) -> ResilienceSettings:
    defaults = ResilienceSettings()
    return ResilienceSettings(
        service_connect_timeout=reader.seconds("SERVICE_CONNECT_TIMEOUT", defaults.service_connect_timeout),
        service_read_timeout=reader.seconds("SERVICE_READ_TIMEOUT", defaults.service_read_timeout),
        service_retries=reader.integer("SERVICE_RETRIES", defaults.service_retries, minimum=0, maximum=10),
        service_pool_size=reader.integer("SERVICE_POOL_SIZE", defaults.service_pool_size, minimum=1, maximum=1000),
        breaker_failures=reader.integer("BREAKER_FAILURES", defaults.breaker_failures, minimum=1),
        breaker_reset_seconds=reader.integer("BREAKER_RESET_SECONDS", defaults.breaker_reset_seconds, minimum=1),
        db_connect_timeout=reader.integer("DB_CONNECT_TIMEOUT", defaults.db_connect_timeout, minimum=1),
        db_statement_timeout_ms=reader.integer(
            "DB_STATEMENT_TIMEOUT_MS", defaults.db_statement_timeout_ms, minimum=100
        ),
        db_pool_size=reader.integer("DB_POOL_SIZE", defaults.db_pool_size, minimum=1, maximum=1000),
        db_pool_timeout=reader.integer("DB_POOL_TIMEOUT", defaults.db_pool_timeout, minimum=1),
        redis_timeout=reader.seconds("REDIS_TIMEOUT", defaults.redis_timeout),
    )


def _service_tls(reader: _Reader) -> ServiceTls | None:
    """All three files or none; each must be readable."""
    files = {
        "SERVICE_TLS_CERT": reader.text("SERVICE_TLS_CERT"),
        "SERVICE_TLS_KEY": reader.text("SERVICE_TLS_KEY"),
        "SERVICE_TLS_CA": reader.text("SERVICE_TLS_CA"),
    }
    if not any(files.values()):
        return None
    for name, path in files.items():
        if not path:
            raise ConfigError(name, "must be set with the other SERVICE_TLS_* files (certificate, key and CA)")
        if not os.access(path, os.R_OK):
            raise ConfigError(name, f"names no readable file: {path}")
    return ServiceTls(*files.values())


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


def _database_url(reader: _Reader) -> str:
    """DATABASE_URL, else one built from the original system's DB_* variables."""
    url = reader.url("DATABASE_URL", schemes=("postgres", "postgresql", "postgresql+psycopg2", "sqlite"))
    host = reader.text("DB_HOST")
    if url:
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; we ship psycopg2.
        scheme, _, rest = url.partition("://")
        return f"postgresql+psycopg2://{rest}" if scheme in ("postgres", "postgresql") else url
    if not host:
        return Settings.database_url
    user = quote(reader.text("DB_USERNAME") or "postgres", safe="")
    password = reader.text("DB_PASSWORD")
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    port = reader.port("DB_PORT", 5432)
    database = quote(reader.text("DB_DATABASE") or "storefront", safe="")
    return f"postgresql+psycopg2://{credentials}@{host}:{port}/{database}"


@dataclass(frozen=True)
class _Reader:
    env: Mapping[str, str]

    def text(self, name: str) -> str | None:
        """The variable's value, None when unset or blank."""
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError(name, f"must be {bounds}, got {value}")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number of seconds, got {raw!r}") from None
        if not 0 < value <= 3600:
            raise ConfigError(name, f"must be between 0 and 3600 seconds, got {raw}")
        return value

    def caller_keys(self, name: str) -> tuple[tuple[str, str], ...]:
        """`caller=key` pairs, comma-separated; a caller may have several keys (rotation)."""
        pairs = []
        for item in filter(None, (part.strip() for part in (self.text(name) or "").split(","))):
            caller, _, key = item.partition("=")
            caller, key = caller.strip(), key.strip()
            if caller not in SERVICE_SCOPES or not key:
                known = ", ".join(SERVICE_SCOPES)
                raise ConfigError(name, f"must be comma-separated caller=key pairs, the callers one of {known}")
            pairs.append((caller, key))
        return tuple(pairs)

    def modules(self, name: str) -> tuple[str, ...]:
        raw = self.text(name)
        if raw is None:
            return MODULES
        wanted = {module.strip().lower() for module in raw.split(",") if module.strip()}
        unknown = sorted(wanted - set(MODULES))
        if unknown or not wanted:
            raise ConfigError(name, f"must list modules among {', '.join(MODULES)}, got {raw!r}")
        return tuple(module for module in MODULES if module in wanted)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {raw!r}")

    def file_text(self, name: str) -> str:
        path = self.text(name)
        if path is None:
            raise ConfigError(name, "must name a PEM file when JWT_ALGORITHM is RS256")
        try:
            return Path(path).read_text()
        except OSError as error:
            raise ConfigError(name, f"cannot be read ({error.strerror}: {path})") from None

    def rate_limit(self, name: str, default: str) -> str:
        raw = self.text(name) or default
        try:
            parse_many(raw)
        except ValueError:
            raise ConfigError(name, f"must be a rate limit such as '10 per minute', got {raw!r}") from None
        return raw

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, minimum=1, maximum=65535)

    def choice(self, name: str, choices: tuple[str, ...], *, default: str, upper: bool = False) -> str:
        raw = self.text(name) or default
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    def url(self, name: str, *, schemes: tuple[str, ...]) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ConfigError(name, f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    def mongodb_uri(self, name: str, default: str) -> str:
        raw = self.text(name) or default
        try:
            parsed = parse_uri(raw, validate=True, warn=False, connect_timeout=None)
        except (InvalidURI, ConfigurationError, ValueError) as error:
            raise ConfigError(name, f"is not a valid MongoDB URI ({error})") from None
        if not parsed.get("database"):
            raise ConfigError(name, "must name a database, e.g. mongodb://host:27017/products")
        return raw

    def origins(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self.text(name)
        if raw is None:
            return default
        origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
        for origin in origins:
            parts = urlsplit(origin)
            if origin == "*" or parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(name, f"must list origins such as https://shop.example.com, got {origin!r}")
        return origins
