"""Stock holds (app/products/holds.py) through products.interface, against the real Mongo
wire-protocol server: each change one conditional update of the product document.

Time moves through `app.clock.now` (every expiry decision reads it), never by sleeping; MongoDB
commands are counted by a client of this test's own with a CommandListener.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import mongoengine
import pytest
from pymongo import MongoClient, monitoring

from app import clock
from app.products import catalog, holds
from app.products import interface as products
from app.products.catalog import collection
from app.products.models import LAPSE_GRACE, to_epoch_ms

HANDSHAKES = {"hello", "ismaster", "isMaster", "endSessions"}


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


class Clock:
    """app.clock.now, held still at `moment` until moved on."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, by: timedelta) -> None:
        self.moment += by


@pytest.fixture
def now(monkeypatch) -> Clock:
    frozen = Clock()
    monkeypatch.setattr(clock, "now", frozen)
    return frozen


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event):
        if event.command_name not in HANDSHAKES:
            self.names.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@pytest.fixture
def commands(ctx, mongo_uri, monkeypatch) -> Iterator[Commands]:
    """The products collection reached through a client whose listener records every command
    (a client-level listener: pymongo.monitoring.register would be process-wide)."""
    listener = Commands()
    client = MongoClient(mongo_uri, uuidRepresentation="standard", event_listeners=[listener])
    counted = client[mongoengine.get_db().name]["products"]
    monkeypatch.setattr(holds, "products", lambda: counted)
    monkeypatch.setattr(catalog, "collection", lambda: counted)
    client.admin.command("ping")  # connected before anything is counted
    listener.names.clear()
    yield listener
    client.close()


def expiry(minutes: int = 15) -> datetime:
    return clock.now() + timedelta(minutes=minutes)


def make_product(product_id: str = "p1", stock: int = 10) -> products.Product:
    draft = products.ProductDraft(
        product_id=product_id, sku=f"SKU-{product_id}", name="Mug", price=Decimal("5.00"), stock=stock
    )
    return products.create_product(draft=draft)


def reserve(
    quantity: int,
    reservation_id: str = "r1",
    product_id: str = "p1",
    *,
    held: int | None = None,
    expires_at: datetime | None = None,
) -> products.StockReservation:
    return products.reserve_stock(
        product_id=product_id,
        quantity=quantity,
        reservation_id=reservation_id,
        expires_at=expires_at or expiry(),
        held=held,
    )


def release(reservation_id: str = "r1", product_id: str = "p1", held: int | None = None) -> products.StockReservation:
    return products.release_reservation(product_id=product_id, reservation_id=reservation_id, held=held)


def commit(reservation_id: str = "r1", product_id: str = "p1", held: int | None = None) -> products.StockReservation:
    return products.commit_reservation(product_id=product_id, reservation_id=reservation_id, held=held)


def counters(product_id: str = "p1") -> tuple[int, int, int]:
    product = products.get_product(product_id=product_id)
    return product.stock, product.reserved, product.available


def stored(product_id: str = "p1") -> dict:
    return collection().find_one({"product_id": product_id})


def stored_counters(product_id: str = "p1") -> tuple[int, int, int]:
    raw = stored(product_id)
    return raw["stock"], raw["reserved"], raw["available"]


def held_units(product_id: str = "p1") -> dict[str, int]:
    return {reservation_id: hold["qty"] for reservation_id, hold in stored(product_id)["holds"].items()}


