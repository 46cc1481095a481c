"""`flask inventory reconcile`: counters made to match reservation records, against the real
Mongo wire-protocol server, including while reservations happen concurrently."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.products import interface as products
from app.products import reconcile, reservations
from app.products.catalog import collection
from app.products.models import to_epoch_ms
from app.products.reservations import STALE_AFTER


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
        expires_at=expires_at or datetime.now(UTC) + timedelta(minutes=15),
    )


def stored(product_id: str = "p1") -> dict:
    return collection().find_one({"product_id": product_id})


def drift(by: int, product_id: str = "p1") -> None:
    """Corrupt the counters behind the module's back, as a bug in a writer would (every writer
    moves `reserved` and `available` in one update)."""
    collection().update_one({"product_id": product_id}, {"$inc": {"reserved": by, "available": -by}})


def held_by_active_reservations(product_id: str = "p1") -> int:
    active = reservations.reservations().find({"product_id": product_id, "status": "active"})
    return sum(reservation["quantity"] for reservation in active)


def leave_pending_step(reservation_id: str, step: str, delta: int, *, stale: bool = True) -> None:
    """What a process that died between claiming and finalising a step leaves behind."""
    since = datetime.now(UTC) - (STALE_AFTER + timedelta(seconds=1) if stale else timedelta(0))
    held = reservations.reservations().find_one({"reservation_id": reservation_id})["quantity"]
    pending = {"pending_step": step, "pending_quantity": held + delta, "pending_since_ms": to_epoch_ms(since)}
    reservations.reservations().update_one({"reservation_id": reservation_id}, {"$set": pending})


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
        products.release_reservation(reservation_id="c")
        reserve(2, "d", "p3")
        products.commit_reservation(reservation_id="d")
        reserve(1, "e", "p3")
        products.archive_product(product_id="p3")  # archived products still hold reservations
        versions = {product_id: stored(product_id)["version"] for product_id in ("p1", "p2", "p3")}

        report = products.reconcile_inventory()

        assert report == products.ReconcileReport(products_checked=3, fixes=(), stale_steps_recovered=0)
        assert {product_id: stored(product_id)["version"] for product_id in versions} == versions
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
        assert stored("p1")["version"] == version + 1  # a fix is a write like any other (ETag)
        assert products.reconcile_inventory().fixes == ()

    def test_reservations_see_the_fixed_availability(self):
        make_product(stock=5)
        reserve(2, "a")
        drift(+3)
        with pytest.raises(products.InsufficientStock):
            reserve(3, "b")
        products.reconcile_inventory()
        assert reserve(3, "b").quantity == 3
        assert stored()["reserved"] == 5

    def test_a_drifted_available_alone_is_fixed(self):
        make_product(stock=5)
        reserve(2, "a")
        collection().update_one({"product_id": "p1"}, {"$set": {"available": 5}})  # a hand edit

        assert products.reconcile_inventory().fixes == (products.ReservedFix("p1", 2, 2, 5),)
        assert stored()["available"] == 3
        with pytest.raises(products.InsufficientStock):
            reserve(4, "b")

    def test_a_product_without_reservations_drops_to_zero(self):
        make_product(stock=5)
        drift(+4)
        assert products.reconcile_inventory().fixes == (products.ReservedFix("p1", 4, 0, 5),)
        assert stored()["reserved"] == 0

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

    def test_expired_reservations_still_count_and_are_not_released(self):
        make_product(stock=10)
        reserve(4, "old", expires_at=datetime.now(UTC) - timedelta(hours=1))
        drift(-4)

        report = products.reconcile_inventory()

        assert report.fixes == (products.ReservedFix("p1", 0, 4, 10),)
        assert reservations.reservations().find_one({"reservation_id": "old"})["status"] == "active"
        assert stored()["reserved"] == 4

    def test_more_held_than_in_stock_is_set_anyway_and_reported_as_oversold(self):
        make_product(stock=5)
        reserve(5, "a")
        collection().update_one({"product_id": "p1"}, {"$set": {"stock": 3, "reserved": 1}})

        report = products.reconcile_inventory()

        assert report.fixes == (products.ReservedFix("p1", 1, 5, 3),)
        assert report.fixes[0].oversold
        assert report.oversold == ("p1",)
        assert products.get_product(product_id="p1").available == -2
        with pytest.raises(products.InsufficientStock):
            reserve(1, "b")  # no new holds until stock is added or holds are released
        assert products.reconcile_inventory().oversold == ("p1",)  # still reported once the counter is right


@pytest.mark.usefixtures("ctx")
class TestPendingSteps:
    def test_a_stale_step_applied_before_the_crash_is_kept(self):
        make_product(stock=10)
        reserve(2, "r1")
        leave_pending_step("r1", "reserve:99:r1", 3)
        collection().update_one(
            {"product_id": "p1"},
            {"$inc": {"reserved": 3, "available": -3, "version": 1}, "$push": {"pending_steps": "reserve:99:r1"}},
        )

        report = products.reconcile_inventory()

        assert report.stale_steps_recovered == 1
        assert report.fixes == ()
        recovered = reservations.reservations().find_one({"reservation_id": "r1"})
        assert (recovered["quantity"], recovered["pending_step"]) == (5, None)
        assert (stored()["reserved"], stored()["pending_steps"]) == (5, [])

    def test_a_stale_step_never_applied_is_dropped(self):
        make_product(stock=10)
        reserve(2, "r1")
        leave_pending_step("r1", "release:99:r1", -2)

        report = products.reconcile_inventory()

        assert report.stale_steps_recovered == 1
        recovered = reservations.reservations().find_one({"reservation_id": "r1"})
        assert (recovered["quantity"], recovered["status"], recovered["pending_step"]) == (2, "active", None)
        assert (stored()["reserved"], stored()["pending_steps"]) == (2, [])
        assert products.release_reservation(reservation_id="r1").status == "released"  # no longer stuck

    def test_a_fresh_step_is_left_to_its_process(self):
        make_product(stock=10)
        reserve(2, "r1")
        leave_pending_step("r1", "reserve:99:r1", 3, stale=False)

        report = products.reconcile_inventory()

        assert (report.stale_steps_recovered, report.fixes, report.busy) == (0, (), ())
        assert reservations.reservations().find_one({"reservation_id": "r1"})["pending_step"] == "reserve:99:r1"
        assert stored()["reserved"] == 2  # not applied yet: its delta must not be counted

    def test_an_applied_step_not_yet_finalised_makes_the_product_busy_not_fixed(self):
        """Applied or only fenced? Both record the step id, so the job waits rather than guess."""
        make_product(stock=10)
        reserve(2, "r1")
        leave_pending_step("r1", "reserve:99:r1", 3, stale=False)
        collection().update_one({"product_id": "p1"}, {"$push": {"pending_steps": "reserve:99:r1"}})
        drift(+1)

        report = products.reconcile_inventory()

        assert (report.busy, report.fixes, report.products_checked) == (("p1",), (), 0)
        assert stored()["reserved"] == 3

    def test_dry_run_counts_stale_steps_without_recovering_them(self):
        make_product(stock=10)
        reserve(2, "r1")
        leave_pending_step("r1", "release:99:r1", -2)

        assert products.reconcile_inventory(dry_run=True).stale_steps_recovered == 1
        assert reservations.reservations().find_one({"reservation_id": "r1"})["pending_step"] == "release:99:r1"
        assert products.reconcile_inventory().stale_steps_recovered == 1

    def test_a_recovery_already_under_way_is_not_repeated(self, monkeypatch):
        """A request that read the stale step before reconcile took it over must not recover it too:
        it would take reconcile's fence for an applied step and count 3 units never reserved."""
        make_product(stock=10)
        reserve(2, "r1")
        leave_pending_step("r1", "reserve:99:r1", 3)
        read_by_a_request = reservations.reservations().find_one({"reservation_id": "r1"})
        finalise = reservations._finalise
        second_recovery: list[bool] = []

        def request_recovers_meanwhile(claimed, *, applied):
            if not second_recovery:
                second_recovery.append(True)  # before recursing: the second recovery finalises too
                second_recovery[0] = reservations.recover_stale_step(read_by_a_request)
            return finalise(claimed, applied=applied)

        monkeypatch.setattr(reservations, "_finalise", request_recovers_meanwhile)
        assert products.reconcile_inventory().stale_steps_recovered == 1

        assert second_recovery == [False]
        assert reservations.reservations().find_one({"reservation_id": "r1"})["quantity"] == 2
        assert stored()["reserved"] == 2


