"""cart lines move into the cart row (a JSON array); cart_lines becomes a read-only view

Why: a cart write locks the cart row and then had to read its lines in a statement of its
own (app/cart/service.py); with the lines in the row, the locking SELECT returns them, and
one UPDATE writes them back. `holds_expire_at` (the lines' earliest hold expiry, indexed for
active carts) lets `flask carts sweep` find carts with a lapsed hold without a scan.

The data is copied row by row in Python rather than with each dialect's JSON functions, so
that the same code runs on PostgreSQL and on the embedded SQLite; downgrading copies the
lines back into a cart_lines table (ordered as they were: created_at follows the position).

Revision ID: 0004_cart_lines_in_the_cart
Revises: 0003_orders
Create Date: 2026-12-02 19:30:00

"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "0004_cart_lines_in_the_cart"
down_revision = "0003_orders"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")

carts = sa.table(
    "carts",
    sa.column("id", sa.Uuid()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("lines", sa.JSON()),
    sa.column("holds_expire_at", sa.DateTime(timezone=True)),
)
cart_lines = sa.table(
    "cart_lines",
    sa.column("id", sa.Uuid()),
    sa.column("cart_id", sa.Uuid()),
    sa.column("product_id", sa.String()),
    sa.column("sku", sa.String()),
    sa.column("name", sa.String()),
    sa.column("unit_price", sa.Numeric(12, 2)),
    sa.column("quantity", sa.Integer()),
    sa.column("reservation_id", sa.String()),
    sa.column("reserved_until", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)

VIEWS = {
    "postgresql": """
        CREATE VIEW cart_lines AS
        SELECT carts.id AS cart_id,
               line.position::integer AS position,
               line.value ->> 'product_id' AS product_id,
               line.value ->> 'sku' AS sku,
               line.value ->> 'name' AS name,
               (line.value ->> 'unit_price')::numeric(12, 2) AS unit_price,
               (line.value ->> 'quantity')::integer AS quantity,
               line.value ->> 'reservation_id' AS reservation_id,
               (line.value ->> 'reserved_until')::timestamptz AS reserved_until
        FROM carts CROSS JOIN LATERAL json_array_elements(carts.lines) WITH ORDINALITY AS line(value, position)
    """,
    "sqlite": """
        CREATE VIEW cart_lines AS
        SELECT carts.id AS cart_id,
               line.key + 1 AS position,
               json_extract(line.value, '$.product_id') AS product_id,
               json_extract(line.value, '$.sku') AS sku,
               json_extract(line.value, '$.name') AS name,
               json_extract(line.value, '$.unit_price') AS unit_price,
               json_extract(line.value, '$.quantity') AS quantity,
               json_extract(line.value, '$.reservation_id') AS reservation_id,
               replace(substr(json_extract(line.value, '$.reserved_until'), 1, 26), 'T', ' ') AS reserved_until
        FROM carts, json_each(carts.lines) AS line
    """,
}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def upgrade():
    with op.batch_alter_table("carts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lines", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("holds_expire_at", sa.DateTime(timezone=True), nullable=True))

    connection = op.get_bind()
    by_cart: dict[uuid.UUID, list[dict]] = {}
    expiry: dict[uuid.UUID, datetime] = {}
    rows = connection.execute(
        sa.select(cart_lines).order_by(cart_lines.c.cart_id, cart_lines.c.created_at, cart_lines.c.id)
    )
    for row in rows:
        until = _utc(row.reserved_until)
        by_cart.setdefault(row.cart_id, []).append(
            {
                "product_id": row.product_id,
                "sku": row.sku,
                "name": row.name,
                "unit_price": str(Decimal(row.unit_price).quantize(Decimal("0.01"))),
                "quantity": row.quantity,
                "reservation_id": row.reservation_id,
                "reserved_until": until.isoformat(timespec="microseconds"),
            }
        )
        expiry[row.cart_id] = min(expiry.get(row.cart_id, until), until)
    connection.execute(carts.update().values(lines=[]))
    for cart_id, lines in by_cart.items():
        connection.execute(
            carts.update().where(carts.c.id == cart_id).values(lines=lines, holds_expire_at=expiry[cart_id])
        )

    with op.batch_alter_table("carts", schema=None) as batch_op:
        batch_op.alter_column("lines", existing_type=sa.JSON(), nullable=False)
        batch_op.create_index(
            "ix_carts_holds_expire_at", ["holds_expire_at"], unique=False, postgresql_where=ACTIVE, sqlite_where=ACTIVE
        )
    with op.batch_alter_table("cart_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cart_lines_cart_id"))
    op.drop_table("cart_lines")
    op.execute(VIEWS[connection.dialect.name])


def downgrade():
    connection = op.get_bind()
    op.execute("DROP VIEW cart_lines")
    op.create_table(
        "cart_lines",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cart_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("reservation_id", sa.String(length=64), nullable=False),
        sa.Column("reserved_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cart_id"], ["carts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cart_id", "product_id", name="uq_cart_lines_cart_product"),
        sa.UniqueConstraint("reservation_id"),
    )
    with op.batch_alter_table("cart_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cart_lines_cart_id"), ["cart_id"], unique=False)

    rows = []
    for cart in connection.execute(sa.select(carts.c.id, carts.c.created_at, carts.c.lines)):
        lines = json.loads(cart.lines) if isinstance(cart.lines, str) else cart.lines
        for position, line in enumerate(lines or ()):
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "cart_id": cart.id,
                    "product_id": line["product_id"],
                    "sku": line["sku"],
                    "name": line["name"],
                    "unit_price": Decimal(line["unit_price"]),
                    "quantity": line["quantity"],
                    "reservation_id": line["reservation_id"],
                    "reserved_until": _utc(datetime.fromisoformat(line["reserved_until"])),
                    "created_at": _utc(cart.created_at) + timedelta(microseconds=position),  # keeps their order
                }
            )
    if rows:
        connection.execute(cart_lines.insert(), rows)

    with op.batch_alter_table("carts", schema=None) as batch_op:
        batch_op.drop_index("ix_carts_holds_expire_at", postgresql_where=ACTIVE, sqlite_where=ACTIVE)
        batch_op.drop_column("holds_expire_at")
        batch_op.drop_column("lines")
