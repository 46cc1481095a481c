"""Public orders API: /v1/orders (your own; admins see every order)."""

from flask.views import MethodView
from flask_jwt_extended import get_jwt, get_jwt_identity

from app.cart import interface as cart
from app.extensions import ApiBlueprint
from app.gateway.auth import BEARER, signed_in
from app.gateway.cart_schemas import OrderSchema

blp = ApiBlueprint("orders", __name__, url_prefix="/v1/orders", description="Orders placed by checkout.")


def _owner_scope() -> str | None:
    """None (every order) for admins, else the caller's own id."""
    return None if "admin" in (get_jwt().get("roles") or ()) else get_jwt_identity()


@blp.route("")
class Orders(MethodView):
    @signed_in
    @blp.response(200, OrderSchema(many=True))
    @blp.paginate(page_size=20, max_page_size=100)
    @blp.doc(security=BEARER)
    def get(self, pagination_parameters):
        """Your orders, newest first (admins: every order)"""
        page = cart.list_orders(
            owner_id=_owner_scope(), page=pagination_parameters.page, page_size=pagination_parameters.page_size
        )
        pagination_parameters.item_count = page.total
        return list(page.items)


@blp.route("/<string:order_id>")
class OrderById(MethodView):
    @signed_in
    @blp.response(200, OrderSchema)
    @blp.problem_response(404, "`order_not_found` (also for another user's order)")
    @blp.doc(security=BEARER)
    def get(self, order_id):
        """One of your orders (admins: any order)"""
        return cart.get_order(order_id=order_id, owner_id=_owner_scope())