@pytest.mark.usefixtures("ctx")
class TestReserve:
    def test_reserve_holds_units_and_bumps_version(self, now):
        before = make_product(stock=10)
        until = expiry()
        reservation = reserve(3, expires_at=until)
        assert (reservation.quantity, reservation.status, reservation.expires_at) == (3, "active", until)
        assert counters() == stored_counters() == (10, 3, 7)
        assert stored()["holds"] == {"r1": {"qty": 3, "until": to_epoch_ms(until), "since": to_epoch_ms(now())}}
        assert products.get_product(product_id="p1").version > before.version

    @pytest.mark.parametrize("reservation_id", ["a.b", "$set", "", "x" * 65, "r 1"])
    def test_an_id_that_is_no_field_name_is_refused_and_changes_nothing(self, reservation_id):
        make_product(stock=10)
        before = stored()
        for call in (
            lambda: reserve(3, reservation_id=reservation_id),
            lambda: release(reservation_id, held=3),
            lambda: commit(reservation_id, held=3),
        ):
            with pytest.raises(products.ReservationIdInvalid):
                call()
        assert stored() == before

    def test_same_call_twice_counts_once(self):
        make_product(stock=10)
        until = expiry()
        reserve(3, expires_at=until)
        version = stored()["version"]
        assert reserve(3, expires_at=until).quantity == 3
        assert counters() == (10, 3, 7)
        assert stored()["version"] == version

    def test_new_quantity_moves_only_the_difference(self):
        make_product(stock=10)
        reserve(3)
        reserve(5)
        assert counters() == stored_counters() == (10, 5, 5)
        reserve(1)
        assert counters() == (10, 1, 9)
        assert reserve(0).quantity == 0
        assert counters() == stored_counters() == (10, 0, 10)
        assert stored()["holds"] == {}

    def test_insufficient_stock_reports_available_and_requested(self):
        make_product(stock=4)
        reserve(3, "a")
        with pytest.raises(products.InsufficientStock) as raised:
            reserve(2, "b")
        assert (raised.value.available, raised.value.requested) == (1, 2)
        assert counters() == (4, 3, 1)
        assert held_units() == {"a": 3}

    def test_failed_increase_keeps_the_existing_hold(self):
        make_product(stock=4)
        reserve(3)
        with pytest.raises(products.InsufficientStock) as raised:
            reserve(5, held=3)
        assert (raised.value.available, raised.value.requested) == (1, 5)
        assert counters() == (4, 3, 1)
        assert held_units() == {"r1": 3}
        assert reserve(3).quantity == 3

    def test_unknown_and_archived_products_cannot_be_reserved(self):
        with pytest.raises(products.ProductNotFound):
            reserve(1, product_id="missing")
        with pytest.raises(products.ProductNotFound):
            reserve(1, product_id="missing", held=0)
        make_product()
        products.archive_product(product_id="p1")
        for held in (None, 0):
            with pytest.raises(products.ProductNotFound) as raised:
                reserve(1, held=held)
            assert (raised.value.detail, raised.value.product_id) == ("No product with productId 'p1'.", "p1")
        assert stored()["holds"] == {}

    def test_a_product_stored_before_available_existed_is_filled_in(self):
        """Products written by older code have no `available` field; the first stock change
        gives it its value (stock - reserved) and then applies as usual."""
        make_product("p1", stock=10)
        make_product("p2", stock=10)
        make_product("p3", stock=10)
        reserve(2, "a")
        collection().update_many({}, {"$unset": {"available": ""}})

        reserve(5, "a")
        assert stored_counters() == (10, 5, 5)
        release("a")
        products.adjust_stock(product_id="p2", delta=-4, reason="breakage")
        assert reserve(10, "all", "p3").quantity == 10  # every unit there is
        assert [stored(p)["available"] for p in ("p1", "p2", "p3")] == [10, 6, 0]

    def test_a_stock_cut_below_the_held_units_is_refused_at_the_first_try(self, commands):
        """The refusal's figures are read once; only a product stored before `available`
        existed is tried again, once it has been filled in."""
        make_product("p1", stock=10)
        make_product("p2", stock=10)
        reserve(4, "a", "p1")
        reserve(4, "a", "p2")
        collection().update_one({"product_id": "p2"}, {"$unset": {"available": ""}})

        commands.names.clear()
        with pytest.raises(products.StockBelowReserved):
            products.adjust_stock(product_id="p1", delta=-7, reason="count")
        assert commands.names == ["findAndModify", "find"]
        commands.names.clear()
        with pytest.raises(products.StockBelowReserved):
            products.adjust_stock(product_id="p2", delta=-7, reason="count")
        assert commands.names == ["findAndModify", "find", "update", "findAndModify", "find"]
        assert [stored_counters(p) for p in ("p1", "p2")] == [(10, 4, 6), (10, 4, 6)]

    def test_a_release_on_a_product_stored_before_available_existed(self):
        make_product(stock=10)
        reserve(4, "a")
        collection().update_one({"product_id": "p1"}, {"$unset": {"available": ""}})

        assert release("a", held=4).status == "released"
        assert stored_counters() == (10, 0, 10)

    def test_the_answer_carries_the_product_after_the_change(self):
        make_product(stock=10)
        reserve(2, "other")
        grown = reserve(3, held=0)
        assert (grown.product.reserved, grown.product.available) == (5, 5)
        assert grown.product == products.get_product(product_id="p1")
        shrunk = reserve(1, held=3)
        assert (shrunk.product.reserved, shrunk.product.available) == (3, 7)
        released = release(held=1)
        assert (released.product.reserved, released.product.available) == (2, 8)
        sold = commit("other", held=2)
        assert (sold.product.stock, sold.product.reserved, sold.product.available) == (8, 0, 8)
        assert sold.product == products.get_product(product_id="p1")


