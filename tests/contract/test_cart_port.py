"""The cart port's contract, run against the in-process and the HTTP implementation.

Same inputs, same DTOs (field values and types) and the same exceptions (class, extensions),
including the products module's exceptions raised through the cart.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from app import clock
from app.cart import interface as cart
from app.products import interface as products
from tests.contract.conftest import assert_aware_utc, assert_money, raises

USER = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def catalog(in_process):
    """Two products: p1 at 2.50 with 10 in stock, p2 at 19.99 with 3."""
    for product_id, price, stock in (("p1", "2.50", 10), ("p2", "19.99", 3)):
        in_process(
            products.create_product,
            draft=products.ProductDraft(
                product_id=product_id,
                sku=f"SKU-{product_id.upper()}",
                name=f"Product {product_id}",
                price=Decimal(price),
                stock=stock,
            ),
        )


def guest() -> str:
    return f"guest:{uuid.uuid4()}"


def lines(found: cart.Cart) -> list[tuple[str, int, Decimal]]:
    return [(item.product_id, item.quantity, item.line_total) for item in found.items]


def reserved(in_process, product_id: str) -> int:
    return in_process(products.get_product, product_id=product_id).reserved


def assert_cart_types(found: cart.Cart) -> None:
    assert type(found) is cart.Cart
    assert type(found.items) is tuple
    assert_money(found.total_price)
    for item in found.items:
        assert type(item) is cart.CartItem
        assert_money(item.price, item.line_total, item.current_price)


def test_get_cart_creates_an_empty_cart_once(port_app, in_process):
    owner = guest()

    first = cart.get_cart(owner_id=owner)
    again = cart.get_cart(owner_id=owner)

    assert_cart_types(first)
    assert (first.user_id, first.currency, first.total_price, first.total_quantity, first.items) == (
        owner,
        "USD",
        Decimal("0"),
        0,
        (),
    )
    assert again == first
    assert first == in_process(cart.get_cart, owner_id=owner)


def test_add_item_reserves_and_totals_in_decimals(port_app, in_process, catalog):
    owner = guest()

    once = cart.add_item(owner_id=owner, product_id="p1", quantity=2)
    twice = cart.add_item(owner_id=owner, product_id="p1", quantity=1)
    both = cart.add_item(owner_id=owner, product_id="p2", quantity=1)

    assert_cart_types(both)
    assert lines(once) == [("p1", 2, Decimal("5.00"))]
    assert lines(twice) == [("p1", 3, Decimal("7.50"))]
    assert lines(both) == [("p1", 3, Decimal("7.50")), ("p2", 1, Decimal("19.99"))]
    assert (both.total_price, both.total_quantity) == (Decimal("27.49"), 4)
    item = both.items[1]
    assert (item.sku, item.name, item.price, item.current_price, item.price_changed, item.available) == (
        "SKU-P2",
        "Product p2",
        Decimal("19.99"),
        Decimal("19.99"),
        False,
        2,
    )
    assert both.version > twice.version > once.version
    assert both == in_process(cart.get_cart, owner_id=owner)
    assert (reserved(in_process, "p1"), reserved(in_process, "p2")) == (3, 1)


def test_add_item_raises_the_products_modules_errors(port_app, in_process, catalog):
    owner = guest()

    with raises(products.ProductNotFound, productId="nope"):
        cart.add_item(owner_id=owner, product_id="nope", quantity=1)
    with raises(products.InsufficientStock, productId="p2", available=3, requested=4):
        cart.add_item(owner_id=owner, product_id="p2", quantity=4)

    assert in_process(cart.get_cart, owner_id=owner).items == ()
    assert reserved(in_process, "p2") == 0


def test_a_line_holds_at_most_the_line_maximum(port_app, in_process, catalog):
    owner = guest()
    in_process(cart.add_item, owner_id=owner, product_id="p1", quantity=5)
    in_process(products.adjust_stock, product_id="p1", delta=200, reason="delivery")
    limit = cart.MAX_LINE_QUANTITY

    with raises(cart.QuantityLimitExceeded, maximum=limit, productId="p1"):
        cart.add_item(owner_id=owner, product_id="p1", quantity=limit)
    with raises(cart.QuantityLimitExceeded, maximum=limit, productId="p1"):
        cart.set_item_quantity(owner_id=owner, product_id="p1", quantity=limit + 1)
    assert lines(in_process(cart.get_cart, owner_id=owner)) == [("p1", 5, Decimal("12.50"))]


def test_set_item_quantity_and_remove_item(port_app, in_process, catalog):
    owner = guest()
    in_process(cart.add_item, owner_id=owner, product_id="p1", quantity=2)
    in_process(cart.add_item, owner_id=owner, product_id="p2", quantity=1)

    assert lines(cart.set_item_quantity(owner_id=owner, product_id="p1", quantity=4))[0] == ("p1", 4, Decimal("10.00"))
    assert reserved(in_process, "p1") == 4
    assert lines(cart.remove_item(owner_id=owner, product_id="p1"))[0] == ("p1", 3, Decimal("7.50"))
    assert reserved(in_process, "p1") == 3
    after = cart.remove_item(owner_id=owner, product_id="p1", whole_line=True)
    assert lines(after) == [("p2", 1, Decimal("19.99"))]
    assert reserved(in_process, "p1") == 0
    assert lines(cart.set_item_quantity(owner_id=owner, product_id="p2", quantity=0)) == []
    assert reserved(in_process, "p2") == 0

    with raises(cart.LineNotFound, productId="p1"):
        cart.remove_item(owner_id=owner, product_id="p1")
    with raises(cart.LineNotFound, productId="p1"):
        cart.set_item_quantity(owner_id=owner, product_id="p1", quantity=0)


def test_empty_cart_releases_every_hold(port_app, in_process, catalog):
    owner = guest()
    in_process(cart.add_item, owner_id=owner, product_id="p1", quantity=2)
    in_process(cart.add_item, owner_id=owner, product_id="p2", quantity=2)

    emptied = cart.empty_cart(owner_id=owner)

    assert (emptied.items, emptied.total_price, emptied.total_quantity) == ((), Decimal("0"), 0)
    assert emptied == in_process(cart.get_cart, owner_id=owner)
    assert (reserved(in_process, "p1"), reserved(in_process, "p2")) == (0, 0)
    assert cart.empty_cart(owner_id=owner).items == ()


def test_writes_with_a_stale_expected_version_raise_cart_changed(port_app, in_process, catalog):
    owner = guest()
    current = in_process(cart.add_item, owner_id=owner, product_id="p1", quantity=1)
    stale = current.version - 1

    for write in (
        lambda: cart.add_item(owner_id=owner, product_id="p1", quantity=1, expected_version=stale),
        lambda: cart.set_item_quantity(owner_id=owner, product_id="p1", quantity=3, expected_version=stale),
        lambda: cart.remove_item(owner_id=owner, product_id="p1", expected_version=stale),
        lambda: cart.empty_cart(owner_id=owner, expected_version=stale),
        lambda: cart.check_out(owner_id=owner, expected_version=stale),
    ):
        with raises(cart.CartChanged, currentVersion=current.version):
            write()

    assert in_process(cart.get_cart, owner_id=owner) == current
    fresh = cart.add_item(owner_id=owner, product_id="p1", quantity=1, expected_version=current.version)
    assert lines(fresh) == [("p1", 2, Decimal("5.00"))]


# In process, the claims share one session (one app context), which SQLAlchemy warns about.
@pytest.mark.filterwarnings("ignore:New instance:sqlalchemy.exc.SAWarning")
def test_idempotency_keys_claim_complete_replay_and_refuse_another_body(port_app):
    owner = guest()

    assert cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h1") is None
    with raises(cart.IdempotencyKeyInUse) as in_use:
        cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h1")
    assert in_use.value.detail == "A request with this Idempotency-Key is still running; retry shortly."
    running = [(guest(), "k1"), (owner, "k2")]  # another owner's k1, another key of this owner
    for other_owner, other_key in running:
        assert cart.claim_idempotency_key(owner_id=other_owner, key=other_key, request_hash="h1") is None
    stored = cart.StoredResponse(status=201, body={"totalPrice": "5.00", "items": [{"quantity": 2}]}, etag='"3"')
    assert cart.complete_idempotency_key(owner_id=owner, key="k1", response=stored) is None
    for other_owner, other_key in running:  # completing one key completes no other
        with raises(cart.IdempotencyKeyInUse):
            cart.claim_idempotency_key(owner_id=other_owner, key=other_key, request_hash="h1")

    replayed = cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h1")

    assert replayed == stored
    assert type(replayed) is cart.StoredResponse
    with raises(cart.IdempotencyKeyReused) as reused:
        cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h2")
    assert reused.value.detail == "This Idempotency-Key was used for a different request; use a new key."
    assert cart.claim_idempotency_key(owner_id=guest(), key="k1", request_hash="h2") is None  # per owner


def test_a_released_idempotency_key_can_be_claimed_again(port_app):
    owner = guest()
    assert cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h1") is None
    running = [(guest(), "k1"), (owner, "k2")]  # another owner's k1, another key of this owner
    for other_owner, other_key in running:
        assert cart.claim_idempotency_key(owner_id=other_owner, key=other_key, request_hash="h1") is None

    assert cart.release_idempotency_key(owner_id=owner, key="k1") is None

    assert cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h2") is None
    for other_owner, other_key in running:  # releasing one key releases no other
        with raises(cart.IdempotencyKeyInUse):
            cart.claim_idempotency_key(owner_id=other_owner, key=other_key, request_hash="h1")


def test_releasing_a_completed_idempotency_key_keeps_its_answer(port_app):
    owner = guest()
    stored = cart.StoredResponse(status=201, body={"items": []}, etag='"1"')
    assert cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h1") is None
    cart.complete_idempotency_key(owner_id=owner, key="k1", response=stored)

    assert cart.release_idempotency_key(owner_id=owner, key="k1") is None

    assert cart.claim_idempotency_key(owner_id=owner, key="k1", request_hash="h1") == stored


def test_check_out_turns_holds_into_an_order(port_app, in_process, catalog):
    in_process(cart.add_item, owner_id=USER, product_id="p1", quantity=2)
    in_process(cart.add_item, owner_id=USER, product_id="p2", quantity=1)
    before = in_process(cart.get_cart, owner_id=USER)

    order = cart.check_out(owner_id=USER, expected_version=before.version)

    assert type(order) is cart.Order
    assert type(order.items) is tuple
    assert all(type(line) is cart.OrderLine for line in order.items)
    assert_money(order.total_price, *(line.price for line in order.items), *(line.line_total for line in order.items))
    assert_aware_utc(order.created_at)
    assert (order.user_id, order.shopping_cart_id, order.currency) == (USER, before.shopping_cart_id, "USD")
    assert (order.total_price, order.total_quantity) == (Decimal("24.99"), 3)
    assert [(line.product_id, line.quantity, line.line_total) for line in order.items] == [
        ("p1", 2, Decimal("5.00")),
        ("p2", 1, Decimal("19.99")),
    ]
    p1, p2 = (in_process(products.get_product, product_id=product_id) for product_id in ("p1", "p2"))
    assert ((p1.stock, p1.reserved), (p2.stock, p2.reserved)) == ((8, 0), (2, 0))
    next_cart = cart.get_cart(owner_id=USER)
    assert (next_cart.items, next_cart.shopping_cart_id != before.shopping_cart_id) == ((), True)

    assert cart.get_order(order_id=order.order_id, owner_id=USER) == order
    assert cart.get_order(order_id=order.order_id, owner_id=None) == order
    assert order == in_process(cart.get_order, order_id=order.order_id, owner_id=USER)
    with raises(cart.OrderNotFound, orderId=order.order_id):
        cart.get_order(order_id=order.order_id, owner_id="someone-else")
    with raises(cart.CartEmpty):
        cart.check_out(owner_id=USER)


def test_held_reservations_names_the_holds_of_lines_in_active_carts_only(port_app, in_process, catalog):
    in_process(cart.add_item, owner_id=USER, product_id="p1", quantity=2)
    in_process(cart.add_item, owner_id=USER, product_id="p2", quantity=1)
    active = in_process(products.list_active_reservations, created_before=clock.now() + timedelta(minutes=1))
    held = {hold.product_id: hold.reservation_id for hold in active}

    found = cart.held_reservations(reservation_ids=[held["p2"], "no-such-hold", held["p1"]])

    assert type(found) is tuple
    assert sorted(found) == sorted([held["p1"], held["p2"]])
    in_process(cart.check_out, owner_id=USER)  # the checked-out cart keeps its lines, its holds are sold
    assert cart.held_reservations(reservation_ids=[held["p1"], held["p2"]]) == ()


def test_list_orders_pages_newest_first(port_app, in_process, catalog):
    placed = []
    for quantity in (1, 2, 3):
        in_process(cart.add_item, owner_id=USER, product_id="p1", quantity=quantity)
        placed.append(in_process(cart.check_out, owner_id=USER))

    page = cart.list_orders(owner_id=USER, page=1, page_size=2)
    rest = cart.list_orders(owner_id=USER, page=2, page_size=2)

    assert type(page) is cart.OrderPage
    assert type(page.items) is tuple
    assert (page.items, page.total) == ((placed[2], placed[1]), 3)
    assert (rest.items, rest.total) == ((placed[0],), 3)
    assert cart.list_orders(owner_id=None).total == 3
    assert cart.list_orders(owner_id="nobody") == cart.OrderPage(items=(), total=0)


def test_merge_guest_cart_adds_up_and_is_idempotent(port_app, in_process, catalog):
    visitor = guest()
    in_process(cart.add_item, owner_id=USER, product_id="p2", quantity=1)
    in_process(cart.add_item, owner_id=visitor, product_id="p1", quantity=3)
    in_process(cart.add_item, owner_id=visitor, product_id="p2", quantity=1)

    merged = cart.merge_guest_cart(guest_id=visitor, user_id=USER)

    assert type(merged) is cart.MergeResult
    assert type(merged.adjustments) is tuple
    assert_cart_types(merged.cart)
    assert merged.merged_lines == 2
    assert sorted(lines(merged.cart)) == [("p1", 3, Decimal("7.50")), ("p2", 2, Decimal("39.98"))]
    assert merged.adjustments == ()
    assert merged.cart == in_process(cart.get_cart, owner_id=USER)
    assert (reserved(in_process, "p1"), reserved(in_process, "p2")) == (3, 2)
    assert in_process(cart.get_cart, owner_id=visitor).items == ()

    again = cart.merge_guest_cart(guest_id=visitor, user_id=USER)
    assert (again.merged_lines, again.adjustments, again.cart) == (0, (), merged.cart)


def test_merge_caps_a_line_at_the_maximum_and_reports_it(port_app, in_process, catalog):
    visitor = guest()
    in_process(products.adjust_stock, product_id="p1", delta=200, reason="delivery")
    in_process(cart.add_item, owner_id=USER, product_id="p1", quantity=60)
    in_process(cart.add_item, owner_id=visitor, product_id="p1", quantity=60)

    merged = cart.merge_guest_cart(guest_id=visitor, user_id=USER)

    limit = cart.MAX_LINE_QUANTITY
    assert [(item.product_id, item.quantity) for item in merged.cart.items] == [("p1", limit)]
    assert merged.adjustments == (
        cart.MergeAdjustment(product_id="p1", requested=120, merged=limit, reason="quantity_limit"),
    )
    assert type(merged.adjustments[0]) is cart.MergeAdjustment
    assert reserved(in_process, "p1") == limit


def test_is_available(port_app):
    assert cart.is_available() is True
