"""Public catalog API: /v1/products."""

from flask import jsonify, url_for
from flask.views import MethodView
from flask_jwt_extended import get_jwt, verify_jwt_in_request

from app.errors import DomainError
from app.extensions import ApiBlueprint
from app.gateway.auth import BEARER, roles_required
from app.gateway.caching import after_catalog_request, public_cache
from app.gateway.http import expected_version, require_json_body, with_etag
from app.gateway.schemas import (
    ProductCreateSchema,
    ProductPatchSchema,
    ProductQuerySchema,
    ProductSchema,
    StockAdjustmentSchema,
    product_body,
)
from app.products import interface as products

blp = ApiBlueprint(
    "products", __name__, url_prefix="/v1/products", description="The catalog: browse, and (admins) manage products."
)
blp.before_request(require_json_body)
blp.after_request(after_catalog_request)

ADMIN_ERRORS = ((401, "Missing, invalid or expired token"), (403, "Not an admin"))


def _caller_is_admin() -> bool:
    """Whether the request carries a valid admin token; a missing or bad one is simply not an
    admin's (the public read answers as for anyone, never 401), while a store that cannot say
    whether the token was revoked still answers 503."""
    try:
        verify_jwt_in_request(optional=True)
    except DomainError:
        raise
    except Exception:  # any of flask-jwt-extended's and PyJWT's token errors
        return False
    return "admin" in (get_jwt().get("roles") or ())


def _admin_docs(view):
    view = blp.doc(security=BEARER)(view)
    for status, description in ADMIN_ERRORS:
        view = blp.problem_response(status, description)(view)
    return view


@blp.route("")
class Products(MethodView):
    @public_cache
    @blp.arguments(ProductQuerySchema, location="query", as_kwargs=False)
    @blp.response(200, ProductSchema(many=True))
    @blp.paginate(page_size=20, max_page_size=100)
    def get(self, query, pagination_parameters):
        """List active products

        Compatible with the original `GET /v1/products` (an array of products with
        `productId` and `price` strings), now paged: `page`, `page_size` (default 20,
        max 100); totals in the `X-Pagination` header.
        """
        filters, sort = query
        page = products.list_products(
            filters=filters, sort=sort, page=pagination_parameters.page, page_size=pagination_parameters.page_size
        )
        pagination_parameters.item_count = page.total
        return jsonify([product_body(product) for product in page.items])  # as ProductSchema documents it

    @roles_required("admin")
    @blp.arguments(ProductCreateSchema)
    @blp.response(201, ProductSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.problem_response(409, "productId or SKU taken (`product_id_taken`, `sku_taken`)")
    @_admin_docs
    def post(self, draft):
        """Create a product (admin)"""
        product = products.create_product(draft=draft)
        location = url_for("products.ProductById", product_id=product.product_id)
        return with_etag(product, 201, Location=location)


@blp.route("/<string:product_id>")
class ProductById(MethodView):
    @public_cache
    @blp.response(200, ProductSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @blp.alt_response(304, description="Not modified (If-None-Match)")
    @blp.problem_response(404, "Unknown product, or archived and the caller not an admin (`product_not_found`)")
    def get(self, product_id):
        """Get one product, with its ETag

        An archived product is shown to admins only; anyone else gets 404, as for an unknown one.
        """
        product = products.get_product(product_id=product_id)
        if product.status == "archived" and not _caller_is_admin():
            raise products.ProductNotFound(f"No product with productId {product_id!r}.", product_id=product_id)
        return with_etag(product)

    @roles_required("admin")
    @blp.arguments(ProductPatchSchema)
    @blp.response(200, ProductSchema)
    @blp.problem_response(404, "Unknown product (`product_not_found`)")
    @blp.problem_response(409, "SKU taken (`sku_taken`)")
    @blp.problem_response(412, "If-Match is stale (`precondition_failed`)")
    @blp.problem_response(428, "If-Match is missing (`precondition_required`)")
    @blp.doc(parameters=[{"in": "header", "name": "If-Match", "required": True, "schema": {"type": "string"}}])
    @_admin_docs
    def patch(self, changes, product_id):
        """Change a product (admin); needs If-Match"""
        product = products.update_product(product_id=product_id, changes=changes, expected_version=expected_version())
        return with_etag(product)

    @roles_required("admin")
    @blp.response(204)
    @blp.problem_response(404, "Unknown product (`product_not_found`)")
    @_admin_docs
    def delete(self, product_id):
        """Archive a product (admin)

        The product leaves the listing but its document is kept; PATCH
        `{"status": "active"}` brings it back.
        """
        products.archive_product(product_id=product_id)


@blp.route("/<string:product_id>/stock")
class ProductStock(MethodView):
    @roles_required("admin")
    @blp.arguments(StockAdjustmentSchema)
    @blp.response(200, ProductSchema)
    @blp.problem_response(404, "Unknown product (`product_not_found`)")
    @blp.problem_response(409, "Would drop below the reserved units (`stock_below_reserved`)")
    @_admin_docs
    def post(self, adjustment, product_id):
        """Adjust on-hand stock (admin)"""
        product = products.adjust_stock(product_id=product_id, **adjustment)
        return with_etag(product)
