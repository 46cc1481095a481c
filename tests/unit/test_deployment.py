"""The deployment files agree with the settings the app reads.

Docker cannot run here, so docker-compose.yml, the Dockerfile and gunicorn.conf.py are checked
against app.config itself: the variables it reads, the port `listen_port` picks for each
service's environment, and the modules each one serves and calls.
"""

from __future__ import annotations

import functools
import json
import re
import runpy
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
import yaml
from gunicorn.config import Config

from app.config import MODULES, ConfigError, Settings, listen_port, load_settings, variable_names
from tests import nginx_server
from tests.mongo_server import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = [name for name, service in SERVICES.items() if "build" in service]
ONE_SHOT = "migrate"
SPLIT = {"products-service": {"products"}, "cart-service": {"cart"}, "gateway": {"gateway", "accounts"}}
PORTS = {"api": 3000, "products-service": 3001, "cart-service": 3002, "gateway": 3000}
EDGES = {"nginx": "api", "nginx-split": "gateway"}  # the public nginx and the app service behind it
IMAGES = {
    "mongodb": "mongo:7",
    "postgres": "postgres:16",
    "redis": "redis:7",
    "rabbitmq": "rabbitmq:3-management",
    **dict.fromkeys(EDGES, "nginx:1.27-alpine"),
    # the `monitoring` profile (tests/unit/test_monitoring_config.py)
    "prometheus": "prom/prometheus:v2.53.3",
    "alertmanager": "prom/alertmanager:v0.27.0",
    "grafana": "grafana/grafana:11.2.2",
}
# What an operator must export; compose refuses to start without them.
REQUIRED = {
    "JWT_SECRET": "a-production-secret-of-at-least-32-characters",
    "GATEWAY_SERVICE_KEY": "gateway-key",
    "CART_SERVICE_KEY": "cart-key",
    "REDIS_PASSWORD": "a-redis-password",
    "RABBITMQ_PASSWORD": "a-rabbitmq-password",
    "SMTP_HOST": "smtp.example.com",
}


# The OTEL_* variables, which app/tracing.py leaves to the OpenTelemetry SDK to read.
OTEL_READ = {
    name
    for module in (opentelemetry.environment_variables, opentelemetry.sdk.environment_variables)
    for name in vars(module)
    if name.startswith("OTEL_")
}
# What the app and gunicorn.conf.py read: the declared settings (tests/unit/test_settings_table.py
# checks that the code reads no other), and the OTEL_* variables.
READ = variable_names() | OTEL_READ


def interpolate(value: object) -> str:
    """What compose makes of `${VAR:-default}` / `${VAR:?message}` when the shell sets nothing
    but the required variables; innermost first, as in `${REDIS_URL:-redis://:${REDIS_PASSWORD:?...}@...}`."""

    def substitute(match: re.Match) -> str:
        name, operator, rest = match.groups()
        if operator == ":?":
            return REQUIRED[name]
        assert operator == ":-", f"${{{name}}} has no default"
        return rest

    text, previous = str(value), None
    while text != previous:
        text, previous = re.sub(r"\$\{(\w+)(:[-?])?([^${}]*)\}", substitute, text), text
    return text


CERTS_IN_CONTAINER = "/run/certs"


@functools.cache
def service_certs() -> Path:
    """The certificates scripts/make_service_certs.py makes, where compose mounts them from."""
    out = Path(tempfile.mkdtemp(prefix="service-certs-")) / "certs"
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_service_certs.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return out


def environment(name: str) -> dict[str, str]:
    """The service's environment; paths in the certificates' mount point the files the script made."""
    values = {key: interpolate(value) for key, value in SERVICES[name]["environment"].items()}
    return {key: value.replace(CERTS_IN_CONTAINER, str(service_certs())) for key, value in values.items()}


def settings_of(name: str) -> Settings:
    return load_settings(environment(name))


