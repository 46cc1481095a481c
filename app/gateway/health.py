"""GET /v1/health, compatible with the original gateway's health report, served in every run
mode (the gateway, or one module's service) so that orchestrators can probe any process.

Each module this process serves reports its store; each module it calls over HTTP reports
whether its service answers (not its URL, which the original showed to anyone). Redis, when
configured, is reported too, but it only degrades the process: rate limits then count per
worker and caches are bypassed, so the answer stays 200 while every store and service is up.

Anyone may ask, so the stores are never probed per request: each worker answers from its last
report while it is under MAX_AGE_SECONDS old, one request at a time probing for a new one, and
each client IP has HEALTH_RATE_LIMIT requests (loopback, the container's own check, is not counted).

GET /health/live and /health/ready are the orchestrator's probes, under the same rate limit.
Live touches nothing: the process answers. Ready is made from the same report, plus two
checks of its own: the SQL database is at the migrations' head (read at start-up), and no
circuit breaker is refusing calls. Redis, which only degrades the process, is left out of
both, and so is the token-revocation breaker in front of it (PostgreSQL answers meanwhile).
"""

import ipaddress
import threading
import time
from datetime import UTC, datetime

from flask import Flask, current_app, request
from flask.views import MethodView
from redis import Redis, RedisError

from app import metrics
from app.accounts import interface as accounts
from app.cart import interface as cart
from app.errors import DomainError, problem
from app.extensions import ApiBlueprint, database_revisions, limiter, migration_heads
from app.gateway.schemas import HealthSchema, NotReadyProblemSchema, ProbeSchema
from app.products import interface as products
from app.resilience import is_refusing_calls

blp = ApiBlueprint("health", __name__, url_prefix="/v1/health", description="Liveness and dependencies.")
probes_blp = ApiBlueprint(
    "probes", __name__, url_prefix="/health", description="Liveness and readiness probes for orchestrators."
)
MODULES = {"products": products, "cart": cart, "accounts": accounts}
STORES = {"products": "mongodb"}
SQL_MODULES = ("accounts", "cart")
MAX_AGE_SECONDS = 1.0
_probing = threading.Lock()


def health_rate_limit() -> str:
    return current_app.extensions["settings"].health_rate_limit


def from_loopback() -> bool:
    """The container's own health check (scripts/healthcheck.py) asks on loopback: it is never
    refused, or a busy public client could get the container marked unhealthy and restarted."""
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def init_app(app: Flask) -> None:
    """Read the migrations' head once, in a process that uses the SQL database."""
    settings = app.extensions["settings"]
    if any(settings.serves(module) for module in SQL_MODULES):
        app.extensions["migration_heads"] = migration_heads(app.extensions["migrate"].directory)


def dependency_breakers(app: Flask) -> dict:
    """Every breaker in front of a dependency that requests cannot do without, by name: one per
    store in use (created at its first call, app/errors.py) and one per service called."""
    breakers = dict(app.extensions.get("breakers", {}))
    for client in app.extensions.get("remote_ports", {}).values():
        breakers[client.breaker.name] = client.breaker
    return breakers


@blp.route("")
class Health(MethodView):
    decorators = [limiter.limit(health_rate_limit, exempt_when=from_loopback)]

    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A store or service is down (`status: degraded`)")
    @blp.problem_response(429, "More than HEALTH_RATE_LIMIT requests from this client (`rate_limited`)")
    def get(self):
        """Report this process's health and that of each store and service it depends on

        The report may be up to a second old (`timestamp` says when it was made).
        """
        report, healthy, _failed = _recent_report()
        return report, 200 if healthy else 503


@probes_blp.route("/live")
class Live(MethodView):
    decorators = [limiter.limit(health_rate_limit, exempt_when=from_loopback)]

    @probes_blp.response(200, ProbeSchema)
    @probes_blp.problem_response(429, "More than HEALTH_RATE_LIMIT requests from this client (`rate_limited`)")
    def get(self):
        """Whether the process answers (liveness)

        Asks no store: a store outage makes the process unready, never dead.
        """
        return {"status": "ok"}


