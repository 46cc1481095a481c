"""GET /v1/health, compatible with the original gateway's health report, served in every run
mode (the gateway, or one module's service) so that orchestrators can probe any process.

Each module this process serves reports its store; each module it calls over HTTP reports
whether its service answers (and its URL, as the original did). Redis, when configured, is
reported too, but it only degrades the process: rate limits then count per worker and caches
are bypassed, so the answer stays 200 while every store and service is up.
"""

from datetime import UTC, datetime

from flask import current_app
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


@blp.route("")
class Health(MethodView):
    decorators = [limiter.exempt]

    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A store or service is down (`status: degraded`)")
    def get(self):
        """Report this process's health and that of each store and service it depends on"""
        settings = current_app.extensions["settings"]
        dependencies = {}
        for module, interface in MODULES.items():
            if settings.serves(module):
                store = STORES.get(module) or accounts.store_name()
                dependencies[f"{module}Service"] = {"status": _status(interface.is_available), "store": store}
            elif module in settings.remote_modules():
                url = settings.service_url(module)
                dependencies[f"{module}Service"] = {"status": _status(interface.is_available), "url": url}
        healthy = all(dependency["status"] == "ok" for dependency in dependencies.values())
        if settings.redis_url:
            dependencies["redis"] = {"status": _redis_status(settings)}
        report = {
            "status": "ok" if all(dependency["status"] == "ok" for dependency in dependencies.values()) else "degraded",
            "timestamp": datetime.now(UTC),
            "service": "api-gateway" if settings.serves("gateway") else f"{settings.modules[0]}-service",
            "dependencies": dependencies,
        }
        return report, 200 if healthy else 503


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