def published_ports(name: str) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) for each `ports` entry."""
    published = []
    for entry in SERVICES[name].get("ports", []):
        *address, host, container = interpolate(entry).split(":")
        published.append((address[0] if address else "0.0.0.0", int(host), int(container)))  # noqa: S104
    return published


def started_with(name: str) -> set[str]:
    """The services `docker compose up NAME` starts: NAME and its dependencies, transitively."""
    started, pending = set(), [name]
    while pending:
        service = pending.pop()
        if service not in started:
            started.add(service)
            pending.extend(SERVICES[service].get("depends_on", {}))
    return started


def test_the_variable_scan_sees_what_the_app_reads():
    assert {"API_PORT", "APP_MODULES", "DB_STATEMENT_TIMEOUT_MS", "SERVICE_API_KEY", "GUNICORN_WORKERS"} <= READ
    assert {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_SDK_DISABLED"} <= READ


def test_every_long_running_service_has_a_health_check():
    for name, service in SERVICES.items():
        if name == ONE_SHOT:
            continue
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), f"{name} disables its health check"


def test_the_migration_is_one_shot_and_waits_for_the_stores():
    migrate = SERVICES[ONE_SHOT]
    assert migrate["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"] == {"disable": True}
    assert {name: dep["condition"] for name, dep in migrate["depends_on"].items()} == {
        "mongodb": "service_healthy",
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }


@pytest.mark.parametrize("name", [name for name in APP_SERVICES if name != ONE_SHOT])
def test_app_services_start_after_the_migration(name):
    assert SERVICES[name]["depends_on"][ONE_SHOT] == {"condition": "service_completed_successfully"}


def test_infrastructure_runs_the_official_images():
    assert {name: service["image"] for name, service in SERVICES.items() if "image" in service} == IMAGES


@pytest.mark.parametrize(("name", "data"), [("mongodb", "/data/db"), ("postgres", "/var/lib/postgresql/data")])
def test_stores_keep_their_data_in_named_volumes(name, data):
    volumes = dict(mount.split(":", 1)[::-1] for mount in SERVICES[name]["volumes"])
    assert volumes[data] in COMPOSE["volumes"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_set_only_variables_the_app_reads(name):
    assert set(environment(name)) - READ == set()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_environments_are_valid_production_settings(name):
    settings = settings_of(name)
    assert settings.is_production
    assert settings.database_url.startswith("postgresql+psycopg2://")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_send_mail_through_the_operators_relay(name):
    """Finding 2 of the audit: the console backend would put every link's token in the logs."""
    mail = settings_of(name).mail
    assert (mail.backend, mail.smtp_host) == ("smtp", REQUIRED["SMTP_HOST"])


def test_only_the_secrets_are_required():
    text = (REPO / "docker-compose.yml").read_text()
    assert set(re.findall(r"\$\{(\w+):\?", text)) == set(REQUIRED)


@pytest.mark.parametrize("name", PORTS)
def test_each_app_service_listens_on_the_port_it_publishes_or_its_nginx_proxies_to(name):
    settings = settings_of(name)
    ports = published_ports(name)
    if name in EDGES.values():  # behind nginx, which proxies to API_PORT (its upstream template)
        edge = next(edge for edge, behind in EDGES.items() if behind == name)
        assert ports == []
        assert listen_port(settings) == int(environment(edge)["API_PORT"]) == PORTS[name]
        return
    assert [container for _, _, container in ports] == [listen_port(settings)] == [PORTS[name]]
    assert [host for _, host, _ in ports] == [PORTS[name]]


def test_the_monolith_serves_every_module_in_the_default_profile():
    assert "profiles" not in SERVICES["api"]
    assert settings_of("api").modules == MODULES
    assert settings_of("api").remote_modules() == ()


@pytest.mark.parametrize("name", SPLIT)
def test_split_services_serve_their_modules_in_the_split_profile(name):
    assert SERVICES[name]["profiles"] == ["split"]
    assert set(settings_of(name).modules) == SPLIT[name]


def test_the_split_layout_serves_every_module_exactly_once():
    served = [module for name in SPLIT for module in settings_of(name).modules]
    assert sorted(served) == sorted(MODULES)


@pytest.mark.parametrize("name", SPLIT)
def test_split_services_call_each_remote_module_at_the_service_that_serves_it(name):
    settings = settings_of(name)
    for module in settings.remote_modules():
        url = urlsplit(settings.service_url(module))
        target = settings_of(url.hostname)
        assert target.serves(module), f"{name} calls {module} at {url.hostname}, which does not serve it"
        assert url.port == listen_port(target)
        assert SERVICES[name]["depends_on"][url.hostname] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", SPLIT)
def test_each_split_service_is_known_to_the_services_it_calls_by_its_own_key(name):
    """Finding 5 of the audit: one key per caller, accepted for that caller only."""
    settings = settings_of(name)
    for module in settings.remote_modules():
        target = settings_of(urlsplit(settings.service_url(module)).hostname)
        assert (settings.caller_name(), settings.service_api_key) in target.service_caller_keys
    keys = [key for _, key in settings.service_caller_keys]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("name", SPLIT)