@probes_blp.route("/ready")
class Ready(MethodView):
    decorators = [limiter.limit(health_rate_limit, exempt_when=from_loopback)]

    @probes_blp.response(200, ProbeSchema)
    @probes_blp.problem_response(
        503,
        "A store or service is down, the database is not at the migrations' head, or a breaker is open "
        "(`not_ready`, with the failed checks)",
        schema=NotReadyProblemSchema,
    )
    @probes_blp.problem_response(429, "More than HEALTH_RATE_LIMIT requests from this client (`rate_limited`)")
    def get(self):
        """Whether the process can serve requests (readiness)

        Every store it uses answers, every service it calls answers, the SQL database is at the
        migrations' head and no circuit breaker is open. The answer may be up to a second old.
        """
        _report, _healthy, failed = _recent_report()
        if failed:
            names = ", ".join(f"{check['check']} {check['name']}" for check in failed)
            return problem(503, "not_ready", f"Not ready: {names}.", failed=failed)
        return {"status": "ok"}


def _recent_report() -> tuple[dict, bool, list[dict[str, str]]]:
    """This worker's last report while it is fresh, else a new one (made by one thread at a
    time: the others wait for it rather than probe the stores too)."""
    recent = current_app.extensions.get("health_report")
    if recent is None or time.monotonic() - recent[0] >= MAX_AGE_SECONDS:
        with _probing:
            recent = current_app.extensions.get("health_report")
            if recent is None or time.monotonic() - recent[0] >= MAX_AGE_SECONDS:
                recent = (time.monotonic(), *_probe())
                current_app.extensions["health_report"] = recent
    return recent[1], recent[2], recent[3]


def _probe() -> tuple[dict, bool, list[dict[str, str]]]:
    """The /v1/health report, whether it is healthy, and the readiness checks that failed."""
    settings = current_app.extensions["settings"]
    dependencies = {}
    failed = []
    for module, interface in MODULES.items():
        if settings.serves(module):
            store = STORES.get(module) or accounts.store_name()
            dependencies[f"{module}Service"] = {"status": _status(interface.is_available), "store": store}
            if dependencies[f"{module}Service"]["status"] != "ok":
                failed.append({"check": "store", "name": store})
        elif module in settings.remote_modules():
            dependencies[f"{module}Service"] = {"status": _status(interface.is_available)}
            if dependencies[f"{module}Service"]["status"] != "ok":
                failed.append({"check": "service", "name": f"{module}-service"})
    failed = list({(check["check"], check["name"]): check for check in failed}.values())  # one store, two modules
    heads = current_app.extensions.get("migration_heads")
    if heads is not None:
        revisions = database_revisions()
        if revisions is not None and revisions != heads:  # None: the database is down, failed above
            store = next(dependencies[f"{module}Service"]["store"] for module in SQL_MODULES if settings.serves(module))
            failed.append({"check": "migrations", "name": store})
    # After the probes, which go through the breakers of the services called (a probe may close one).
    for name, breaker in sorted(dependency_breakers(current_app).items()):
        if is_refusing_calls(breaker):
            failed.append({"check": "breaker", "name": name})
    healthy = all(dependency["status"] == "ok" for dependency in dependencies.values())
    if settings.redis_url:
        dependencies["redis"] = {"status": _redis_status(settings)}
    report = {
        "status": "ok" if all(dependency["status"] == "ok" for dependency in dependencies.values()) else "degraded",
        "timestamp": datetime.now(UTC),
        "service": "api-gateway" if settings.serves("gateway") else f"{settings.modules[0]}-service",
        "dependencies": dependencies,
    }
    metrics.READY.labels(report["service"]).set(0 if failed else 1)
    return report, healthy, failed


def _status(is_available) -> str:
    try:
        return "ok" if is_available() else "down"
    except DomainError:  # the module's service cannot be reached
        return "down"


def _redis_status(settings) -> str:
    client = current_app.extensions.get("health_redis")
    if client is None:
        timeout = settings.resilience.redis_timeout
        client = Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        current_app.extensions["health_redis"] = client
    try:
        client.ping()
    except RedisError:
        return "down"
    return "ok"
