"""Public cart API: /v1/cart (the original's routes, with a user's or a guest's token)."""

from flask import Response, current_app, request
from flask.views import MethodView
from flask_jwt_extended import get_jwt_identity

from app.cart import interface as cart
from app.errors import ApiError
from app.extensions import ApiBlueprint, ProblemSchema, ProductProblemSchema
from app.gateway.auth import BEARER, guest_subject, roles_required, signed_in
from app.gateway.cart_schemas import (
    AddItemSchema,
    CartChangedProblemSchema,
    CartConflictProblemSchema,
    CartSchema,
    MergeRequestSchema,
    MergeResultSchema,
    OrderSchema,
    RemoveItemQuerySchema,
    SetQuantitySchema,
    cart_json,
)
from app.gateway.http import optional_expected_version, require_json_body, with_etag
from app.gateway.idempotency import IDEMPOTENCY_KEY, idempotent

blp = ApiBlueprint(
    "cart", __name__, url_prefix="/v1/cart", description="The shopper's cart; stock is held while it is."
)
blp.before_request(require_json_body)
shopper = roles_required("customer", "admin", "guest")
IF_MATCH = {"in": "header", "name": "If-Match", "schema": {"type": "string"}, "description": "The cart's ETag"}
WRITE_ERRORS = (
    (404, "`product_not_found`, or `line_not_found`", ProductProblemSchema),
    (
        409,
        "`insufficient_stock` (with `available`), `quantity_limit_exceeded` (100 per line), "
        "`cart_line_limit_exceeded` (CART_MAX_LINES), `cart_unit_limit_exceeded` (CART_MAX_UNITS), "
        "`currency_mismatch` (a cart has the currency of its first line), `idempotency_key_in_use`",
        CartConflictProblemSchema,
    ),
    (412, "`precondition_failed`: If-Match names an older version of the cart", CartChangedProblemSchema),
    (422, "`idempotency_key_reused` with a different request", ProblemSchema),
    (503, "`dependency_unavailable`: the products store cannot be reached", ProblemSchema),
)


def _cart_answer(answer: cart.Cart, status: int = 200) -> Response:
    """The cart as CartSchema documents it, from its memoised JSON (cart_json: rendered once
    per distinct cart, not per request), with its ETag. flask-smorest passes a Response
    through, so `@blp.response(..., CartSchema)` only documents the view."""
    _, status, headers = with_etag(answer, status)
    return current_app.response_class(cart_json(answer), status=status, headers=headers, mimetype="application/json")


def _write_docs(view):
    """A cart write: bearer auth, optional If-Match and Idempotency-Key, its errors."""
    view = blp.doc(security=BEARER, parameters=[IF_MATCH, IDEMPOTENCY_KEY])(view)
    for status, description, schema in WRITE_ERRORS:
        view = blp.problem_response(status, description, schema)(view)
    return view


@blp.route("")
class Cart(MethodView):
    @shopper
    @blp.response(200, CartSchema)
    @blp.doc(security=BEARER)
    def get(self):
        """Your cart (created empty if you have none)"""
        return _cart_answer(cart.get_cart(owner_id=get_jwt_identity()))

    @shopper
    @idempotent(required=False)
    @blp.response(200, CartSchema)
    @_write_docs
    def delete(self):
        """Empty your cart, releasing its stock"""
        return _cart_answer(cart.empty_cart(owner_id=get_jwt_identity(), expected_version=optional_expected_version()))


@blp.route("/products")
class CartProducts(MethodView):
    @shopper
    @idempotent(required=False)
    @blp.arguments(AddItemSchema)
    @blp.response(201, CartSchema)
    @_write_docs
    def post(self, body):
        """Add units of a product (reserves them)"""
        added = cart.add_item(owner_id=get_jwt_identity(), expected_version=optional_expected_version(), **body)
        return _cart_answer(added, 201)


@blp.route("/products/<string:product_id>")
class CartProduct(MethodView):
    @shopper
    @idempotent(required=False)
    @blp.arguments(SetQuantitySchema)
    @blp.response(200, CartSchema)
    @_write_docs
    def put(self, body, product_id):
        """Set a line's quantity (0 removes it)"""
        owner_id, version = get_jwt_identity(), optional_expected_version()
        return _cart_answer(
            cart.set_item_quantity(owner_id=owner_id, product_id=product_id, expected_version=version, **body)
        )

    @shopper
    @idempotent(required=False)
    @blp.arguments(RemoveItemQuerySchema, location="query")
    @blp.response(200, CartSchema)
    @_write_docs
    def delete(self, query, product_id):
        """Remove ONE unit, deleting the line at zero (the original's behaviour); `?all=true` removes the line"""
        owner_id, version = get_jwt_identity(), optional_expected_version()
        return _cart_answer(
            cart.remove_item(
                owner_id=owner_id, product_id=product_id, whole_line=query["all"], expected_version=version
            )
        )


@blp.route("/checkout")
class Checkout(MethodView):
    @signed_in
    @idempotent(required=True)
    @blp.response(201, OrderSchema)
    @blp.problem_response(400, "`idempotency_key_required`")
    @blp.problem_response(403, "`forbidden`: guests sign up (or log in) first")
    @blp.problem_response(
        409,
        "`cart_empty`; `price_changed` (lines now carry the catalog's prices, listed in `priceChanges`: check "
        "out again to pay them); `product_unavailable` (archived products left the cart, listed in `products`); "
        "`reservation_expired` (a hold expired and its stock was sold); `idempotency_key_in_use`",
        CartConflictProblemSchema,
    )
    @_write_docs
    def post(self):
        """Check out at the catalog's current prices: every line's stock hold becomes a sale and an order is placed

        Needs an `Idempotency-Key`: retrying with the same key never places a second order.
        """
        return cart.check_out(owner_id=get_jwt_identity(), expected_version=optional_expected_version())


@blp.route("/merge")
class Merge(MethodView):
    @signed_in
    @blp.arguments(MergeRequestSchema)
    @blp.response(200, MergeResultSchema)
    @blp.problem_response(400, "`guest_token_invalid`: no guest token sent, or one invalid, expired or revoked")
    @blp.doc(security=BEARER)
    def post(self, body):
        """Merge a guest's cart into yours (also done by login with X-Guest-Token)

        Quantities add up, capped at 100 per line and by what can be reserved; the answer
        lists what was adjusted. Merging the same guest cart again changes nothing.
        """
        token = body.get("guest_token") or request.headers.get("X-Guest-Token")
        if not token:
            raise ApiError(400, "guest_token_invalid", "Send the guest's token as guestToken or X-Guest-Token.")
        return cart.merge_guest_cart(guest_id=guest_subject(token), user_id=get_jwt_identity())