@pytest.mark.usefixtures("ctx")
class TestReleaseAndCommit:
    def test_release_gives_units_back_once(self):
        make_product(stock=10)
        reserve(4)
        assert release().status == "released"
        assert release().status == "released"
        assert release(held=4).status == "released"
        assert counters() == stored_counters() == (10, 0, 10)

    def test_commit_turns_the_hold_into_a_sale_once(self, now):
        make_product(stock=10)
        reserve(4)
        first = commit()
        assert (first.status, first.quantity) == ("committed", 4)
        again = commit()
        assert (again.status, again.quantity) == ("committed", 4)
        assert commit(held=4).status == "committed"
        assert counters() == stored_counters() == (6, 0, 6)
        assert stored()["holds"] == {}
        assert stored()["sold"] == {"r1": {"qty": 4, "at": to_epoch_ms(now())}}
        assert products.get_product(product_id="p1").version == 3  # made, held, sold
        changes = [
            (event["payload"]["reason"], event["payload"]["change"], event["payload"]["reservationIds"])
            for pending in products.pending_events()
            for event in pending.events
            if event["type"] == "product.stock_changed"
        ]
        assert changes == [
            ("hold", {"stock": 0, "reserved": 4, "available": -4}, ["r1"]),
            ("sale", {"stock": -4, "reserved": -4, "available": 0}, ["r1"]),  # recorded once
        ]

    def test_a_committed_reservation_cannot_be_held_again(self):
        make_product(stock=10)
        reserve(4)
        commit()
        for held in (None, 0, 4):
            with pytest.raises(products.ReservationConflict) as raised:
                reserve(5, held=held)
            assert (raised.value.reservation_id, raised.value.reservation_status) == ("r1", "committed")
        with pytest.raises(products.ReservationConflict):
            release()
        assert counters() == (6, 0, 6)

    def test_commit_of_a_hold_that_is_gone(self):
        make_product(stock=10)
        reserve(4)
        release()
        for held in (None, 4):
            with pytest.raises(products.ReservationNotFound) as raised:
                commit(held=held)
            assert raised.value.reservation_id == "r1"
        with pytest.raises(products.ReservationNotFound):
            commit("never-held")
        assert counters() == (10, 0, 10)

    def test_release_of_an_unknown_hold_changes_nothing(self):
        make_product(stock=10)
        reserve(3, "a")
        before = stored()
        for held in (None, 0, 2):
            released = release("nope", held=held)
            assert (released.status, released.quantity, released.reservation_id) == ("released", 0, "nope")
            assert released.product.reserved == 3
        assert stored() == before
        with pytest.raises(products.ProductNotFound):
            release("nope", product_id="missing")

    def test_archived_product_still_releases_and_commits(self):
        make_product(stock=10)
        reserve(2, "a")
        reserve(3, "b")
        products.archive_product(product_id="p1")
        release("a")
        commit("b")
        assert counters() == stored_counters() == (7, 0, 7)


