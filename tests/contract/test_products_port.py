"""The products port's contract, run against the in-process and the HTTP implementation.

Same inputs, same DTOs (field values and types) and the same exceptions (class, extensions).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from flask import g

from app.products import interface as products
from tests.contract.conftest import assert_aware_utc, assert_money, raises


def draft(product_id: str, **fields) -> products.ProductDraft:
    values = {"sku": f"SKU-{product_id.upper()}", "name": f"Product {product_id}", "price": Decimal("19.99")}
    return products.ProductDraft(product_id=product_id, **{**values, **fields})


def later(minutes: int = 15) -> datetime:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).replace(microsecond=0)


def assert_product_types(product: products.Product) -> None:
    assert type(product) is products.Product
    assert_money(product.price)
    assert_aware_utc(product.created_at, product.updated_at)
    assert type(product.tags) is tuple
    assert all(type(value) is int for value in (product.stock, product.reserved, product.version))


# --- catalog -------------------------------------------------------------------------------


def test_create_returns_the_product_as_stored(port_app, in_process):
    created = products.create_product(
        draft=draft(
            "p1",
            sku="RUN-1",
            name="Trail shoe",
            description="Light",
            category="shoes",
            tags=("run", "trail"),
            price=Decimal("19.90"),
            currency="EUR",
            stock=7,
        )
    )

    assert_product_types(created)
    assert (created.product_id, created.sku, created.name, created.description, created.category) == (
        "p1",
        "RUN-1",
        "Trail shoe",
        "Light",
        "shoes",
    )
    assert (created.tags, created.price, created.currency) == (("run", "trail"), Decimal("19.90"), "EUR")
    assert (created.stock, created.reserved, created.available, created.status, created.version) == (
        7,
        0,
        7,
        "active",
        1,
    )
    assert created == in_process(products.get_product, product_id="p1")


def test_create_generates_an_id_when_none_is_given(port_app, in_process):
    created = products.create_product(draft=products.ProductDraft(sku="SKU-A", name="A", price=Decimal("1")))

    assert created.product_id
    assert created == in_process(products.get_product, product_id=created.product_id)


def test_create_refuses_a_taken_id_or_sku(port_app):
    products.create_product(draft=draft("p1", sku="SKU-1"))

    with raises(products.ProductIdTaken, productId="p1"):
        products.create_product(draft=draft("p1", sku="SKU-2"))
    with raises(products.SkuTaken, sku="SKU-1"):
        products.create_product(draft=draft("p2", sku="SKU-1"))


def test_get_product_and_get_products(port_app, in_process):
    for product_id in ("a", "b", "c"):
        in_process(products.create_product, draft=draft(product_id))
    in_process(products.archive_product, product_id="c")

    fetched = products.get_product(product_id="a")
    some = products.get_products(product_ids=["c", "nope", "a"])

    assert fetched == in_process(products.get_product, product_id="a")
    assert_product_types(fetched)
    assert type(some) is tuple
    assert [product.product_id for product in some] == ["c", "a"]  # archived included, order kept
    assert some[0].status == "archived"
    assert products.get_products(product_ids=[]) == ()
    assert products.get_products(product_ids=iter(["b"])) == (in_process(products.get_product, product_id="b"),)
    with raises(products.ProductNotFound, productId="nope"):
        products.get_product(product_id="nope")


def test_list_products_filters_sorts_and_pages(port_app, in_process):
    catalog = [
        ("p1", "Red trail shoe", "Shoes", ("run",), "30.00", 5),
        ("p2", "Blue road shoe", "Shoes", ("run", "road"), "20.00", 0),
        ("p3", "Wool sock", "Socks", ("warm",), "5.50", 9),
        ("p4", "Trail sock", "Socks", ("run",), "7.25", 3),
    ]
    for product_id, name, category, tags, price, stock in catalog:
        in_process(
            products.create_product,
            draft=draft(product_id, name=name, category=category, tags=tags, price=Decimal(price), stock=stock),
        )
    in_process(products.archive_product, product_id="p4")

    everything = products.list_products()
    assert type(everything) is products.ProductPage
    assert type(everything.items) is tuple
    assert [item.product_id for item in everything.items] == ["p1", "p2", "p3"]
    assert (everything.total, everything.page, everything.page_size) == (3, 1, 20)
    assert everything == in_process(products.list_products)

    def ids(**arguments) -> list[str]:
        return [item.product_id for item in products.list_products(**arguments).items]

    assert ids(filters=products.ProductFilters(category="Shoes")) == ["p1", "p2"]
    assert ids(filters=products.ProductFilters(tag="run")) == ["p1", "p2"]
    assert ids(filters=products.ProductFilters(q="SHOE trail")) == ["p1"]
    assert ids(filters=products.ProductFilters(min_price=Decimal("5.50"), max_price=Decimal("20"))) == ["p2", "p3"]
    assert ids(filters=products.ProductFilters(in_stock=True)) == ["p1", "p3"]
    assert ids(sort="price") == ["p3", "p2", "p1"]
    assert ids(sort="-createdAt") == ["p3", "p2", "p1"]

    second = products.list_products(sort="price", page=2, page_size=2)
    assert ([item.product_id for item in second.items], second.total, second.page, second.page_size) == (
        ["p1"],
        3,
        2,
        2,
    )
    assert products.list_products(page=3, page_size=2).items == ()


def test_update_applies_changes_at_the_expected_version_only(port_app, in_process):
    created = in_process(products.create_product, draft=draft("p1", tags=("a",)))

    updated = products.update_product(
        product_id="p1",
        changes=products.ProductChanges(name="Renamed", price=Decimal("9.99"), tags=("b", "c")),
        expected_version=created.version,
    )

    assert_product_types(updated)
    assert (updated.name, updated.price, updated.tags, updated.version) == (
        "Renamed",
        Decimal("9.99"),
        ("b", "c"),
        created.version + 1,
    )
    assert (updated.sku, updated.description) == (created.sku, created.description)  # None: unchanged
    assert updated == in_process(products.get_product, product_id="p1")

    with raises(products.VersionMismatch, currentVersion=updated.version):
        products.update_product(
            product_id="p1", changes=products.ProductChanges(name="Lost"), expected_version=created.version
        )
    assert in_process(products.get_product, product_id="p1").name == "Renamed"
    with raises(products.ProductNotFound, productId="nope"):
        products.update_product(product_id="nope", changes=products.ProductChanges(name="x"), expected_version=1)


def test_archive_keeps_the_product_out_of_the_listing(port_app, in_process):
    in_process(products.create_product, draft=draft("p1"))

    archived = products.archive_product(product_id="p1")
    again = products.archive_product(product_id="p1")

    assert archived.status == "archived"
    assert again.status == "archived"
    assert again == in_process(products.get_product, product_id="p1")
    assert products.list_products().items == ()
    with raises(products.ProductNotFound, productId="nope"):
        products.archive_product(product_id="nope")


def test_adjust_stock_never_drops_below_the_reserved_units(port_app, in_process):
    in_process(products.create_product, draft=draft("p1", stock=5))
    in_process(products.reserve_stock, product_id="p1", quantity=3, reservation_id="r1", expires_at=later())

    raised = products.adjust_stock(product_id="p1", delta=4, reason="delivery")
    assert (raised.stock, raised.reserved, raised.available) == (9, 3, 6)

    with raises(products.StockBelowReserved, stock=9, reserved=3, available=6):
        products.adjust_stock(product_id="p1", delta=-7, reason="count")
    assert in_process(products.get_product, product_id="p1").stock == 9
    with raises(products.ProductNotFound, productId="nope"):
        products.adjust_stock(product_id="nope", delta=1, reason="x")


# --- reservations --------------------------------------------------------------------------


def test_reserve_stock_is_idempotent_by_reservation_id(port_app, in_process):
    in_process(products.create_product, draft=draft("p1", stock=5))
    expires_at = later()
    sent = expires_at.astimezone(timezone(timedelta(hours=-5)))  # any offset: the same instant

    first = products.reserve_stock(product_id="p1", quantity=3, reservation_id="r1", expires_at=sent, held=0)
    again = products.reserve_stock(product_id="p1", quantity=3, reservation_id="r1", expires_at=sent, held=0)

    product = in_process(products.get_product, product_id="p1")
    assert first == products.StockReservation(
        reservation_id="r1", product_id="p1", quantity=3, status="active", expires_at=expires_at, product=product
    )
    assert_aware_utc(first.expires_at)
    assert again == first
    assert (product.stock, product.reserved, product.available) == (5, 3, 2)


def test_reserve_stock_changes_a_hold_to_the_new_quantity(port_app, in_process):
    in_process(products.create_product, draft=draft("p1", stock=5))
    products.reserve_stock(product_id="p1", quantity=3, reservation_id="r1", expires_at=later())

    smaller = products.reserve_stock(product_id="p1", quantity=1, reservation_id="r1", expires_at=later(), held=3)
    wrong_guess = products.reserve_stock(product_id="p1", quantity=2, reservation_id="r1", expires_at=later(), held=4)

    assert (smaller.quantity, smaller.product.reserved) == (1, 1)
    assert (wrong_guess.quantity, wrong_guess.product.reserved) == (2, 2)
    assert in_process(products.get_product, product_id="p1").reserved == 2


def test_reserve_stock_refuses_more_than_is_available(port_app, in_process):
    in_process(products.create_product, draft=draft("p1", stock=2))

    with raises(products.InsufficientStock, productId="p1", available=2, requested=3):
        products.reserve_stock(product_id="p1", quantity=3, reservation_id="r1", expires_at=later())
    with raises(products.ProductNotFound, productId="nope"):
        products.reserve_stock(product_id="nope", quantity=1, reservation_id="r2", expires_at=later())
    assert in_process(products.get_product, product_id="p1").reserved == 0


def test_release_and_commit_apply_once(port_app, in_process):
    in_process(products.create_product, draft=draft("p1", stock=5))
    for reservation_id in ("r1", "r2"):
        products.reserve_stock(product_id="p1", quantity=2, reservation_id=reservation_id, expires_at=later())

    released = [products.release_reservation(product_id="p1", reservation_id="r1", held=2) for _ in range(2)]
    committed = [products.commit_reservation(product_id="p1", reservation_id="r2", held=2) for _ in range(2)]

    assert [(item.reservation_id, item.status, item.quantity) for item in released] == [("r1", "released", 0)] * 2
    assert [(item.reservation_id, item.status, item.quantity) for item in committed] == [("r2", "committed", 2)] * 2
    assert type(released[0]) is products.StockReservation
    product = in_process(products.get_product, product_id="p1")
    assert (product.stock, product.reserved) == (3, 0)
    assert committed[-1].product == product

    with raises(products.ReservationConflict, reservationId="r2", reservationStatus="committed"):
        products.reserve_stock(product_id="p1", quantity=1, reservation_id="r2", expires_at=later())
    with raises(products.ReservationNotFound, reservationId="r1"):
        products.commit_reservation(product_id="p1", reservation_id="r1")
    assert in_process(products.get_product, product_id="p1").stock == 3


def test_unknown_holds(port_app, in_process):
    in_process(products.create_product, draft=draft("p1", stock=5))

    released = products.release_reservation(product_id="p1", reservation_id="nope")

    assert (released.status, released.quantity, released.product.reserved) == ("released", 0, 0)
    with raises(products.ReservationNotFound, reservationId="nope"):
        products.commit_reservation(product_id="p1", reservation_id="nope")
    with raises(products.ProductNotFound, productId="gone"):
        products.release_reservation(product_id="gone", reservation_id="nope")


def test_import_products_takes_any_iterable_and_skips_existing_ones(port_app, in_process):
    in_process(products.create_product, draft=draft("p1"))

    inserted = products.import_products(drafts=(draft(product_id) for product_id in ("p1", "p2", "p3")))

    assert inserted == 2
    assert [item.product_id for item in in_process(products.list_products).items] == ["p1", "p2", "p3"]
    assert products.import_products(drafts=[draft("p2")]) == 0
    assert products.delete_all_products() == 3
    assert in_process(products.list_products).total == 0


def test_is_available_and_reconcile(port_app, in_process):
    in_process(products.create_product, draft=draft("p1", stock=5))

    report = products.reconcile_inventory(dry_run=True)

    assert products.is_available() is True
    assert type(report) is products.ReconcileReport
    assert report == in_process(products.reconcile_inventory, dry_run=True)


def test_the_event_a_call_records_names_whom_the_caller_acts_for(port_app, in_process):
    """Across HTTP too: the caller sends its actor (X-Storefront-Actor) with every call."""
    in_process(products.create_product, draft=draft("p-actor"))
    with port_app.test_request_context():
        g.actor = "user-42"  # what a verified token's subject, or the caller's own caller, makes it
        products.adjust_stock(product_id="p-actor", delta=2, reason="delivery")

    events = [event for pending in in_process(products.pending_events, limit=10) for event in pending.events]
    changed = [event for event in events if event["type"] == "product.stock_changed"]
    assert [(event["actor"], event["payload"]["reason"]) for event in changed] == [("user-42", "adjustment")]
