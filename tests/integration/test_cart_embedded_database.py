"""The cart on the embedded SQLite database, where a write unit of work takes the database's
write lock (app/transactions.py): a read takes no such lock, so it answers with what is
committed while a write is in progress instead of queueing behind it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from app import clock
from app.cart import interface as cart
from app.cart import sweep as sweeping
from app.products import interface as products
from tests.held_locks import a_writer_holding_the_lock

OWNER = "22222222-2222-2222-2222-222222222222"


def a_product(stock: int = 5) -> str:
    product_id = f"lamp-{uuid.uuid4().hex[:8]}"
    draft = products.ProductDraft(
        sku=f"SKU-{product_id}", name="Lamp", price=Decimal("3.00"), product_id=product_id, stock=stock
    )
    products.create_product(draft=draft)
    return product_id


def test_held_reservations_answers_with_the_committed_lines_while_a_writer_holds_the_lock(embedded, database):
    """`flask inventory reconcile` reads while the shop serves: it neither waits for a cart
    write nor makes one wait."""
    with embedded.app_context():
        product_id = a_product()
        cart.add_item(owner_id=OWNER, product_id=product_id, quantity=1)
        active = products.list_active_reservations(created_before=clock.now() + timedelta(minutes=1))
    (reservation_id,) = [hold.reservation_id for hold in active if hold.product_id == product_id]

    with a_writer_holding_the_lock(database, "UPDATE carts SET status = 'expired'"), embedded.app_context():
        assert cart.held_reservations(reservation_ids=[reservation_id, "no-such-hold"]) == (reservation_id,)


def test_an_order_is_read_while_a_writer_holds_the_lock(embedded, database):
    with embedded.app_context():
        cart.add_item(owner_id=OWNER, product_id=a_product(), quantity=2)
        placed = cart.check_out(owner_id=OWNER)

    with a_writer_holding_the_lock(database, "UPDATE orders SET status = 'confirmed'"), embedded.app_context():
        assert cart.get_order(order_id=placed.order_id, owner_id=OWNER) == placed


def test_orders_are_listed_while_a_writer_holds_the_lock(embedded, database):
    with embedded.app_context():
        cart.add_item(owner_id=OWNER, product_id=a_product(), quantity=2)
        placed = cart.check_out(owner_id=OWNER)

    with a_writer_holding_the_lock(database, "DELETE FROM orders"), embedded.app_context():
        assert cart.list_orders(owner_id=OWNER) == cart.OrderPage(items=(placed,), total=1)


def test_the_sweep_lists_the_carts_to_visit_while_a_writer_holds_the_lock(embedded, database, monkeypatch):
    with embedded.app_context():
        cart.add_item(owner_id=OWNER, product_id=a_product(), quantity=1)
    listed = sweeping._carts_to_visit

    def listed_while_a_writer_holds_the_lock(now):
        with a_writer_holding_the_lock(database, "UPDATE carts SET status = 'expired'"):
            return listed(now)

    monkeypatch.setattr(sweeping, "_carts_to_visit", listed_while_a_writer_holds_the_lock)
    with embedded.app_context():
        report = sweeping.sweep(now=clock.now() + timedelta(days=365))  # the cart is abandoned by then
    assert report == sweeping.SweepReport(lines_released=1, carts_swept=1, carts_expired=1, keys_forgotten=0)


def test_a_cart_is_read_while_a_writer_holds_the_lock(embedded, database):
    with embedded.app_context():
        added = cart.add_item(owner_id=OWNER, product_id=a_product(), quantity=2)

    with a_writer_holding_the_lock(database, "UPDATE carts SET version = version + 1"), embedded.app_context():
        read = cart.get_cart(owner_id=OWNER)
    assert (read.version, [item.quantity for item in read.items]) == (added.version, [2])
