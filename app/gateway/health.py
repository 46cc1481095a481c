"""GET /v1/health, compatible with the original gateway's health report."""

from datetime import UTC, datetime

from flask.views import MethodView

from app.accounts import interface as accounts
from app.extensions import ApiBlueprint, limiter
from app.gateway.schemas import HealthSchema
from app.products import interface as products

blp = ApiBlueprint("health", __name__, url_prefix="/v1/health", description="Liveness and dependencies.")


@blp.route("")
class Health(MethodView):
    decorators = [limiter.exempt]

    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A store is down (`status: degraded`)")
    def get(self):
        """Report the gateway's health and each store's status"""
        dependencies = {
            "productsService": {"status": "ok" if products.is_available() else "down", "store": "mongodb"},
            "accountsService": {"status": "ok" if accounts.is_available() else "down", "store": accounts.store_name()},
        }
        healthy = all(dependency["status"] == "ok" for dependency in dependencies.values())
        report = {
            "status": "ok" if healthy else "degraded",
            "timestamp": datetime.now(UTC),
            "service": "api-gateway",
            "dependencies": dependencies,
        }
        return report, 200 if healthy else 503
