"""Request and response schemas of the public /v1 API."""

import marshmallow as ma
from marshmallow import validate

from app.extensions import ProblemSchema
from app.gateway.fields import Code, Money, TrimmedString
from app.products.interface import DEFAULT_SORT, SORT_KEYS, Product, ProductChanges, ProductDraft, ProductFilters

PRODUCT_ID = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$", error="Use 1-64 letters, digits, '_' or '-'.")
SKU = validate.Regexp(r"^[A-Z0-9-]{3,32}$", error="Use 3-32 letters, digits or '-'.")
CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="Use an ISO 4217 code such as USD.")
MAX_STOCK = 1_000_000_000


def _tags(**kwargs):
    return ma.fields.List(
        TrimmedString(validate=validate.Length(1, 50)),
        validate=validate.Length(max=20),
        metadata={"example": ["shoes", "running"]},
        **kwargs,
    )


class ProductSchema(ma.Schema):
    product_id = ma.fields.String(data_key="productId", metadata={"example": "42"})
    sku = ma.fields.String(metadata={"example": "RUN-SHOE-42"})
    name = ma.fields.String(metadata={"example": "Trail running shoe"})
    description = ma.fields.String()
    category = ma.fields.String(metadata={"example": "shoes"})
    tags = ma.fields.List(ma.fields.String())
    price = Money()
    currency = ma.fields.String(metadata={"example": "USD"})
    stock = ma.fields.Integer(metadata={"description": "Units on hand"})
    reserved = ma.fields.Integer(metadata={"description": "Units held by carts"})
    available = ma.fields.Integer(metadata={"description": "stock - reserved"})
    status = ma.fields.String(metadata={"enum": ["active", "archived"]})
    created_at = ma.fields.DateTime(data_key="createdAt")
    updated_at = ma.fields.DateTime(data_key="updatedAt")
    version = ma.fields.Integer(metadata={"description": "Bumped on every write; the ETag"})


def product_body(product: Product) -> dict:
    """ProductSchema's dump written out, for the listing: marshmallow took about a third of the
    CPU of a page of 100 (bench/README.md). tests/unit/test_product_body.py holds them equal."""
    return {
        "productId": product.product_id,
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category": product.category,
        "tags": list(product.tags),
        "price": f"{product.price:.2f}",
        "currency": product.currency,
        "stock": product.stock,
        "reserved": product.reserved,
        "available": product.available,
        "status": product.status,
        "createdAt": product.created_at.isoformat(),
        "updatedAt": product.updated_at.isoformat(),
        "version": product.version,
    }


class ProductCreateSchema(ma.Schema):
    product_id = TrimmedString(
        data_key="productId", validate=PRODUCT_ID, metadata={"description": "Generated if absent"}
    )
    sku = Code(required=True, validate=SKU, metadata={"example": "RUN-SHOE-42"})
    name = TrimmedString(required=True, validate=validate.Length(1, 200), metadata={"example": "Trail running shoe"})
    description = TrimmedString(load_default="", validate=validate.Length(max=5000))
    category = TrimmedString(load_default="", validate=validate.Length(max=100), metadata={"example": "shoes"})
    tags = _tags(load_default=())
    price = Money(required=True)
    currency = Code(load_default="USD", validate=CURRENCY)
    stock = ma.fields.Integer(load_default=0, strict=True, validate=validate.Range(0, MAX_STOCK))

    @ma.post_load
    def to_draft(self, data, **kwargs):
        return ProductDraft(**{**data, "tags": tuple(data["tags"])})


class ProductPatchSchema(ma.Schema):
    sku = Code(validate=SKU)
    name = TrimmedString(validate=validate.Length(1, 200))
    description = TrimmedString(validate=validate.Length(max=5000))
    category = TrimmedString(validate=validate.Length(max=100))
    tags = _tags()
    price = Money()
    currency = Code(validate=CURRENCY)
    status = ma.fields.String(validate=validate.OneOf(["active", "archived"]))

    @ma.validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Send at least one field to change.")

    @ma.post_load
    def to_changes(self, data, **kwargs):
        if "tags" in data:
            data["tags"] = tuple(data["tags"])
        return ProductChanges(**data)


class StockAdjustmentSchema(ma.Schema):
    delta = ma.fields.Integer(
        required=True,
        strict=True,
        validate=[validate.Range(-MAX_STOCK, MAX_STOCK), validate.NoneOf([0], error="Must not be 0.")],
        metadata={"example": -3},
    )
    reason = TrimmedString(required=True, validate=validate.Length(1, 200), metadata={"example": "damaged in transit"})


class ProductQuerySchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    q = TrimmedString(
        validate=validate.Length(1, 200), metadata={"description": "Words that must all appear in name or description"}
    )
    category = TrimmedString(validate=validate.Length(1, 100))
    tag = TrimmedString(validate=validate.Length(1, 50))
    min_price = Money()
    max_price = Money()
    in_stock = ma.fields.Boolean(metadata={"description": "Only products with available units (true) or none (false)"})
    sort = ma.fields.String(load_default=DEFAULT_SORT, validate=validate.OneOf(SORT_KEYS))

    @ma.validates_schema
    def price_range(self, data, **kwargs):
        low, high = data.get("min_price"), data.get("max_price")
        if low is not None and high is not None and low > high:
            raise ma.ValidationError("Must not be greater than max_price.", "min_price")

    @ma.post_load
    def to_filters(self, data, **kwargs):
        sort = data.pop("sort")
        return ProductFilters(**data), sort


class DependencySchema(ma.Schema):
    status = ma.fields.String(metadata={"enum": ["ok", "down"]})
    store = ma.fields.String(metadata={"description": "The store of a module served in process", "example": "mongodb"})


class HealthSchema(ma.Schema):
    status = ma.fields.String(metadata={"enum": ["ok", "degraded"]})
    timestamp = ma.fields.DateTime()
    service = ma.fields.String(metadata={"example": "api-gateway"})
    dependencies = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(DependencySchema))


class ProbeSchema(ma.Schema):
    status = ma.fields.String(metadata={"enum": ["ok"]})


class FailedCheckSchema(ma.Schema):
    check = ma.fields.String(metadata={"enum": ["store", "service", "migrations", "breaker"]})
    name = ma.fields.String(metadata={"description": "The store, service or breaker that failed", "example": "mongodb"})


class NotReadyProblemSchema(ProblemSchema):
    """Which readiness checks failed (`code: not_ready`)."""

    failed = ma.fields.List(ma.fields.Nested(FailedCheckSchema))
