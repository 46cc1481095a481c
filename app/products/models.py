"""mongoengine documents of the products module (private to the module).

Indexes are declared here but created explicitly by `ensure_indexes()` at start-up
(`auto_create_index` is off), so that no request pays for index checks.
"""

from datetime import UTC, datetime, timedelta

from mongoengine import DateTimeField, DictField, Document, IntField, ListField, StringField

from app import clock

PRODUCT_STATUSES = ("active", "archived")


def utcnow() -> datetime:
    """Naive UTC, truncated to the millisecond MongoDB stores, so a written value reads back equal."""
    now = clock.now().replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# A hold counts as lapsed this long after its expiry: not counted by reads, released when its
# units are needed. The cart sees the line expired at the expiry itself, so a cart whose clock
# is a little behind still changes a live hold, never one being released.
LAPSE_GRACE = timedelta(seconds=2)


def to_epoch_ms(moment: datetime) -> int:
    """Datetimes that change after insert are kept as epoch milliseconds (see mongo_dialect.stamped)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


def from_epoch_ms(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


class Product(Document):
    product_id = StringField(required=True)
    sku = StringField(required=True)
    name = StringField(required=True)
    description = StringField(default="")
    category = StringField(default="")
    tags = ListField(StringField())
    keywords = ListField(StringField())
    price_cents = IntField(required=True, min_value=0)
    currency = StringField(default="USD")
    stock = IntField(default=0, min_value=0)
    reserved = IntField(default=0, min_value=0)
    # Always stock - reserved, moved by the same update as they are, so that a reservation
    # is one conditional update (`available >= n`); negative only when reconcile finds more
    # held than stocked.
    available = IntField()
    status = StringField(default="active", choices=PRODUCT_STATUSES)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    version = IntField(default=1)
    # Live stock holds by reservation id, {qty, until, since} (epoch ms), and recent sales
    # by reservation id, {qty, at}; changed only by holds.py's conditional updates.
    holds = DictField()
    sold = DictField()

    meta = {
        "collection": "products",
        "auto_create_index": False,
        "indexes": [
            {"fields": ["product_id"], "unique": True},
            {"fields": ["sku"], "unique": True},
            {"fields": ["status", "price_cents"]},
            {"fields": ["status", "name"]},
            {"fields": ["category"]},
            {"fields": ["tags"]},
            {"fields": ["keywords"]},
        ],
    }


class StockMovement(Document):
    """Audit trail of manual stock adjustments."""

    product_id = StringField(required=True)
    delta = IntField(required=True)
    reason = StringField(required=True)
    stock_after = IntField(required=True)
    created_at = DateTimeField(default=utcnow)

    meta = {
        "collection": "stock_movements",
        "auto_create_index": False,
        "indexes": [{"fields": ["product_id", "-created_at"]}],
    }


DOCUMENTS = (Product, StockMovement)
