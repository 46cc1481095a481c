"""Schemas of the products service API (/internal/products): the interface's DTOs on the wire."""

from datetime import UTC, datetime, timedelta

import marshmallow as ma
from marshmallow import validate

MAX_HOLD = timedelta(days=365)


class ProductRecordSchema(ma.Schema):
    product_id = ma.fields.String()
    sku = ma.fields.String()
    name = ma.fields.String()
    description = ma.fields.String()
    category = ma.fields.String()
    tags = ma.fields.List(ma.fields.String())
    price = ma.fields.Decimal(as_string=True)
    currency = ma.fields.String()
    stock = ma.fields.Integer()
    reserved = ma.fields.Integer()
    status = ma.fields.String()
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()
    version = ma.fields.Integer()


class ReserveSchema(ma.Schema):
    product_id = ma.fields.String(required=True, validate=validate.Length(1, 64))
    quantity = ma.fields.Integer(required=True, strict=True, validate=validate.Range(0, 1_000_000))
    expires_at = ma.fields.AwareDateTime(required=True)

    @ma.validates("expires_at")
    def within_a_year(self, value: datetime, **kwargs) -> None:
        if value > datetime.now(UTC) + MAX_HOLD:
            raise ma.ValidationError(f"Must be within {MAX_HOLD.days} days from now.")


class ReservationSchema(ma.Schema):
    reservation_id = ma.fields.String()
    product_id = ma.fields.String()
    quantity = ma.fields.Integer()
    status = ma.fields.String(metadata={"enum": ["active", "released", "committed"]})
    expires_at = ma.fields.AwareDateTime()
