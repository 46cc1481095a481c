"""Marshmallow fields shared by the public API's schemas."""

import re
from decimal import Decimal

import marshmallow as ma

AMOUNT = re.compile(r"^\d{1,8}(\.\d{1,2})?$")


class Money(ma.fields.Field):
    """A money amount sent as a string with at most two decimals ("19.99"), never a float."""

    default_error_messages = {
        "invalid": 'Not a valid amount: send a string such as "19.99" (>= 0, at most 2 decimals, below 100000000).'
    }

    def __init__(self, **kwargs):
        metadata = {"type": "string", "pattern": AMOUNT.pattern, "example": "19.99", **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else f"{value:.2f}"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not AMOUNT.match(value.strip()):
            raise self.make_error("invalid")
        return Decimal(value.strip())


class TrimmedString(ma.fields.String):
    """A string with surrounding white space removed before validation."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class Code(TrimmedString):
    """A code compared in capitals (a SKU, a currency), trimmed and upper-cased when read."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).upper()