class TestWhileServingTraffic:
    def test_a_reservation_between_reading_and_writing_is_not_lost(self, app, monkeypatch):
        """Reconcile has summed the reservations; one more lands before it writes its figure."""
        holdings = reconcile._holdings
        landed: list[int] = []

        def a_reservation_lands_after_the_sum(active):
            summed = holdings(active)
            if not landed:
                landed.append(reserve(4, "late").quantity)
            return summed

        with app.app_context():
            make_product(stock=20)
            reserve(3, "early")
            drift(+5)
            monkeypatch.setattr(reconcile, "_holdings", a_reservation_lands_after_the_sum)

            report = products.reconcile_inventory()

            assert landed == [4]
            assert report.fixes == (products.ReservedFix("p1", 12, 7, 20),)  # read again after the CAS failed
            assert stored()["reserved"] == held_by_active_reservations() == 7

    def test_concurrent_reservations_and_reconcile_runs_agree(self, app):
        """Shoppers reserve, change and release while reconcile runs in a loop: the store never
        drifts, so every fix reconcile reports would be a mistake, and no hold may be lost."""
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
                        products.release_reservation(reservation_id=reservation_id)
                    elif attempt % 4 == 1:
                        products.commit_reservation(reservation_id=reservation_id)

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
                assert stored(product_id)["reserved"] == held_by_active_reservations(product_id) > 0
                assert stored(product_id)["pending_steps"] == []


class TestCommand:
    def test_prints_each_fix_and_a_summary(self, app, runner):
        with app.app_context():
            make_product("42", stock=10)
            make_product("43", stock=10)
            reserve(5, "a", "42")
            drift(+2, "42")
            leave_pending_step("a", "release:99:a", -5)

        result = runner.invoke(args=["inventory", "reconcile"])

        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            "released 0 holds without a cart line",  # hold "a" is younger than the grace period
            "product 42: reserved 7 -> 5",
            "checked 2 products, fixed 1, recovered 1 stale steps",
        ]
        with app.app_context():
            assert stored("42")["reserved"] == 5

    def test_dry_run_says_so_and_changes_nothing(self, app, runner):
        with app.app_context():
            make_product("42", stock=10)
            drift(+2, "42")

        result = runner.invoke(args=["inventory", "reconcile", "--dry-run"])

        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            "would release 0 holds without a cart line",
            "product 42: reserved 2 -> 0",
            "checked 1 products, would fix 1, would recover 0 stale steps (dry run: nothing changed)",
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
        assert "product 42: oversold" in result.stderr
        assert result.stdout.splitlines() == [
            "released 0 holds without a cart line",
            "checked 1 products, fixed 0, recovered 0 stale steps",
        ]
