"""Migration 0004: cart lines move from the cart_lines table into the cart row, and back.

Run on a database of its own (PostgreSQL, and the embedded SQLite), migrated to 0003 with a
cart written as the old schema held it, then upgraded, downgraded and upgraded again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import (
    DateTime,
    Integer,
    Numeric,
    String,
    Uuid,
    column,
    create_engine,
    inspect,
    make_url,
    select,
    table,
    text,
)

from app.cart import interface as cart_interface
from app.cart.models import Cart, CartLine
from app.extensions import db

BEFORE = "0003_orders"
AFTER = "0004_cart_lines_in_the_cart"
UNTIL = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, database_url, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migration.db'}"
        return
    name = f"storefront_migration_{uuid.uuid4().hex[:8]}"
    server_url = make_url(database_url).set(drivername="postgresql+psycopg2", database="postgres")
    server = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(database_url).set(drivername="postgresql+psycopg2", database=name)
    yield url.render_as_string(hide_password=False)
    with server.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    server.dispose()


@pytest.fixture
def migrating_app(other_app, empty_database):
    app = other_app(database_url=empty_database)
    with app.app_context():
        upgrade(revision=BEFORE)
    return app


OLD_CARTS = table(
    "carts",
    column("id", Uuid),
    *(column(name, String) for name in ["owner_id", "status", "currency"]),
    column("version", Integer),
    *(column(name, DateTime(timezone=True)) for name in ["created_at", "updated_at", "expires_at"]),
)
OLD_LINES = table(
    "cart_lines",
    *(column(name, Uuid) for name in ["id", "cart_id"]),
    *(column(name, String) for name in ["product_id", "sku", "name", "reservation_id"]),
    column("unit_price", Numeric(12, 2)),
    column("quantity", Integer),
    *(column(name, DateTime(timezone=True)) for name in ["reserved_until", "created_at"]),
)


def old_cart(owner_id: str, lines: list[tuple[str, int, str]]) -> uuid.UUID:
    """A cart and its lines as schema 0003 stored them: (product_id, quantity, price), in that order."""
    cart_id = uuid.uuid4()
    now = datetime.now(UTC)
    db.session.execute(
        OLD_CARTS.insert().values(
            id=cart_id,
            owner_id=owner_id,
            status="active",
            version=3,
            currency="USD",
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(days=30),
        )
    )
    for position, (product_id, quantity, price) in enumerate(lines):
        db.session.execute(
            OLD_LINES.insert().values(
                id=uuid.uuid4(),
                cart_id=cart_id,
                product_id=product_id,
                sku=f"SKU-{product_id}".upper(),
                name=f"Thing {product_id}",
                unit_price=Decimal(price),
                quantity=quantity,
                reservation_id=f"rid-{product_id}",
                reserved_until=UNTIL + timedelta(minutes=position),
                # created out of alphabetical order: the order kept must be this one
                created_at=now - timedelta(minutes=10 - position),
            )
        )
    db.session.commit()
    return cart_id


def test_upgrade_keeps_the_lines_and_downgrade_gives_them_back(migrating_app):
    app = migrating_app
    with app.app_context():
        cart_id = old_cart("owner-1", [("pen", 2, "1.50"), ("mug", 1, "267.00"), ("cup", 4, "3.10")])
        empty_id = old_cart("owner-2", [])

        upgrade(revision=AFTER)
        tables = inspect(db.engine)
        assert "cart_lines" not in tables.get_table_names()
        assert "cart_lines" in tables.get_view_names()
        cart = db.session.get(Cart, cart_id)
        assert [(line.product_id, line.quantity, line.unit_price, line.sku) for line in cart.read_lines()] == [
            ("pen", 2, Decimal("1.50"), "SKU-PEN"),
            ("mug", 1, Decimal("267.00"), "SKU-MUG"),
            ("cup", 4, Decimal("3.10"), "SKU-CUP"),
        ]
        assert [line.reserved_until for line in cart.read_lines()] == [UNTIL + timedelta(minutes=n) for n in range(3)]
        assert _aware(cart.holds_expire_at) == UNTIL
        assert cart.version == 3
        empty = db.session.get(Cart, empty_id)
        assert (empty.lines, empty.holds_expire_at) == ([], None)

        view = db.session.execute(
            select(CartLine.product_id, CartLine.quantity, CartLine.reservation_id, CartLine.reserved_until)
            .join(Cart)
            .where(Cart.status == "active")
            .order_by(CartLine.position)
        ).all()
        assert [(p, q, r, _aware(u)) for p, q, r, u in view] == [
            ("pen", 2, "rid-pen", UNTIL),
            ("mug", 1, "rid-mug", UNTIL + timedelta(minutes=1)),
            ("cup", 4, "rid-cup", UNTIL + timedelta(minutes=2)),
        ]
        assert cart_interface.held_reservations(reservation_ids=["rid-mug", "rid-gone"]) == ("rid-mug",)
        answered = cart_interface.get_cart(owner_id="owner-1")
        assert [(item.product_id, item.quantity, str(item.price)) for item in answered.items] == [
            ("pen", 2, "1.50"),
            ("mug", 1, "267.00"),
            ("cup", 4, "3.10"),
        ]
        assert answered.version == 3
        db.session.commit()

        downgrade(revision=BEFORE)
        tables = inspect(db.engine)
        assert "cart_lines" in tables.get_table_names()
        assert {column["name"] for column in tables.get_columns("carts")}.isdisjoint({"lines", "holds_expire_at"})
        lines = OLD_LINES.c
        rows = db.session.execute(
            select(lines.product_id, lines.quantity, lines.unit_price, lines.reservation_id, lines.reserved_until)
            .where(lines.cart_id == cart_id)
            .order_by(lines.created_at)
        ).all()
        assert [(p, q, Decimal(price), r) for p, q, price, r, _ in rows] == [
            ("pen", 2, Decimal("1.50"), "rid-pen"),
            ("mug", 1, Decimal("267.00"), "rid-mug"),
            ("cup", 4, Decimal("3.10"), "rid-cup"),
        ]
        assert [_aware(until) for *_, until in rows] == [UNTIL + timedelta(minutes=n) for n in range(3)]
        db.session.commit()

        upgrade(revision=AFTER)  # and up again: the same lines
        cart = db.session.get(Cart, cart_id)
        assert [(line.product_id, line.quantity) for line in cart.read_lines()] == [("pen", 2), ("mug", 1), ("cup", 4)]
        db.session.remove()
        db.engine.dispose()


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
