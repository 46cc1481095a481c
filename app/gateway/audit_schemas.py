"""Schemas of the audit trail's admin API (GET /v1/admin/audit)."""

from datetime import UTC

import marshmallow as ma
from marshmallow import validate

from app.events.audit import AGGREGATE_TYPES, AuditFilters
from app.events.envelope import EVENT_TYPES
from app.gateway.fields import TrimmedString


class AuditQuerySchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE  # page and page_size are the paginator's

    aggregate_type = ma.fields.String(data_key="aggregateType", validate=validate.OneOf(AGGREGATE_TYPES))
    aggregate_id = TrimmedString(
        data_key="aggregateId",
        validate=validate.Length(1, 128),
        metadata={"description": "A cart, order or user id, or a productId"},
    )
    type = ma.fields.String(validate=validate.OneOf(sorted(EVENT_TYPES)), metadata={"example": "order.placed"})
    since = ma.fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "Events that occurred at or after this time (ISO 8601; UTC when no offset)"},
    )
    until = ma.fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "Events that occurred before this time (ISO 8601; UTC when no offset)"},
    )

    @ma.validates_schema
    def time_range(self, data, **kwargs):
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and since >= until:
            raise ma.ValidationError("Must be before until.", "since")

    @ma.post_load
    def to_filters(self, data, **kwargs):
        return AuditFilters(**data)


class AuditEntrySchema(ma.Schema):
    id = ma.fields.Integer(metadata={"description": "The trail's own sequence: the order events were recorded in"})
    event_id = ma.fields.String(data_key="eventId", metadata={"description": "The event's id (UUID)"})
    type = ma.fields.String(metadata={"enum": sorted(EVENT_TYPES)})
    version = ma.fields.Integer(metadata={"description": "The payload's schema version"})
    occurred_at = ma.fields.DateTime(data_key="occurredAt")
    recorded_at = ma.fields.DateTime(data_key="recordedAt", metadata={"description": "When the trail recorded it"})
    aggregate_type = ma.fields.String(data_key="aggregateType", metadata={"enum": list(AGGREGATE_TYPES)})
    aggregate_id = ma.fields.String(data_key="aggregateId")
    actor = ma.fields.String(metadata={"description": "A user id, guest:<uuid>, or system"})
    traceparent = ma.fields.String(allow_none=True, metadata={"description": "W3C traceparent of the change"})
    payload = ma.fields.Dict(keys=ma.fields.String(), metadata={"description": "The event's payload, as published"})