def test_split_services_speak_mutual_tls_with_the_certificates_the_script_makes(name):
    settings = settings_of(name)
    assert settings.service_tls is not None
    assert all(Path(path).parent == service_certs() for path in vars(settings.service_tls).values())
    assert [interpolate(volume) for volume in SERVICES[name]["volumes"]] == [f"./certs:{CERTS_IN_CONTAINER}:ro"]
    assert all(settings.service_url(module).startswith("https://") for module in settings.remote_modules())


def test_the_monolith_serves_no_internal_api_and_needs_no_service_key():
    settings = settings_of("api")
    assert not settings.serves_internal_api()
    assert (settings.service_api_key, settings.service_caller_keys, settings.remote_modules()) == (None, (), ())


def test_redis_requires_the_password_every_app_service_connects_with():
    """Finding 6 of the audit: whoever can write to Redis changes limits, revocations and carts."""
    redis = SERVICES["redis"]
    command = [interpolate(part) for part in redis["command"]]
    password = command[command.index("--requirepass") + 1]
    assert password == REQUIRED["REDIS_PASSWORD"]  # from the operator's environment, no default
    assert interpolate(redis["environment"]["REDISCLI_AUTH"]) == password  # the health check logs in
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in APP_SERVICES:
        url = urlsplit(settings_of(name).redis_url)
        assert (url.hostname, url.password) == ("redis", password), name


def test_internal_services_publish_on_the_host_loopback_only():
    for name in ("products-service", "cart-service"):
        assert {address for address, _, _ in published_ports(name)} == {"127.0.0.1"}


def test_naming_the_gateway_starts_the_split_layout_without_the_monolith():
    started = started_with("gateway")
    assert set(SPLIT) | {ONE_SHOT, "mongodb", "postgres", "redis"} <= started
    assert "api" not in started


def test_the_image_runs_gunicorn_as_a_non_root_user_with_pinned_packages():
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert re.search(rf"useradd\b.*\b{users[-1]}\b", dockerfile)
    assert re.search(r"pip install -c requirements\.lock\b", dockerfile)
    assert re.search(r"^HEALTHCHECK\b", dockerfile, re.MULTILINE)
    assert 'CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]' in dockerfile


def test_every_file_the_image_copies_exists_and_is_in_the_build_context():
    dockerfile = (REPO / "Dockerfile").read_text()
    sources = [src for line in re.findall(r"^COPY\s+(.+)$", dockerfile, re.MULTILINE) for src in line.split()[:-1]]
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", "tests", "bench", ".env"} <= ignored
    for source in sources:
        assert (REPO / source).exists(), source
        assert not ignored & {source, *(str(parent) for parent in Path(source).parents)}, source


@pytest.fixture
def gunicorn_config(monkeypatch):
    """Runs gunicorn.conf.py as gunicorn does, with only the given variables set."""

    def run(**variables: str) -> dict:
        for name in READ:
            monkeypatch.delenv(name, raising=False)
        # The file sets this one for the process (the workers inherit it); put back at the end.
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(str(REPO / "gunicorn.conf.py"))

    return run


def loaded_by_gunicorn(namespace: dict) -> Config:
    """The file's settings as gunicorn applies them: known names only, each validated."""
    config = Config()
    for name, value in namespace.items():
        if name in config.settings:
            config.set(name, value)
    return config


PRODUCTION_VARIABLES = {
    "APP_ENV": "production",
    "JWT_SECRET": REQUIRED["JWT_SECRET"],
    "DB_HOST": "postgres",
    "MAIL_BACKEND": "smtp",
}
SPLIT_VARIABLES = {
    "SERVICE_API_KEY": "service-key",
    "SERVICE_CALLER_KEYS": "gateway=gateway-key",
    "PRODUCTS_SERVICE_URL": "http://products-service:3001",
    "CART_SERVICE_URL": "http://cart-service:3002",
    "ACCOUNTS_SERVICE_URL": "http://accounts-service:3003",
}


