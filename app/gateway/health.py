"""GET /v1/health, compatible with the original gateway's health report, served in every run
mode (the gateway, or one module's service) so that orchestrators can probe any process.

Each module this process serves reports its store; each module it calls over HTTP reports
whether its service answers (not its URL, which the original showed to anyone). Redis, when
configured, is reported too, but it only degrades the process: rate limits then count per
worker and caches are bypassed, so the answer stays 200 while every store and service is up.

Anyone may ask, so the stores are never probed per request: each worker answers from its last
report while it is under MAX_AGE_SECONDS old, one request at a time probing for a new one, and
each client IP has HEALTH_RATE_LIMIT requests (loopback, the container's own check, is not counted).
"""

import ipaddress
import threading
import time
from datetime import UTC, datetime

from flask import current_app, request
from flask.views import MethodView
from redis import Redis, RedisError

from app.accounts import interface as accounts
from app.cart import interface as cart
from app.errors import DomainError
from app.extensions import ApiBlueprint, limiter
from app.gateway.schemas import HealthSchema
from app.products import interface as products

blp = ApiBlueprint("health", __name__, url_prefix="/v1/health", description="Liveness and dependencies.")
MODULES = {"products": products, "cart": cart, "accounts": accounts}
STORES = {"products": "mongodb"}
MAX_AGE_SECONDS = 1.0
_probing = threading.Lock()


def health_rate_limit() -> str:
    return current_app.config["HEALTH_RATE_LIMIT"]


def from_loopback() -> bool:
    """The container's own health check (scripts/healthcheck.py) asks on loopback: it is never
    refused, or a busy public client could get the container marked unhealthy and restarted."""
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


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
        report, healthy = _recent_report()
        return report, 200 if healthy else 503


def _recent_report() -> tuple[dict, bool]:
    """This worker's last report while it is fresh, else a new one (made by one thread at a
    time: the others wait for it rather than probe the stores too)."""
    recent = current_app.extensions.get("health_report")
    if recent is None or time.monotonic() - recent[0] >= MAX_AGE_SECONDS:
        with _probing:
            recent = current_app.extensions.get("health_report")
            if recent is None or time.monotonic() - recent[0] >= MAX_AGE_SECONDS:
                recent = (time.monotonic(), *_probe())
                current_app.extensions["health_report"] = recent
    return recent[1], recent[2]


def _probe() -> tuple[dict, bool]:
    settings = current_app.extensions["settings"]
    dependencies = {}
    for module, interface in MODULES.items():
        if settings.serves(module):
            store = STORES.get(module) or accounts.store_name()
            dependencies[f"{module}Service"] = {"status": _status(interface.is_available), "store": store}
        elif module in settings.remote_modules():
            dependencies[f"{module}Service"] = {"status": _status(interface.is_available)}
    healthy = all(dependency["status"] == "ok" for dependency in dependencies.values())
    if settings.redis_url:
        dependencies["redis"] = {"status": _redis_status(settings)}
    report = {
        "status": "ok" if all(dependency["status"] == "ok" for dependency in dependencies.values()) else "degraded",
        "timestamp": datetime.now(UTC),
        "service": "api-gateway" if settings.serves("gateway") else f"{settings.modules[0]}-service",
        "dependencies": dependencies,
    }
    return report, healthy


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