@pytest.mark.usefixtures("ctx")
class TestHeldHint:
    """`held` is the caller's belief about the hold: right, the change is one command;
    wrong, a read more, and the same outcome."""

    def test_a_right_hint_is_one_command(self, commands):
        make_product(stock=10)
        changes = [
            lambda: reserve(3, held=0),  # a new hold
            lambda: reserve(5, held=3),  # more
            lambda: reserve(2, held=5),  # less
            lambda: reserve(2, held=2, expires_at=expiry(30)),  # renewed
            lambda: release(held=2),
            lambda: reserve(4, "b", held=0),
            lambda: commit("b", held=4),
        ]
        for change in changes:
            commands.names.clear()
            change()
            assert commands.names == ["findAndModify"]
        assert stored_counters() == (6, 0, 6)

    @pytest.mark.parametrize("hint", [None, 0, 1, 2, 3, 4, 9])
    def test_a_wrong_hint_still_ends_with_the_right_hold(self, hint):
        make_product(stock=10)
        reserve(2, "other")
        reserve(3, held=0)
        until = expiry(20)

        grown = reserve(6, held=hint, expires_at=until)
        assert (grown.quantity, grown.status, grown.product.reserved) == (6, "active", 8)
        assert stored()["holds"]["r1"]["until"] == to_epoch_ms(until)
        assert stored_counters() == (10, 8, 2)

        shrunk = reserve(1, held=hint)
        assert (shrunk.quantity, shrunk.product.reserved) == (1, 3)
        assert stored_counters() == (10, 3, 7)
        assert held_units() == {"other": 2, "r1": 1}

    @pytest.mark.parametrize("hint", [None, 0, 1, 2, 5])
    def test_a_wrong_hint_still_releases_and_commits_the_hold(self, hint):
        make_product(stock=10)
        reserve(2, "a")
        reserve(3, "b")
        assert release("a", held=hint).status == "released"
        assert commit("b", held=hint).quantity == 3
        assert stored_counters() == (7, 0, 7)
        assert (stored()["holds"], stored()["sold"]["b"]["qty"]) == ({}, 3)

    def test_a_wrong_hint_costs_a_read_not_more(self, commands):
        make_product(stock=10)
        reserve(3, held=0)
        commands.names.clear()
        reserve(5, held=4)
        assert commands.names == ["findAndModify", "find", "findAndModify"]
        commands.names.clear()
        reserve(1)
        assert commands.names == ["find", "findAndModify"]
        assert stored_counters() == (10, 1, 9)

    def test_a_retried_change_is_recognised_as_applied(self, commands):
        """The same arguments again after the change applied (its answer was lost): the old
        hint no longer matches, the read shows it applied, and nothing moves."""
        make_product(stock=10)
        until = expiry()
        retries = [
            (lambda: reserve(3, held=0, expires_at=until), (3, "active")),
            (lambda: reserve(5, held=3, expires_at=until), (5, "active")),
            (lambda: reserve(2, held=5, expires_at=until), (2, "active")),
            (lambda: release(held=2), (0, "released")),
            (lambda: reserve(4, "b", held=0, expires_at=until), (4, "active")),
            (lambda: commit("b", held=4), (4, "committed")),
        ]
        for change, outcome in retries:
            first = change()
            before = stored()
            commands.names.clear()
            again = change()
            assert (again.quantity, again.status) == (first.quantity, first.status) == outcome
            assert again.product == first.product
            assert stored() == before
            assert "update" not in commands.names
        assert stored_counters() == (6, 0, 6)


