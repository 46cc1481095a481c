"""The cart on the embedded SQLite database, where a write unit of work takes the database's
write lock (app/transactions.py): a read takes no such lock, so it answers with what is
committed while a write is in progress instead of queueing behind it."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from decimal import Decimal

from flask_migrate import upgrade

from app import clock
from app.cart import interface as cart
from app.products import interface as products

OWNER = "22222222-2222-2222-2222-222222222222"


def test_held_reservations_answers_with_the_committed_lines_while_a_writer_holds_the_lock(other_app, tmp_path):
    """`flask inventory reconcile` reads while the shop serves: it neither waits for a cart
    write nor makes one wait."""
    database = tmp_path / "storefront.db"
    app = other_app(database_url=f"sqlite:///{database}")
    product_id = f"lamp-{uuid.uuid4().hex[:8]}"
    with app.app_context():
        upgrade()
        draft = products.ProductDraft(
            sku=f"SKU-{product_id}", name="Lamp", price=Decimal("3.00"), product_id=product_id, stock=5
        )
        products.create_product(draft=draft)
        cart.add_item(owner_id=OWNER, product_id=product_id, quantity=1)
        active = products.list_active_reservations(created_before=clock.now() + timedelta(minutes=1))
    (reservation_id,) = [hold.reservation_id for hold in active if hold.product_id == product_id]

    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # what a cart write begins with: the write lock
        writer.execute("UPDATE carts SET status = 'expired'")  # not committed
        with app.app_context():
            assert cart.held_reservations(reservation_ids=[reservation_id, "no-such-hold"]) == (reservation_id,)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