@pytest.mark.parametrize(
    ("variables", "bind"),
    [
        ({}, "0.0.0.0:3000"),
        ({"APP_MODULES": "products"}, "0.0.0.0:3001"),
        ({"APP_MODULES": "cart"}, "0.0.0.0:3002"),
        ({"APP_MODULES": "accounts"}, "0.0.0.0:3003"),
        ({"APP_MODULES": "gateway,accounts"}, "0.0.0.0:3000"),
        ({"APP_MODULES": "cart", "CART_SERVICE_PORT": "4002", "API_HOST": "127.0.0.1"}, "127.0.0.1:4002"),
    ],
)
def test_gunicorn_binds_the_port_of_the_modules_it_serves(gunicorn_config, variables, bind):
    assert gunicorn_config(**PRODUCTION_VARIABLES, **SPLIT_VARIABLES, **variables)["bind"] == bind


def test_gunicorn_settings_are_valid_for_gunicorn(gunicorn_config):
    config = loaded_by_gunicorn(gunicorn_config(**PRODUCTION_VARIABLES))
    assert config.address == [("0.0.0.0", 3000)]  # noqa: S104
    assert config.control_socket_disable
    assert config.logger_class.__name__ == "JsonAccessLogger"


def starting(namespace: dict, bind: str | None = None) -> None:
    """gunicorn's on_starting hook, on the addresses it would bind (a --bind given on its
    command line replaces the file's)."""
    config = loaded_by_gunicorn(namespace)
    if bind is not None:
        config.set("bind", [bind])
    namespace["on_starting"](SimpleNamespace(cfg=config))


@pytest.mark.parametrize("env", ["development", "test"])
def test_outside_production_gunicorn_listens_on_loopback_by_default(gunicorn_config, env):
    namespace = gunicorn_config(APP_ENV=env)
    assert loaded_by_gunicorn(namespace).address == [("127.0.0.1", 3000)]
    starting(namespace)
    for loopback in ("localhost:3000", "[::1]:3000", "unix:/run/storefront.sock"):
        starting(namespace, loopback)


@pytest.mark.parametrize("env", ["development", "test"])
@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "[::]", "shop.example.com"])  # noqa: S104
def test_outside_production_gunicorn_refuses_to_listen_beyond_loopback(gunicorn_config, env, host):
    """Finding 3 of the audit: a development process (its JWT secret may be the one in the
    repository) must not face the network unless the operator says so."""
    with pytest.raises(ConfigError, match=rf"^Configuration error: API_HOST is '{re.escape(host)}:3000', not loopback"):
        starting(gunicorn_config(APP_ENV=env, API_HOST=host))
    with pytest.raises(ConfigError) as raised:
        starting(gunicorn_config(APP_ENV=env), f"{host}:8000")  # gunicorn --bind
    assert raised.value.variable == "--bind"
    starting(gunicorn_config(APP_ENV=env, API_HOST=host, ALLOW_PUBLIC_BIND="true"))


def test_production_listens_on_every_interface(gunicorn_config):
    namespace = gunicorn_config(**PRODUCTION_VARIABLES)
    assert namespace["bind"] == "0.0.0.0:3000"
    starting(namespace)