@pytest.mark.usefixtures("ctx")
class TestLapsedHolds:
    """A hold lapses LAPSE_GRACE after its expiry: reads leave it out, a reservation that needs
    its units releases it, and until then its owner may renew it."""

    def test_reads_do_not_count_a_lapsed_hold(self, now):
        make_product(stock=10)
        reserve(4, "old", expires_at=expiry(1))
        reserve(1, "live", expires_at=expiry(60))

        now.advance(timedelta(minutes=1) + LAPSE_GRACE)
        assert counters() == (10, 5, 5)  # at the very end of the grace, still held

        now.advance(timedelta(milliseconds=1))
        assert counters() == (10, 1, 9)
        listed = products.list_products().items[0]
        assert (listed.reserved, listed.available) == (1, 9)
        assert products.get_products(product_ids=["p1"])[0].reserved == 1
        assert stored_counters() == (10, 5, 5)  # the store still has it, until its units are needed
        assert held_units() == {"old": 4, "live": 1}

    def test_a_reservation_short_of_units_releases_lapsed_holds(self, now):
        make_product(stock=10)
        reserve(4, "a", expires_at=expiry(1))
        reserve(3, "b", expires_at=expiry(2))
        reserve(2, "live", expires_at=expiry(60))
        now.advance(timedelta(minutes=2) + LAPSE_GRACE + timedelta(seconds=1))

        taken = reserve(5, "c", held=0)

        assert (taken.quantity, taken.status) == (5, "active")
        assert (taken.product.reserved, taken.product.available) == (7, 3)
        assert held_units() == {"live": 2, "c": 5}
        assert stored_counters() == (10, 7, 3)
        assert taken.product.version == 6  # made, 3 holds, the lapsed ones released, the new hold
        [expiry_event] = [
            event["payload"]
            for pending in products.pending_events()
            for event in pending.events
            if event["type"] == "product.stock_changed" and event["payload"]["reason"] == "expiry"
        ]
        assert expiry_event["change"] == {"stock": 0, "reserved": -7, "available": 7}
        assert sorted(expiry_event["reservationIds"]) == ["a", "b"]

    def test_a_hold_at_the_very_end_of_its_grace_is_not_released(self, now):
        make_product(stock=10)
        reserve(4, "old", expires_at=expiry(1))
        reserve(6, "live", expires_at=expiry(60))

        now.advance(timedelta(minutes=1) + LAPSE_GRACE)
        with pytest.raises(products.InsufficientStock):
            reserve(1, "c")
        assert held_units() == {"old": 4, "live": 6}

        now.advance(timedelta(milliseconds=1))
        assert reserve(1, "c").quantity == 1
        assert held_units() == {"live": 6, "c": 1}

    def test_a_reservation_with_enough_units_leaves_lapsed_holds_alone(self, now):
        make_product(stock=10)
        reserve(4, "a", expires_at=expiry(1))
        now.advance(timedelta(minutes=5))
        reserve(6, "b")
        assert held_units() == {"a": 4, "b": 6}
        assert release("a", held=4).status == "released"
        assert stored_counters() == (10, 6, 4)

    def test_short_even_after_releasing_lapsed_holds(self, now):
        make_product(stock=10)
        reserve(3, "a", expires_at=expiry(1))
        reserve(6, "live", expires_at=expiry(60))
        now.advance(timedelta(minutes=5))

        with pytest.raises(products.InsufficientStock) as raised:
            reserve(5, "c")
        assert (raised.value.available, raised.value.requested) == (4, 5)
        assert held_units() == {"live": 6}  # released on the way: the units were needed
        assert stored_counters() == (10, 6, 4)

    def test_a_lapsed_hold_owner_can_renew_it_while_it_is_there(self, now, commands):
        make_product(stock=10)
        reserve(6, "a", held=0, expires_at=expiry(1))
        reserve(4, "b", held=0, expires_at=expiry(1))
        now.advance(timedelta(minutes=5))
        assert counters() == (10, 0, 10)

        commands.names.clear()
        renewed = reserve(6, "a", held=6, expires_at=expiry(15))
        assert commands.names == ["findAndModify"]
        assert (renewed.quantity, renewed.status, renewed.product.reserved) == (6, "active", 6)

        grown = reserve(8, "a", held=6)  # short by 2: b's lapsed hold goes, a's own is kept
        assert (grown.quantity, grown.product.reserved, grown.product.available) == (8, 8, 2)
        assert held_units() == {"a": 8}
        assert stored_counters() == (10, 8, 2)

    def test_a_released_lapsed_hold_is_held_again_under_the_same_id(self, now):
        make_product(stock=10)
        reserve(6, "a", expires_at=expiry(1))
        now.advance(timedelta(minutes=5))
        reserve(8, "c")  # takes a's units
        assert held_units() == {"c": 8}

        with pytest.raises(products.InsufficientStock):
            reserve(6, "a", held=6)  # its owner renews: the units are gone
        again = reserve(2, "a", held=6)
        assert (again.reservation_id, again.quantity, again.status) == ("a", 2, "active")
        assert held_units() == {"c": 8, "a": 2}
        assert stored_counters() == (10, 10, 0)
        sold = commit("a", held=6)  # the caller's old belief: what is held now is sold
        assert (sold.quantity, sold.status) == (2, "committed")
        assert stored_counters() == (8, 8, 0)


