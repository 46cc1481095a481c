"""`flask inventory reconcile`: every product's counters recomputed from its holds
(app/products/reconcile.py), against the real Mongo wire-protocol server, including while
holds change concurrently."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from app import clock
from app.products import interface as products
from app.products import reconcile
from app.products.catalog import collection


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def make_product(product_id: str = "p1", stock: int = 10) -> products.Product:
    draft = products.ProductDraft(
        product_id=product_id, sku=f"SKU-{product_id}", name="Mug", price=Decimal("5.00"), stock=stock
    )
    return products.create_product(draft=draft)


def reserve(
    quantity: int, reservation_id: str, product_id: str = "p1", expires_at: datetime | None = None
) -> products.StockReservation:
    return products.reserve_stock(
        product_id=product_id,
        quantity=quantity,
        reservation_id=reservation_id,
        expires_at=expires_at or clock.now() + timedelta(minutes=15),
    )


def release(reservation_id: str, product_id: str = "p1") -> products.StockReservation:
    return products.release_reservation(product_id=product_id, reservation_id=reservation_id)


def commit(reservation_id: str, product_id: str = "p1") -> products.StockReservation:
    return products.commit_reservation(product_id=product_id, reservation_id=reservation_id)


def stored(product_id: str = "p1") -> dict:
    return collection().find_one({"product_id": product_id})


def drift(by: int, product_id: str = "p1") -> None:
    """Corrupt the counters behind the module's back, as a bug in a writer would (every writer
    moves `reserved` and `available` in one update)."""
    collection().update_one({"product_id": product_id}, {"$inc": {"reserved": by, "available": -by}})


def held_by_holds(product_id: str = "p1") -> int:
    return sum(hold["qty"] for hold in stored(product_id)["holds"].values())


def stock_changes() -> list[tuple[str, str, dict, dict]]:
    """Each recorded product.stock_changed: (the product it names, reason, change, figures after it)."""
    changes = []
    for pending in products.pending_events(limit=10):
        for event in pending.events:
            if event["type"] == "product.stock_changed":
                payload = event["payload"]
                assert event["aggregateId"] == payload["productId"]
                changes.append((payload["productId"], payload["reason"], payload["change"], payload["after"]))
    return changes


@pytest.mark.usefixtures("ctx")
class TestCounters:
    def test_a_consistent_store_is_left_alone(self):
        make_product("p1", stock=10)
        make_product("p2", stock=5)
        make_product("p3", stock=8)
        reserve(3, "a")
        reserve(2, "b")
        reserve(5, "b")  # changed quantity
        reserve(4, "c", "p2")
        release("c", "p2")
        reserve(2, "d", "p3")
        commit("d", "p3")
        reserve(1, "e", "p3")
        products.archive_product(product_id="p3")  # archived products still hold their holds
        before = {product_id: stored(product_id) for product_id in ("p1", "p2", "p3")}

        report = products.reconcile_inventory()

        assert report == products.ReconcileReport(products_checked=3, fixes=())
        assert {product_id: stored(product_id) for product_id in before} == before
        assert [stored(p)["reserved"] for p in ("p1", "p2", "p3")] == [8, 0, 1]

    def test_drift_is_fixed_up_and_down(self):
        make_product("p1", stock=10)
        make_product("p2", stock=10)
        make_product("p3", stock=10)
        reserve(3, "a", "p1")
        reserve(4, "b", "p2")
        reserve(1, "c", "p3")
        drift(+2, "p1")  # units nobody holds: they could never be sold
        drift(-3, "p2")  # units held twice: they could be oversold
        version = stored("p1")["version"]

        report = products.reconcile_inventory()

        assert report.products_checked == 3
        assert report.products_fixed == 2
        assert set(report.fixes) == {
            products.ReservedFix(product_id="p1", reserved_before=5, reserved_after=3, stock=10),
            products.ReservedFix(product_id="p2", reserved_before=1, reserved_after=4, stock=10),
        }
        assert [products.get_product(product_id=p).reserved for p in ("p1", "p2", "p3")] == [3, 4, 1]
        assert [stored(p)["available"] for p in ("p1", "p2", "p3")] == [7, 6, 9]
        assert stored("p1")["version"] == version + 1  # a fix is a write like any other (ETag)
        assert products.reconcile_inventory().fixes == ()

    def test_a_fix_is_logged_for_the_operator_and_a_dry_run_logs_nothing(self, caplog):
        make_product("p1", stock=10)
        reserve(3, "a")
        drift(+2)

        products.reconcile_inventory(dry_run=True)
        assert [record for record in caplog.records if record.name == reconcile.__name__] == []
        products.reconcile_inventory()
        warnings = [record.getMessage() for record in caplog.records if record.name == reconcile.__name__]
        assert warnings == ["reconcile: product p1 reserved 5 -> 3"]

    def test_a_fix_and_an_adjustment_record_how_they_move_the_counters(self):
        make_product("p1", stock=10)
        reserve(3, "a")
        drift(+2)  # reserved 5, available 5: two units nobody holds
        products.adjust_stock(product_id="p1", delta=4, reason="delivery")  # stock 14, available 9
        drift(-1)  # reserved 4, available 10: one unit held twice

        products.reconcile_inventory()

        changes = [(product_id, reason, change) for product_id, reason, change, _ in stock_changes()]
        assert changes == [
            ("p1", "hold", {"stock": 0, "reserved": 3, "available": -3}),
            ("p1", "adjustment", {"stock": 4, "reserved": 0, "available": 4}),
            ("p1", "reconcile", {"stock": 0, "reserved": -1, "available": 1}),
        ]
        assert (stored()["reserved"], stored()["available"]) == (3, 11)

    def test_reservations_see_the_fixed_availability(self):
        make_product(stock=5)
        reserve(2, "a")
        drift(+3)
        with pytest.raises(products.InsufficientStock):
            reserve(3, "b")
        products.reconcile_inventory()
        assert reserve(3, "b").quantity == 3
        assert (stored()["reserved"], stored()["available"]) == (5, 0)

    def test_a_drifted_low_available_refuses_holds_until_fixed(self):
        """Holds trust the stored `available`: one drifted below stock - reserved refuses them
        (not a retry loop ending busy) until reconcile puts it right."""
        make_product(stock=5)
        collection().update_one({"product_id": "p1"}, {"$set": {"available": 1}})  # a hand edit

        with pytest.raises(products.InsufficientStock):
            reserve(3, "b")
        products.reconcile_inventory()
        assert reserve(3, "b").quantity == 3

    def test_a_drifted_available_alone_is_fixed(self):
        make_product(stock=5)
        reserve(2, "a")
        collection().update_one({"product_id": "p1"}, {"$set": {"available": 5}})  # a hand edit

        assert products.reconcile_inventory().fixes == (products.ReservedFix("p1", 2, 2, 5),)
        assert stored()["available"] == 3
        assert stock_changes()[-1] == (
            "p1",
            "reconcile",
            {"stock": 0, "reserved": 0, "available": -2},  # from the stored 5, not from stock - reserved
            {"stock": 5, "reserved": 2, "available": 3},
        )
        with pytest.raises(products.InsufficientStock):
            reserve(4, "b")

    def test_a_missing_available_is_filled_in(self):
        make_product(stock=5)
        reserve(2, "a")
        collection().update_one({"product_id": "p1"}, {"$unset": {"available": ""}})  # stored by older code

        assert products.reconcile_inventory().fixes == (products.ReservedFix("p1", 2, 2, 5),)
        assert stored()["available"] == 3
        # A missing `available` counted as stock - reserved (as the events' figures do): no change.
        assert stock_changes()[-1] == (
            "p1",
            "reconcile",
            {"stock": 0, "reserved": 0, "available": 0},
            {"stock": 5, "reserved": 2, "available": 3},
        )

    def test_a_product_without_holds_drops_to_zero(self):
        make_product("p1", stock=5)
        make_product("p2", stock=5)
        drift(+4)
        collection().update_one({"product_id": "p2"}, {"$unset": {"holds": ""}, "$inc": {"reserved": 1}})

        assert products.reconcile_inventory().fixes == (
            products.ReservedFix("p1", 4, 0, 5),
            products.ReservedFix("p2", 1, 0, 5),
        )
        assert [(stored(p)["reserved"], stored(p)["available"]) for p in ("p1", "p2")] == [(0, 5), (0, 5)]

    def test_dry_run_reports_and_changes_nothing(self):
        make_product(stock=10)
        reserve(3, "a")
        drift(+2)
        before = stored()

        report = products.reconcile_inventory(dry_run=True)

        assert report.dry_run
        assert report.fixes == (products.ReservedFix("p1", 5, 3, 10),)
        assert stored() == before
        assert products.reconcile_inventory().fixes == report.fixes  # the real run does what was reported
        assert stored()["reserved"] == 3

    def test_lapsed_holds_still_count_and_are_not_released(self, monkeypatch):
        make_product(stock=10)
        reserve(4, "old", expires_at=clock.now() + timedelta(minutes=1))
        drift(-4)
        later = clock.now() + timedelta(hours=1)
        monkeypatch.setattr(clock, "now", lambda: later)  # the hold has lapsed: reads leave it out

        report = products.reconcile_inventory()

        assert report.fixes == (products.ReservedFix("p1", 0, 4, 10),)
        assert stored()["holds"]["old"]["qty"] == 4
        assert (stored()["reserved"], stored()["available"]) == (4, 6)
        assert products.get_product(product_id="p1").reserved == 0

    def test_more_held_than_in_stock_is_set_anyway_and_reported_as_oversold(self):
        make_product(stock=5)
        reserve(5, "a")
        collection().update_one({"product_id": "p1"}, {"$set": {"stock": 3, "reserved": 1}})

        report = products.reconcile_inventory()

        assert report.fixes == (products.ReservedFix("p1", 1, 5, 3),)
        assert report.fixes[0].oversold
        assert report.oversold == ("p1",)
        assert products.get_product(product_id="p1").available == -2
        assert stored()["available"] == -2
        with pytest.raises(products.InsufficientStock):
            reserve(1, "b")  # no new holds until stock is added or holds are released
        second = products.reconcile_inventory()
        assert (second.fixes, second.oversold) == ((), ("p1",))  # still reported once the counter is right


class TestWhileServingTraffic:
    def test_a_hold_change_between_reading_and_writing_is_not_lost(self, app, monkeypatch):
        """Reconcile has summed the holds; one more lands before it writes its figure."""
        set_counters = reconcile._set_counters
        landed: list[int] = []

        def a_hold_lands_before_the_write(snapshot, reserved):
            if not landed:
                landed.append(reserve(4, "late").quantity)
            return set_counters(snapshot, reserved)

        with app.app_context():
            make_product(stock=20)
            reserve(3, "early")
            drift(+5)
            monkeypatch.setattr(reconcile, "_set_counters", a_hold_lands_before_the_write)

            report = products.reconcile_inventory()

            assert landed == [4]
            assert report.fixes == (products.ReservedFix("p1", 12, 7, 20),)  # read again after the CAS failed
            assert stored()["reserved"] == held_by_holds() == 7
            assert stored()["available"] == 13

    def test_a_product_that_keeps_changing_is_reported_busy(self, app, monkeypatch):
        set_counters = reconcile._set_counters
        attempts: list[int] = []

        def p1_always_changed_first(snapshot, reserved):
            if snapshot["product_id"] == "p1":
                attempts.append(reserved)
                collection().update_one({"product_id": "p1"}, {"$inc": {"version": 1}})
            return set_counters(snapshot, reserved)

        with app.app_context():
            make_product("p1", stock=10)
            make_product("p2", stock=10)
            drift(+2, "p1")
            drift(+1, "p2")
            monkeypatch.setattr(reconcile, "_set_counters", p1_always_changed_first)

            report = products.reconcile_inventory()

            assert len(attempts) == reconcile.ATTEMPTS
            assert (report.busy, report.products_checked) == (("p1",), 1)
            assert report.fixes == (products.ReservedFix("p2", 1, 0, 10),)
            assert stored("p1")["reserved"] == 2  # left for the next run

    def test_concurrent_reservations_and_reconcile_runs_agree(self, app):
        """Shoppers reserve, change, release and sell while reconcile runs in a loop: the store
        never drifts, so every fix reconcile reports would be a mistake, and no hold may be lost."""
        stop = threading.Event()

        def shopper(thread: int) -> None:
            with app.app_context():
                for attempt in range(15):
                    reservation_id = f"t{thread}-{attempt}"
                    product_id = f"p{attempt % 2}"
                    reserve(1 + attempt % 3, reservation_id, product_id)
                    if attempt % 3 == 0:
                        reserve(2, reservation_id, product_id)
                    if attempt % 4 == 0:
                        release(reservation_id, product_id)
                    elif attempt % 4 == 1:
                        commit(reservation_id, product_id)

        def reconciler() -> list[products.ReconcileReport]:
            reports = []
            with app.app_context():
                while not stop.is_set():
                    reports.append(products.reconcile_inventory())
            return reports

        with app.app_context():
            make_product("p0", stock=1000)
            make_product("p1", stock=1000)
        with ThreadPoolExecutor(max_workers=10) as pool:
            runs = [pool.submit(reconciler) for _ in range(2)]
            try:
                for outcome in [pool.submit(shopper, thread) for thread in range(8)]:
                    outcome.result()
            finally:
                stop.set()
            reports = [report for run in runs for report in run.result()]

        with app.app_context():
            assert len(reports) >= 2
            assert [fix for report in reports for fix in report.fixes] == []
            for product_id in ("p0", "p1"):
                product = stored(product_id)
                assert product["reserved"] == held_by_holds(product_id) > 0
                assert product["available"] == product["stock"] - product["reserved"]


class TestCommand:
    def test_prints_each_fix_and_a_summary(self, app, runner):
        with app.app_context():
            make_product("42", stock=10)
            make_product("43", stock=10)
            reserve(5, "a", "42")
            drift(+2, "42")

        result = runner.invoke(args=["inventory", "reconcile"])

        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            "released 0 holds without a cart line",  # hold "a" is younger than the grace period
            "product 42: reserved 7 -> 5",
            "checked 2 products, fixed 1",
        ]
        with app.app_context():
            assert (stored("42")["reserved"], stored("42")["available"]) == (5, 5)

    def test_dry_run_says_so_and_changes_nothing(self, app, runner):
        with app.app_context():
            make_product("42", stock=10)
            drift(+2, "42")

        result = runner.invoke(args=["inventory", "reconcile", "--dry-run"])

        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            "would release 0 holds without a cart line",
            "product 42: reserved 2 -> 0",
            "checked 1 products, would fix 1 (dry run: nothing changed)",
        ]
        with app.app_context():
            assert stored("42")["reserved"] == 2

    def test_warns_about_oversold_products(self, app, runner):
        with app.app_context():
            make_product("42", stock=5)
            reserve(5, "a", "42")
            collection().update_one({"product_id": "42"}, {"$set": {"stock": 3, "available": -2}})

        result = runner.invoke(args=["inventory", "reconcile"])

        assert result.exit_code == 0, result.output
        assert "product 42: oversold, its holds hold more than its stock" in result.stderr
        assert result.stdout.splitlines() == [
            "released 0 holds without a cart line",
            "checked 1 products, fixed 0",
        ]

    def test_warns_about_busy_products(self, app, runner, monkeypatch):
        monkeypatch.setattr(reconcile, "_set_counters", lambda snapshot, reserved: False)
        with app.app_context():
            make_product("42", stock=5)
            drift(+1, "42")

        result = runner.invoke(args=["inventory", "reconcile"])

        assert result.exit_code == 0, result.output
        assert "product 42: busy, not checked; run again" in result.stderr
        assert result.stdout.splitlines()[-1] == "checked 0 products, fixed 0"
