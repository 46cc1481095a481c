"""Settings: defaults, the original system's variable names, and one clear line per bad value."""

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import DEVELOPMENT_JWT_SECRET, ConfigError, load_settings

STRONG_SECRET = "s" * 40
REPO = Path(__file__).resolve().parents[2]
PRODUCTION = {"APP_ENV": "production", "JWT_SECRET": STRONG_SECRET, "DB_HOST": "db", "MAIL_BACKEND": "smtp"}


def test_defaults_are_for_development():
    settings = load_settings({})
    assert settings.env == "development"
    assert settings.api_port == 3000
    assert settings.jwt_secret == DEVELOPMENT_JWT_SECRET
    assert (settings.throttle_ttl, settings.throttle_limit) == (60, 100)


def test_original_variable_names_are_read():
    settings = load_settings(
        {
            "NODE_ENV": "production",
            "JWT_SECRET": STRONG_SECRET,
            "MAIL_BACKEND": "smtp",
            "API_PORT": "8080",
            "MONGODB_URI": "mongodb://mongodb:27017/products",
            "DB_HOST": "postgres",
            "DB_PORT": "5433",
            "DB_USERNAME": "shop",
            "DB_PASSWORD": "p@ss word",
            "DB_DATABASE": "cart",
            "THROTTLE_TTL": "30",
            "THROTTLE_LIMIT": "5",
            "CORS_ORIGINS": "https://shop.example.com, http://localhost:3000/",
            "SERVICE_API_KEY": "gateway-key",
            "SERVICE_CALLER_KEYS": "gateway=new-key, gateway=old-key,cart=cart-key",
        }
    )
    assert settings.is_production
    assert settings.api_port == 8080
    assert settings.database_url == "postgresql+psycopg2://shop:p%40ss%20word@postgres:5433/cart"
    assert settings.cors_origins == ("https://shop.example.com", "http://localhost:3000")
    assert settings.service_api_key == "gateway-key"
    assert settings.service_caller_keys == (("gateway", "new-key"), ("gateway", "old-key"), ("cart", "cart-key"))
    assert (settings.throttle_ttl, settings.throttle_limit) == (30, 5)