@pytest.mark.usefixtures("ctx")
class TestSales:
    def test_sales_older_than_sold_memory_are_dropped_by_the_next_sale(self, now):
        make_product("p1", stock=20)
        make_product("p2", stock=20)
        for reservation_id in ("old", "recent", "next"):
            reserve(1, reservation_id)
        reserve(1, "elsewhere", "p2")
        commit("old")
        commit("elsewhere", "p2")
        now.advance(holds.SOLD_MEMORY / 2)
        commit("recent")
        assert set(stored()["sold"]) == {"old", "recent"}

        now.advance(holds.SOLD_MEMORY / 2 + timedelta(milliseconds=1))
        reserve(1, "next", expires_at=expiry())  # a hold change does not prune
        assert set(stored()["sold"]) == {"old", "recent"}
        commit("next")

        assert set(stored()["sold"]) == {"recent", "next"}
        assert set(stored("p2")["sold"]) == {"elsewhere"}  # only the selling product is pruned
        assert stored_counters() == (17, 0, 17)

    def test_a_sale_at_the_edge_of_sold_memory_is_kept(self, now):
        make_product(stock=10)
        reserve(1, "a")
        reserve(1, "b")
        commit("a")
        now.advance(holds.SOLD_MEMORY)
        commit("b")
        assert set(stored()["sold"]) == {"a", "b"}
        assert commit("a").status == "committed"  # a retried checkout still recognises its sale


@pytest.mark.usefixtures("ctx")
class TestActiveHolds:
    def test_pages_by_reservation_id(self, now):
        make_product("p1", stock=10)
        make_product("p2", stock=10)
        for reservation_id, product_id in [("r3", "p1"), ("r1", "p2"), ("r5", "p1"), ("r2", "p1"), ("r4", "p2")]:
            reserve(1, reservation_id, product_id)
        reserve(2, "r1", "p2")
        now.advance(timedelta(seconds=1))
        made_before = now()

        first = products.list_active_reservations(created_before=made_before, limit=2)
        second = products.list_active_reservations(created_before=made_before, after=first[-1].reservation_id, limit=2)
        third = products.list_active_reservations(created_before=made_before, after=second[-1].reservation_id, limit=2)
        end = products.list_active_reservations(created_before=made_before, after=third[-1].reservation_id, limit=2)

        pages = [[(hold.reservation_id, hold.product_id, hold.quantity) for hold in page] for page in (first, second)]
        assert pages == [[("r1", "p2", 2), ("r2", "p1", 1)], [("r3", "p1", 1), ("r4", "p2", 1)]]
        assert [(hold.reservation_id, hold.status) for hold in third] == [("r5", "active")]
        assert end == ()
        assert first[0].product == products.get_product(product_id="p2")

    def test_filters_by_created_before(self, now):
        make_product(stock=10)
        reserve(1, "early")
        reserve(1, "renewed")
        now.advance(timedelta(minutes=10))
        made_before = now()
        reserve(1, "at-the-cut")
        reserve(2, "renewed", expires_at=expiry(30))  # a change keeps when the hold was made
        now.advance(timedelta(minutes=10))
        reserve(1, "late")
        release("early")
        reserve(1, "early")  # held again: made anew

        found = products.list_active_reservations(created_before=made_before)
        assert [(hold.reservation_id, hold.quantity) for hold in found] == [("renewed", 2)]
        everything = products.list_active_reservations(created_before=now() + timedelta(seconds=1))
        assert [hold.reservation_id for hold in everything] == ["at-the-cut", "early", "late", "renewed"]

    def test_the_same_reservation_id_in_two_products_is_listed_for_each(self, now):
        make_product("p1", stock=10)
        make_product("p2", stock=10)
        reserve(1, "b", "p1")
        reserve(2, "a", "p2")
        reserve(3, "a", "p1")
        now.advance(timedelta(seconds=1))

        listed = products.list_active_reservations(created_before=now())

        assert sorted((hold.reservation_id, hold.product_id, hold.quantity) for hold in listed) == [
            ("a", "p1", 3),
            ("a", "p2", 2),
            ("b", "p1", 1),
        ]
        assert [hold.reservation_id for hold in listed] == ["a", "a", "b"]

    def test_committed_and_released_holds_are_not_listed(self, now):
        make_product(stock=10)
        reserve(1, "a")
        reserve(1, "b")
        reserve(1, "c")
        commit("a")
        release("b")
        now.advance(timedelta(seconds=1))
        assert [hold.reservation_id for hold in products.list_active_reservations(created_before=now())] == ["c"]