def public_start(command: list[str], tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    """The command in development mode (APP_ENV unset) with nothing else set but `variables`."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **variables}
    try:
        return subprocess.run(
            command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} started serving")


def test_gunicorn_in_development_mode_stops_on_a_public_host_with_one_line(tmp_path):
    port = str(free_port())
    started = public_start(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
        tmp_path,
        API_HOST="0.0.0.0",  # noqa: S104
        API_PORT=port,
    )
    assert started.returncode == 1
    assert started.stderr.strip().splitlines()[-1] == (
        f"Configuration error: API_HOST is '0.0.0.0:{port}', not loopback: in development mode the app"
        " listens on 127.0.0.1 only; set APP_ENV=production, or ALLOW_PUBLIC_BIND=true to listen there anyway"
    )


def test_flask_run_in_development_mode_stops_on_a_public_host(tmp_path):
    flask = str(Path(sys.executable).with_name("flask"))
    started = public_start(
        [flask, "--app", "wsgi", "run", "--host", "0.0.0.0", "--port", str(free_port())],  # noqa: S104
        tmp_path,
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/products?serverSelectionTimeoutMS=100",
    )
    assert started.returncode == 1
    assert (
        started.stderr.strip()
        .splitlines()[-1]
        .startswith("Configuration error: --host is '0.0.0.0', not loopback: in development mode")
    )


def test_the_image_runs_in_production_mode_unless_told():
    """So that a container started with nothing set refuses to start rather than serve the
    development JWT secret on 0.0.0.0."""
    dockerfile = (REPO / "Dockerfile").read_text()
    image_environment = dict(re.findall(r"^ENV\s+(APP_ENV)=(\S+)$", dockerfile, re.MULTILINE))
    assert image_environment == {"APP_ENV": "production"}
    with pytest.raises(ConfigError) as raised:
        load_settings(image_environment)
    assert raised.value.variable == "JWT_SECRET"
    assert SERVICES["api"]["environment"]["APP_ENV"] == "${APP_ENV:-production}"


def test_a_bad_setting_stops_gunicorn_with_the_apps_message(gunicorn_config):
    with pytest.raises(ConfigError, match="API_PORT must be a whole number"):
        gunicorn_config(API_PORT="x")


def test_gunicorn_workers_follow_the_cpu_count_unless_set(gunicorn_config, monkeypatch):
    monkeypatch.setattr("multiprocessing.cpu_count", lambda: 2)
    assert gunicorn_config()["workers"] == 5
    assert gunicorn_config(GUNICORN_WORKERS="")["workers"] == 5  # compose passes unset ones blank
    assert gunicorn_config(GUNICORN_WORKERS="3")["workers"] == 3
    monkeypatch.setattr("multiprocessing.cpu_count", lambda: 16)
    assert gunicorn_config()["workers"] == 8


def access_line(gunicorn_config, capsys, environ_extra: dict | None = None, request_id: str = "req-1", **variables):
    config = loaded_by_gunicorn(gunicorn_config(**variables))
    logger = config.logger_class(config)
    path = '/v1/products/a"b\\c\n'
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/v1/products/a%22b%5Cc%0A?q=%22x%22",
        "PATH_INFO": path,
        "QUERY_STRING": "q=%22x%22",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.7",
        "HTTP_USER_AGENT": 'curl "8"',
        **(environ_extra or {}),
    }
    request = SimpleNamespace(headers=[("USER-AGENT", 'curl "8"'), ("X-REQUEST-ID", request_id)])
    response = SimpleNamespace(status="404 NOT FOUND", sent=57, headers=[("Content-Type", "application/problem+json")])

    logger.access(response, request, environ, timedelta(microseconds=12_345))

    return capsys.readouterr().out.splitlines()


NO_REQUEST_FIELDS = dict.fromkeys(("trace_id", "span_id", "route", "user_id", "guest_id", "caller"))


def test_the_access_log_is_one_json_object_per_request_on_stdout(gunicorn_config, capsys):
    [line] = access_line(gunicorn_config, capsys, LOG_FORMAT="json")
    entry = json.loads(line)
    assert entry.pop("timestamp").endswith("Z")
    assert entry == {
        "event": "access",
        "level": "info",
        "logger": "gunicorn.access",
        "remote_addr": "10.0.0.7",
        "method": "GET",
        "path": '/v1/products/a"b\\c\n',
        "query": "q=%22x%22",
        "status": 404,
        "bytes": 57,
        "duration_ms": 12.345,
        "user_agent": 'curl "8"',
        "request_id": "req-1",  # a request the app never saw: the caller's id, when sane
        **NO_REQUEST_FIELDS,
    }


def test_the_access_line_carries_the_fields_the_app_left_for_it(gunicorn_config, capsys):
    fields = {**NO_REQUEST_FIELDS, "request_id": "ab12", "route": "/v1/products/<product_id>", "user_id": "u-1"}
    [line] = access_line(
        gunicorn_config,
        capsys,
        {"storefront.log_fields": fields},
        APP_ENV="production",
        **{key: value for key, value in PRODUCTION_VARIABLES.items() if key != "APP_ENV"},
    )
    entry = json.loads(line)  # JSON by default in production
    assert {key: entry[key] for key in fields} == fields


def test_an_insane_request_id_is_not_written_and_console_lines_outside_production(gunicorn_config, capsys):
    [line] = access_line(gunicorn_config, capsys, request_id="x" * 129)
    assert "access" in line
    assert "request_id=None" in line
    assert "x" * 129 not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize(
    ("answer", "healthy"),
    [
        (None, True),  # 200: ready
        (HTTPError("http://x", 503, "Service Unavailable", {}, None), False),  # not_ready
        (URLError(ConnectionRefusedError()), False),  # nothing listening
    ],
)
def test_the_container_health_check(monkeypatch, answer, healthy):
    def urlopen(url, timeout, context):
        assert (url, context) == ("http://127.0.0.1:3001/health/ready", None)
        if answer is not None:
            raise answer
        return nullcontext()

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    check = runpy.run_path(str(REPO / "scripts" / "healthcheck.py"))["check"]
    assert check(settings_of("products-service").override(service_tls=None)) is healthy


def test_the_health_check_of_a_service_with_mutual_tls_presents_its_certificate(monkeypatch):
    seen = {}

    def urlopen(url, timeout, context):
        seen.update(url=url, verify_mode=context.verify_mode)
        return nullcontext()

    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    check = runpy.run_path(str(REPO / "scripts" / "healthcheck.py"))["check"]
    assert check(settings_of("cart-service")) is True
    assert seen == {"url": "https://127.0.0.1:3002/health/ready", "verify_mode": ssl.CERT_REQUIRED}


def test_the_sweeper_runs_in_both_layouts_and_reports_its_heartbeat():
    sweeper = SERVICES["sweeper"]
    assert "profiles" not in sweeper  # `docker compose up` starts it with the monolith
    assert "sweeper" in started_with("gateway")  # and naming the gateway starts it in the split layout
    command = [interpolate(part) for part in sweeper["command"]]
    assert command[:5] == ["flask", "--app", "wsgi", "carts", "sweep"]
    heartbeat = command[command.index("--heartbeat") + 1]
    assert int(command[command.index("--every") + 1]) > 0
    assert sweeper["healthcheck"]["test"] == ["CMD", "python", "scripts/healthcheck.py", "--heartbeat", heartbeat]


def test_the_relay_runs_in_both_layouts_after_rabbitmq_and_reports_its_heartbeat():
    relay = SERVICES["relay"]
    assert "profiles" not in relay
    assert "relay" in started_with("gateway")
    assert relay["command"][:6] == ["flask", "--app", "wsgi", "events", "relay", "--heartbeat"]
    heartbeat = relay["command"][relay["command"].index("--heartbeat") + 1]
    assert relay["healthcheck"]["test"] == ["CMD", "python", "scripts/healthcheck.py", "--heartbeat", heartbeat]
    assert relay["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    assert relay["expose"] == [str(settings_of("relay").metrics_port)]  # scraped by prometheus.yml's `relay` job


def test_the_consumers_run_in_both_layouts_after_rabbitmq_with_the_apis_environment_and_a_heartbeat():
    consumers = SERVICES["consumers"]
    assert "profiles" not in consumers  # `docker compose up` starts them with the monolith
    assert "consumers" in started_with("gateway")  # and naming the gateway starts them in the split layout
    assert consumers["command"][:6] == ["flask", "--app", "wsgi", "events", "consume", "--heartbeat"]
    heartbeat = consumers["command"][consumers["command"].index("--heartbeat") + 1]
    assert consumers["healthcheck"]["test"] == ["CMD", "python", "scripts/healthcheck.py", "--heartbeat", heartbeat]
    assert consumers["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    api = {key: value for key, value in environment("api").items() if key != "TRUSTED_PROXIES"}  # nginx's hop
    assert environment("consumers") == api  # the stores, SMTP and RABBITMQ_URL the api has
    settings = settings_of("consumers")
    assert settings.modules == MODULES  # every module's consumers are registered
    assert settings.rabbitmq_url
    assert settings.mail.backend == "smtp"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_reach_rabbitmq_as_the_user_it_creates(name):
    """RABBITMQ_USER / RABBITMQ_PASSWORD make the broker's user and every app service's URL."""
    broker = {key: interpolate(value) for key, value in SERVICES["rabbitmq"]["environment"].items()}
    url = urlsplit(settings_of(name).rabbitmq_url)
    assert (url.scheme, url.hostname, url.port, url.path) == ("amqp", "rabbitmq", 5672, "/")
    assert (url.username, url.password) == (broker["RABBITMQ_DEFAULT_USER"], REQUIRED["RABBITMQ_PASSWORD"])
    assert broker["RABBITMQ_DEFAULT_PASS"] == REQUIRED["RABBITMQ_PASSWORD"]


@pytest.mark.parametrize(("content", "healthy"), [("{due}", True), ("{overdue}", False), ("", False), (None, False)])
def test_the_heartbeat_health_check(tmp_path, content, healthy):

    heartbeat = tmp_path / "heartbeat"
    if content is not None:
        heartbeat.write_text(content.format(due=time.time() + 60, overdue=time.time() - 1))
    check = runpy.run_path(str(REPO / "scripts" / "healthcheck.py"))["check_heartbeat"]
    assert check(heartbeat) is healthy


# --- the nginx edge (issue 12): one in front of each layout's public API ----------------------

EDGE_MOUNTS = {
    "storefront.conf": "/etc/nginx/conf.d/default.conf",  # the http-context file of the official image
    "upstream-{app}.conf.template": "/etc/nginx/templates/upstream.conf.template",  # rendered into conf.d
}


def nginx_directives(text: str) -> dict[str, list[str]]:
    """`name value...;` statements of an nginx file (comments dropped), values by name."""
    found: dict[str, list[str]] = {}
    for statement in re.sub(r"#[^\n]*", "", text).replace("{", ";").replace("}", ";").split(";"):
        words = statement.split(None, 1)
        if words:
            found.setdefault(words[0], []).append(words[1].strip() if len(words) > 1 else "")
    return found


@pytest.mark.parametrize(("edge", "behind"), EDGES.items())
def test_each_layouts_nginx_mounts_the_repositorys_config_in_front_of_its_app(edge, behind):
    service = SERVICES[edge]
    mounts = [volume.split(":") for volume in service["volumes"]]
    expected = {f"./deploy/nginx/{source.format(app=behind)}": target for source, target in EDGE_MOUNTS.items()}
    assert {source: target for source, target, _ in mounts} == expected
    assert {mode for _, _, mode in mounts} == {"ro"}
    for source in expected:
        assert (REPO / source).is_file(), source
    upstream = (REPO / "deploy" / "nginx" / f"upstream-{behind}.conf.template").read_text()
    assert re.findall(r"^\s*server\s+(\S+)", upstream, re.MULTILINE) == [f"{behind}:${{API_PORT}}"]
    assert service["depends_on"] == {behind: {"condition": "service_healthy"}}
    assert service.get("profiles") == SERVICES[behind].get("profiles")
    assert service["healthcheck"]["test"][-1] == "http://127.0.0.1/edge-health"


@pytest.mark.parametrize(("edge", "behind"), EDGES.items())
def test_two_replicas_of_the_public_api_behind_each_nginx_trusting_exactly_its_hop(edge, behind):
    assert SERVICES[behind]["deploy"]["replicas"] >= 2
    assert settings_of(behind).trusted_proxies == 1


def test_services_not_behind_nginx_trust_no_proxy():
    for name in set(APP_SERVICES) - set(EDGES.values()):
        assert settings_of(name).trusted_proxies == 0, name


def test_only_nginx_publishes_the_public_port():
    public = {name: ports for name in SERVICES if (ports := [p for p in published_ports(name) if p[0] != "127.0.0.1"])}
    assert public == {edge: [("0.0.0.0", PORTS[behind], 80)] for edge, behind in EDGES.items()}  # noqa: S104


def test_naming_nginx_split_starts_the_split_layout_without_the_monolith():
    started = started_with("nginx-split")
    assert set(SPLIT) | {ONE_SHOT, "sweeper", "mongodb", "postgres", "redis"} <= started
    assert not {"api", "nginx"} & started
    assert not set(SPLIT) & started_with("nginx")


def test_nginx_buffers_whole_requests_within_the_apps_limits():
    """A gunicorn sync worker serves one request at a time: nginx must hold a slow client's
    request until it is whole, refuse what the app would refuse, and say who the client is."""
    config = nginx_directives(nginx_server.SERVER_CONFIG.read_text())
    assert config["client_max_body_size"] == ["64k"]
    assert Settings.max_content_length == 64 * 1024
    assert config["proxy_request_buffering"] == ["on"]
    for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        [value] = config[timeout]
        assert re.fullmatch(r"\d+s", value), timeout
        assert 0 < int(value[:-1]) <= 30, timeout
    headers = dict(value.split(None, 1) for value in config["proxy_set_header"])
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert config["proxy_pass"] == ["http://storefront_app"]


@pytest.mark.parametrize("behind", EDGES.values())
def test_nginx_accepts_the_edge_config(tmp_path, behind):
    """`nginx -t` on the repository's files, the compose host name replaced by loopback
    addresses (nginx -t resolves upstream names)."""
    template = nginx_server.UPSTREAMS[behind]
    config = nginx_server.render(tmp_path, free_port(), ["127.0.0.1:3000", "127.0.0.1:3010"], template=template)
    checked = nginx_server.check(config)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
