"""Stock reservations through products.interface, against the real Mongo wire-protocol server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.products import interface as products
from app.products.catalog import collection
from app.products.models import to_epoch_ms
from app.products.reservations import STALE_AFTER, reservations


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def expiry() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=15)


def make_product(product_id: str = "p1", stock: int = 10) -> products.Product:
    draft = products.ProductDraft(
        product_id=product_id, sku=f"SKU-{product_id}", name="Mug", price=Decimal("5.00"), stock=stock
    )
    return products.create_product(draft=draft)


def reserve(quantity: int, reservation_id: str = "r1", product_id: str = "p1") -> products.StockReservation:
    return products.reserve_stock(
        product_id=product_id, quantity=quantity, reservation_id=reservation_id, expires_at=expiry()
    )


def counters(product_id: str = "p1") -> tuple[int, int, int]:
    product = products.get_product(product_id=product_id)
    return product.stock, product.reserved, product.available


@pytest.mark.usefixtures("ctx")
class TestReserve:
    def test_reserve_holds_units_and_bumps_version(self):
        before = make_product(stock=10)
        reservation = reserve(3)
        assert (reservation.quantity, reservation.status) == (3, "active")
        assert counters() == (10, 3, 7)
        assert products.get_product(product_id="p1").version > before.version

    def test_same_call_twice_counts_once(self):
        make_product(stock=10)
        reserve(3)
        reserve(3)
        assert counters() == (10, 3, 7)

    def test_new_quantity_moves_only_the_difference(self):
        make_product(stock=10)
        reserve(3)
        reserve(5)
        assert counters() == (10, 5, 5)
        reserve(1)
        assert counters() == (10, 1, 9)
        assert reserve(0).quantity == 0
        assert counters() == (10, 0, 10)

    def test_insufficient_stock_reports_what_is_available(self):
        make_product(stock=4)
        reserve(3, "a")
        with pytest.raises(products.InsufficientStock) as raised:
            reserve(2, "b")
        assert raised.value.extensions["available"] == 1
        assert counters() == (4, 3, 1)
        assert reservations().count_documents({"reservation_id": "b"}) == 0

    def test_failed_increase_keeps_the_existing_hold(self):
        make_product(stock=4)
        reserve(3)
        with pytest.raises(products.InsufficientStock):
            reserve(5)
        assert counters() == (4, 3, 1)
        assert reserve(3).quantity == 3

    def test_unknown_and_archived_products_cannot_be_reserved(self):
        with pytest.raises(products.ProductNotFound):
            reserve(1, product_id="missing")
        make_product()
        products.archive_product(product_id="p1")
        with pytest.raises(products.ProductNotFound):
            reserve(1)

    def test_a_product_stored_before_available_existed_is_filled_in(self):
        """Products written by older code have no `available` field; the first stock change
        gives it its value (stock - reserved) and then applies as usual."""
        make_product("p1", stock=10)
        make_product("p2", stock=10)
        reserve(2, "a")
        collection().update_many({}, {"$unset": {"available": ""}})

        reserve(5, "a")
        assert counters() == (10, 5, 5)
        products.release_reservation(reservation_id="a")
        products.adjust_stock(product_id="p2", delta=-4, reason="breakage")
        assert [collection().find_one({"product_id": p})["available"] for p in ("p1", "p2")] == [10, 6]

    def test_reservation_id_is_bound_to_its_product(self):
        make_product("p1")
        make_product("p2")
        reserve(1, "r1", "p1")
        with pytest.raises(products.ReservationConflict):
            reserve(1, "r1", "p2")


@pytest.mark.usefixtures("ctx")
class TestReleaseAndCommit:
    def test_release_gives_units_back_once(self):
        make_product(stock=10)
        reserve(4)
        assert products.release_reservation(reservation_id="r1").status == "released"
        assert products.release_reservation(reservation_id="r1").status == "released"
        assert counters() == (10, 0, 10)

    def test_commit_turns_the_hold_into_a_sale_once(self):
        make_product(stock=10)
        reserve(4)
        assert products.commit_reservation(reservation_id="r1").status == "committed"
        assert products.commit_reservation(reservation_id="r1").status == "committed"
        assert counters() == (6, 0, 6)

    def test_closed_reservations_cannot_change(self):
        make_product(stock=10)
        reserve(4)
        products.commit_reservation(reservation_id="r1")
        with pytest.raises(products.ReservationConflict):
            products.release_reservation(reservation_id="r1")
        with pytest.raises(products.ReservationConflict):
            reserve(5)
        assert counters() == (6, 0, 6)

    def test_unknown_reservation(self):
        with pytest.raises(products.ReservationNotFound):
            products.release_reservation(reservation_id="nope")
        with pytest.raises(products.ReservationNotFound):
            products.commit_reservation(reservation_id="nope")

    def test_archived_product_still_releases_and_commits(self):
        make_product(stock=10)
        reserve(2, "a")
        reserve(3, "b")
        products.archive_product(product_id="p1")
        products.release_reservation(reservation_id="a")
        products.commit_reservation(reservation_id="b")
        assert counters() == (7, 0, 7)


@pytest.mark.usefixtures("ctx")
class TestCrashRecovery:
    """A process that died mid-change leaves a pending step; the next caller repairs it."""

    def _crash_mid_step(self, step: str) -> None:
        """A step claimed on r1 (which holds 2 units) that would make it hold 5."""
        since = to_epoch_ms(datetime.now(UTC))
        reservations().update_one(
            {"reservation_id": "r1"}, {"$set": {"pending_step": step, "pending_quantity": 5, "pending_since_ms": since}}
        )

    def _age_pending_step(self, reservation_id: str = "r1") -> None:
        long_ago = datetime.now(UTC) - STALE_AFTER - timedelta(seconds=1)
        reservations().update_one(
            {"reservation_id": reservation_id}, {"$set": {"pending_since_ms": to_epoch_ms(long_ago)}}
        )

    def test_step_applied_before_the_crash_is_kept(self):
        make_product(stock=10)
        reserve(2)
        step = "reserve:99:r1"
        self._crash_mid_step(step)
        applied = {"$inc": {"reserved": 3, "available": -3}, "$push": {"pending_steps": step}}
        collection().update_one({"product_id": "p1"}, applied)
        self._age_pending_step()

        assert reserve(5).quantity == 5
        assert counters() == (10, 5, 5)
        assert collection().find_one({"product_id": "p1"})["pending_steps"] == []

    def test_step_not_applied_before_the_crash_is_fenced_and_dropped(self):
        make_product(stock=10)
        reserve(2)
        self._crash_mid_step("reserve:99:r1")
        self._age_pending_step()

        assert products.release_reservation(reservation_id="r1").status == "released"
        assert counters() == (10, 0, 10)

    def test_a_fresh_pending_step_is_waited_for_not_stolen(self):
        make_product(stock=10)
        reserve(2)
        self._crash_mid_step("reserve:99:r1")
        with pytest.raises(products.ReservationBusy):
            products.release_reservation(reservation_id="r1")
        assert counters() == (10, 2, 8)


class TestConcurrency:
    def test_two_hundred_parallel_reservations_never_oversell(self, app):
        """20 threads x 10 single-unit reservations against 150 in stock: exactly 150 succeed."""

        def buyer(thread: int) -> list[bool]:
            outcomes = []
            with app.app_context():
                for attempt in range(10):
                    try:
                        reserve(1, f"t{thread}-{attempt}")
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
            assert counters() == (150, 150, 0)
            assert reservations().count_documents({"status": "active", "quantity": 1}) == 150

    def test_the_same_reservation_from_many_threads_counts_once(self, app):
        def same_call(_: int) -> int:
            with app.app_context():
                return reserve(3, "shared").quantity

        with app.app_context():
            make_product(stock=10)
        with ThreadPoolExecutor(max_workers=10) as pool:
            quantities = list(pool.map(same_call, range(10)))
        with app.app_context():
            assert quantities == [3] * 10
            assert counters() == (10, 3, 7)