class ChangedFirst:
    """The products collection, where another writer grows hold r1 by a unit just before each
    conditional update of this process: every one of them finds the hold changed."""

    def __init__(self, collection) -> None:
        self.collection = collection

    def __getattr__(self, name: str):
        return getattr(self.collection, name)

    def find_one_and_update(self, *args, **kwargs):
        self.collection.update_one(
            {"product_id": "p1"}, {"$inc": {"holds.r1.qty": 1, "reserved": 1, "available": -1, "version": 1}}
        )
        return self.collection.find_one_and_update(*args, **kwargs)


class TestConcurrency:
    @pytest.mark.parametrize("change", [lambda: reserve(1, held=2), lambda: commit()], ids=["reserve", "commit"])
    def test_a_hold_that_keeps_changing_answers_busy(self, ctx, monkeypatch, change):
        make_product(stock=100)
        reserve(2)
        changing = ChangedFirst(collection())
        monkeypatch.setattr(holds, "products", lambda: changing)

        with pytest.raises(products.ReservationBusy) as raised:
            change()

        assert raised.value.detail == "Product 'p1' is changing too fast; try again."
        assert held_units() == {"r1": 2 + holds.ATTEMPTS}  # left as the other writer made it
        assert stored()["sold"] == {}

    def test_two_hundred_parallel_reservations_never_oversell(self, app):
        """20 threads x 10 single-unit reservations against 150 in stock: exactly 150 succeed."""

        def buyer(thread: int) -> list[bool]:
            outcomes = []
            with app.app_context():
                for attempt in range(10):
                    try:
                        reserve(1, f"t{thread}-{attempt}", held=0)
                        outcomes.append(True)
                    except products.InsufficientStock:
                        outcomes.append(False)
            return outcomes

        with app.app_context():
            make_product(stock=150)
        with ThreadPoolExecutor(max_workers=20) as pool:
            outcomes = [ok for result in pool.map(buyer, range(20)) for ok in result]
        with app.app_context():
            assert outcomes.count(True) == 150
            assert counters() == stored_counters() == (150, 150, 0)
            assert sorted(held_units().values()) == [1] * 150

    def test_the_same_reservation_from_many_threads_counts_once(self, app):
        with app.app_context():
            make_product(stock=10)
            until = expiry()

        def same_call(thread: int) -> int:
            with app.app_context():
                return reserve(3, "shared", held=0 if thread % 2 else None, expires_at=until).quantity

        with ThreadPoolExecutor(max_workers=10) as pool:
            quantities = list(pool.map(same_call, range(10)))
        with app.app_context():
            assert quantities == [3] * 10
            assert counters() == stored_counters() == (10, 3, 7)
            assert held_units() == {"shared": 3}

    def test_changes_of_one_hold_from_many_threads_end_consistent(self, app):
        """Threads move the same hold to different quantities with stale hints: whatever
        quantity wins last, the counters are that hold's units."""
        with app.app_context():
            make_product(stock=10)

        def mover(thread: int) -> None:
            with app.app_context():
                for attempt in range(10):
                    reserve(1 + (thread + attempt) % 4, "shared", held=attempt % 3)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(mover, range(8)))
        with app.app_context():
            units = held_units()["shared"]
            assert stored_counters() == (10, units, 10 - units)