def test_database_url_wins_over_db_parts():
    settings = load_settings({"DATABASE_URL": "postgresql://u@h/db", "DB_HOST": "ignored"})
    assert settings.database_url == "postgresql+psycopg2://u@h/db"


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"API_PORT": "abc"}, "API_PORT"),
        ({"API_PORT": "70000"}, "API_PORT"),
        ({"DB_HOST": "h", "DB_PORT": "x"}, "DB_PORT"),
        ({"THROTTLE_LIMIT": "0"}, "THROTTLE_LIMIT"),
        ({"MONGODB_URI": "http://not-mongo"}, "MONGODB_URI"),
        ({"MONGODB_URI": "mongodb://localhost:27017"}, "MONGODB_URI"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"APP_ENV": "production", "DB_HOST": "db"}, "JWT_SECRET"),
        ({"APP_ENV": "production", "DB_HOST": "db", "JWT_SECRET": "short"}, "JWT_SECRET"),
        ({"APP_ENV": "production", "JWT_SECRET": STRONG_SECRET}, "DATABASE_URL"),
        ({**PRODUCTION, "CART_RESERVATION_TTL": "59"}, "CART_RESERVATION_TTL"),
        ({**PRODUCTION, "MAIL_BACKEND": ""}, "MAIL_BACKEND"),  # the default, console, logs every link
        ({**PRODUCTION, "MAIL_BACKEND": "Console"}, "MAIL_BACKEND"),
        ({"CART_RESERVATION_TTL": "0"}, "CART_RESERVATION_TTL"),
        ({"CART_MAX_LINES": "0"}, "CART_MAX_LINES"),
        ({"CART_MAX_UNITS": "many"}, "CART_MAX_UNITS"),
        ({"GUEST_RATE_LIMIT": "lots"}, "GUEST_RATE_LIMIT"),
        ({"TRUSTED_PROXIES": "-1"}, "TRUSTED_PROXIES"),
        ({"TRUSTED_PROXIES": "yes"}, "TRUSTED_PROXIES"),
        ({"LOGIN_ACCOUNT_MAX_FAILURES": "0"}, "LOGIN_ACCOUNT_MAX_FAILURES"),
        ({"LOGIN_ACCOUNT_LOCK_SECONDS": "soon"}, "LOGIN_ACCOUNT_LOCK_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(environment, variable):
    with pytest.raises(ConfigError) as raised:
        load_settings(environment)
    assert raised.value.variable == variable
    assert str(raised.value.code).startswith(f"Configuration error: {variable} ")


def start_up_errors(environment: dict[str, str]) -> list[str]:
    """What `import wsgi` (the app's start-up) prints on stderr, having exited with status 1."""
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    return result.stderr.strip().splitlines()


def test_start_up_stops_with_one_line_naming_the_variable(tmp_path):
    assert start_up_errors({"PATH": "/usr/bin:/bin", "API_PORT": "not-a-port", "HOME": str(tmp_path)}) == [
        "Configuration error: API_PORT must be a whole number, got 'not-a-port'"
    ]


@pytest.mark.parametrize("backend", ["smtp", "file"])
def test_production_accepts_the_mail_backends_that_keep_links_out_of_the_log(backend):
    assert load_settings({**PRODUCTION, "MAIL_BACKEND": backend}).mail.backend == backend


def test_production_refuses_the_console_mail_backend_at_start_up(tmp_path):
    environment = {**PRODUCTION, "DB_HOST": "db", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    del environment["MAIL_BACKEND"]
    assert start_up_errors(environment) == [
        "Configuration error: MAIL_BACKEND is console, which writes every message to the log, reset and"
        " verification links included; set MAIL_BACKEND=smtp (with SMTP_HOST) in production"
    ]


def test_production_refuses_the_development_secret_at_start_up(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "APP_ENV": "production", "DB_HOST": "db", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "JWT_SECRET is the development default" in result.stderr
    assert "Traceback" not in result.stderr


def test_cart_settings_and_their_defaults():
    defaults = load_settings({})
    assert (defaults.cart_max_lines, defaults.cart_max_units, defaults.guest_rate_limit) == (50, 500, "120 per minute")
    assert defaults.cart_reservation_ttl == 900
    tuned = load_settings(
        {"CART_RESERVATION_TTL": "1", "CART_MAX_LINES": "3", "CART_MAX_UNITS": "9", "GUEST_RATE_LIMIT": "5/minute"}
    )
    assert (tuned.cart_reservation_ttl, tuned.cart_max_lines, tuned.cart_max_units) == (1, 3, 9)
    assert tuned.guest_rate_limit == "5/minute"


def test_client_address_and_lockout_settings_and_their_defaults():
    defaults = load_settings({})
    assert defaults.trusted_proxies == 0  # X-Forwarded-For is not believed unless told
    auth = defaults.auth
    assert (auth.login_max_failures, auth.login_lock_seconds) == (5, 900)
    assert (auth.login_account_max_failures, auth.login_account_lock_seconds) == (50, 3600)
    tuned = load_settings(
        {"TRUSTED_PROXIES": "2", "LOGIN_ACCOUNT_MAX_FAILURES": "20", "LOGIN_ACCOUNT_LOCK_SECONDS": "7200"}
    )
    assert tuned.trusted_proxies == 2
    assert (tuned.auth.login_account_max_failures, tuned.auth.login_account_lock_seconds) == (20, 7200)


@pytest.mark.parametrize("value", ["new-key", "gateway=", "=key", "stranger=key"])
def test_service_caller_keys_name_a_known_caller_and_a_key(value):
    with pytest.raises(ConfigError) as refused:
        load_settings({"SERVICE_CALLER_KEYS": value})
    assert refused.value.variable == "SERVICE_CALLER_KEYS"


def test_a_service_process_needs_its_callers_keys_and_a_caller_its_own_key():
    with pytest.raises(ConfigError) as refused:
        load_settings({"APP_MODULES": "products"})
    assert refused.value.variable == "SERVICE_CALLER_KEYS"
    assert load_settings({"APP_MODULES": "products", "SERVICE_CALLER_KEYS": "cart=k"}).serves_internal_api()
    cart_only = {
        "APP_MODULES": "cart",
        "PRODUCTS_SERVICE_URL": "http://products:3001",
        "SERVICE_CALLER_KEYS": "gateway=k",
    }
    with pytest.raises(ConfigError) as refused:
        load_settings(cart_only)
    assert refused.value.variable == "SERVICE_API_KEY"
    assert load_settings({**cart_only, "SERVICE_API_KEY": "c"}).caller_name() == "cart"
    monolith = load_settings({})  # needs neither: it serves no /internal routes and calls none
    assert (monolith.serves_internal_api(), monolith.caller_name()) == (False, "gateway")


def test_password_hashing_costs_argon2_s_defaults_unless_set():
    assert (load_settings({}).auth.password_hash_time_cost, load_settings({}).auth.password_hash_memory_kib) == (
        3,
        65536,
    )
    cheap = load_settings({"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8192"}).auth
    assert (cheap.password_hash_time_cost, cheap.password_hash_memory_kib) == (1, 8192)


@pytest.mark.parametrize(
    ("variable", "value", "floor"), [("PASSWORD_HASH_TIME_COST", "1", 2), ("PASSWORD_HASH_MEMORY_KIB", "8192", 19456)]
)
def test_production_refuses_password_hashing_below_the_floor(variable, value, floor):
    with pytest.raises(ConfigError) as refused:
        load_settings({**PRODUCTION, variable: value})
    assert str(refused.value) == f"Configuration error: {variable} must be at least {floor} in production"
