"""Public cart API: /v1/cart (the original's routes, with a user's or a guest's token)."""

from flask.views import MethodView
from flask_jwt_extended import get_jwt_identity

from app.cart import interface as cart
from app.extensions import ApiBlueprint
from app.gateway.auth import BEARER, roles_required
from app.gateway.cart_schemas import AddItemSchema, CartSchema, RemoveItemQuerySchema, SetQuantitySchema
from app.gateway.http import etag_of, require_json_body

blp = ApiBlueprint(
    "cart", __name__, url_prefix="/v1/cart", description="The shopper's cart; stock is held while it is."
)
blp.before_request(require_json_body)
shopper = roles_required("customer", "admin", "guest")
STOCK_ERRORS = (
    (404, "`product_not_found`, or `line_not_found`"),
    (409, "`insufficient_stock` (with `available`) or `quantity_limit_exceeded`"),
    (503, "`dependency_unavailable`: the products store cannot be reached"),
)


def _cart_docs(view):
    view = blp.doc(security=BEARER)(view)
    for status, description in STOCK_ERRORS:
        view = blp.problem_response(status, description)(view)
    return view


def _with_etag(current: cart.Cart, status: int = 200):
    return current, status, {"ETag": etag_of(current.version)}


@blp.route("")
class Cart(MethodView):
    @shopper
    @blp.response(200, CartSchema)
    @blp.doc(security=BEARER)
    def get(self):
        """Your cart (created empty if you have none)"""
        return _with_etag(cart.get_cart(owner_id=get_jwt_identity()))

    @shopper
    @blp.response(200, CartSchema)
    @blp.doc(security=BEARER)
    def delete(self):
        """Empty your cart, releasing its stock"""
        return _with_etag(cart.empty_cart(owner_id=get_jwt_identity()))


@blp.route("/products")
class CartProducts(MethodView):
    @shopper
    @blp.arguments(AddItemSchema)
    @blp.response(201, CartSchema)
    @_cart_docs
    def post(self, body):
        """Add units of a product (reserves them)"""
        return _with_etag(cart.add_item(owner_id=get_jwt_identity(), **body), 201)


@blp.route("/products/<string:product_id>")
class CartProduct(MethodView):
    @shopper
    @blp.arguments(SetQuantitySchema)
    @blp.response(200, CartSchema)
    @_cart_docs
    def put(self, body, product_id):
        """Set a line's quantity (0 removes it)"""
        return _with_etag(cart.set_item_quantity(owner_id=get_jwt_identity(), product_id=product_id, **body))

    @shopper
    @blp.arguments(RemoveItemQuerySchema, location="query")
    @blp.response(200, CartSchema)
    @_cart_docs
    def delete(self, query, product_id):
        """Remove ONE unit, deleting the line at zero (the original's behaviour); `?all=true` removes the line"""
        return _with_etag(cart.remove_item(owner_id=get_jwt_identity(), product_id=product_id, whole_line=query["all"]))
