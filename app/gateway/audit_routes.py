"""Admin API: /v1/admin/audit, the audit trail (every event, as the audit consumer recorded it)."""

from flask.views import MethodView

from app.events import audit
from app.extensions import ApiBlueprint
from app.gateway.audit_schemas import AuditEntrySchema, AuditQuerySchema
from app.gateway.auth import BEARER, admin_only

blp = ApiBlueprint(
    "audit", __name__, url_prefix="/v1/admin/audit", description="The audit trail: every event, append-only (admin)."
)


@blp.route("")
class AuditTrail(MethodView):
    @admin_only
    @blp.arguments(AuditQuerySchema, location="query", as_kwargs=False)
    @blp.response(200, AuditEntrySchema(many=True))
    @blp.paginate(page_size=20, max_page_size=100)
    @blp.problem_response(
        400, "`validation_error`: a filter is malformed (an unknown type, a bad time, since >= until)"
    )
    @blp.problem_response(401, "Missing, invalid or expired token (`token_missing`, `token_invalid`, ...)")
    @blp.problem_response(403, "`forbidden`: not an admin")
    @blp.problem_response(503, "`dependency_unavailable`: the database does not answer")
    @blp.doc(security=BEARER)
    def get(self, filters, pagination_parameters):
        """The audit trail (admin), newest first

        Every event (cart, order, product and user events) as recorded by the `audit`
        consumer, filtered by aggregate (`aggregateType`, `aggregateId`), `type` and time of
        occurrence (`since` inclusive, `until` exclusive), paged with `page` and `page_size`
        (default 20, max 100), the totals in `X-Pagination`. Events reach the trail moments
        after their change commits (through the outbox and the consumers).
        """
        page = audit.list_entries(filters, page=pagination_parameters.page, page_size=pagination_parameters.page_size)
        pagination_parameters.item_count = page.total
        return list(page.items)
