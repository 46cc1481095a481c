"""The listing writes products out by hand (app/gateway/schemas.py `product_body`); what it
sends must be what ProductSchema, which the OpenAPI document shows, would send."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app.gateway.schemas import ProductSchema, product_body
from app.products.interface import Product


@pytest.mark.parametrize(
    ("price", "tags", "moment"),
    [
        (Decimal("19.99"), ("shoes", "running"), datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)),
        (Decimal("0"), (), datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (Decimal("99999999.9"), ("x",), datetime(2020, 3, 1, tzinfo=UTC)),
    ],
)
def test_product_body_is_what_product_schema_dumps(price, tags, moment):
    product = Product(
        product_id="p-1",
        sku="RUN-1",
        name="Trail shoe",
        description="Light",
        category="shoes",
        tags=tags,
        price=price,
        currency="EUR",
        stock=7,
        reserved=3,
        status="active",
        created_at=moment,
        updated_at=moment.replace(year=2027),
        version=4,
    )

    body = product_body(product)

    assert body == ProductSchema().dump(product)
    assert list(body) == list(ProductSchema().dump(product))  # the same field order
