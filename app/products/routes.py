"""The products service API: what other services call when this module runs on its own.

Mounted under /internal/products and closed to the public: every request needs a key from
SERVICE_API_KEY in the X-Service-Key header.
"""

import hmac

from flask import current_app, request
from flask.views import MethodView

from app.errors import ApiError
from app.extensions import ApiBlueprint
from app.products import interface as products
from app.products.schemas import ProductRecordSchema, ReservationSchema, ReserveSchema

blp = ApiBlueprint(
    "internal-products",
    __name__,
    url_prefix="/internal/products",
    description="Products service API for other services (needs X-Service-Key).",
)
SERVICE_KEY = [{"serviceKey": []}]


@blp.before_request
def require_service_key() -> None:
    sent = request.headers.get("X-Service-Key", "").encode()
    keys = current_app.config["SERVICE_API_KEYS"]
    if not sent or not any(hmac.compare_digest(sent, key.encode()) for key in keys):
        raise ApiError(401, "service_key_invalid", "A valid X-Service-Key header is required.")


@blp.route("/<string:product_id>")
class ProductRecord(MethodView):
    @blp.response(200, ProductRecordSchema)
    @blp.problem_response(404, "`product_not_found`")
    @blp.doc(security=SERVICE_KEY)
    def get(self, product_id):
        """Get one product, archived ones included"""
        return products.get_product(product_id=product_id)


@blp.route("/reservations/<string:reservation_id>")
class ReservationById(MethodView):
    @blp.arguments(ReserveSchema)
    @blp.response(200, ReservationSchema)
    @blp.problem_response(404, "`product_not_found`")
    @blp.problem_response(409, "`insufficient_stock`, `reservation_conflict` or `reservation_busy`")
    @blp.doc(security=SERVICE_KEY)
    def put(self, reservation, reservation_id):
        """Hold exactly `quantity` units for this reservation (idempotent)"""
        return products.reserve_stock(reservation_id=reservation_id, **reservation)


@blp.route("/reservations/<string:reservation_id>/release")
class ReservationRelease(MethodView):
    @blp.response(200, ReservationSchema)
    @blp.problem_response(404, "`reservation_not_found`")
    @blp.doc(security=SERVICE_KEY)
    def post(self, reservation_id):
        """Release the reserved units (idempotent)"""
        return products.release_reservation(reservation_id=reservation_id)


@blp.route("/reservations/<string:reservation_id>/commit")
class ReservationCommit(MethodView):
    @blp.response(200, ReservationSchema)
    @blp.problem_response(404, "`reservation_not_found`")
    @blp.problem_response(409, "`reservation_conflict` (already released)")
    @blp.doc(security=SERVICE_KEY)
    def post(self, reservation_id):
        """Turn the reservation into a sale (idempotent)"""
        return products.commit_reservation(reservation_id=reservation_id)
