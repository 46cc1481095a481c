"""The cart API as a state machine (hypothesis) against a small Python model of carts and stock.

Two shoppers (a customer and a guest) add, set, remove, empty, merge, check out, see prices
change and time pass, through the in-process app. After every step the carts, the products'
`reserved`/`available` and the reservations behind the lines must equal the model's.

The model's one stock rule: a write that holds stock (a new or growing line, or any change
to a line whose hold expired) succeeds iff the line's new quantity fits in `stock - units
held by the OTHER live lines of that product`; expired holds count for nobody. A line that
shrinks while its hold is live, or goes to zero, never needs stock.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal

import hypothesis.strategies as st
import mongoengine
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from app import clock
from app.cart.models import Cart, CartLine
from app.extensions import db
from app.products.models import LAPSE_GRACE, to_epoch_ms
from tests.conftest import empty_stores

STOCK = {"p1": 3, "p2": 5, "p3": 8, "big": 150}  # "big" reaches the 100-unit line maximum
PRICES = ("10.00", "12.50", "7.25")
SHOPPERS = ("customer", "guest")
MAX_LINE = 100
QUANTITIES = st.one_of(st.integers(1, 4), st.sampled_from([40, 60]))
TARGETS = st.one_of(st.integers(0, 14), st.sampled_from([60, 100]))


@dataclass(frozen=True)
class Line:
    quantity: int
    epoch: int  # the model's time slot its hold was last (re)made in; live while it is the current one
    price: Decimal


def reset_stores(app) -> None:
    """What the autouse clean_stores does, for each hypothesis example (no REDIS_URL in the
    test settings, so there is no cart cache to flush)."""
    empty_stores(app)


def create_product(client, admin: dict[str, str], product_id: str, stock: int, price: str = "10.00") -> None:
    body = {"productId": product_id, "sku": f"SKU-{product_id}", "name": product_id, "price": price, "stock": stock}
    response = client.post("/v1/products", json=body, headers=admin)
    assert response.status_code == 201, response.get_data(as_text=True)


def problem_code(response) -> str | None:
    return (response.get_json(silent=True) or {}).get("code")


def expect(response, status: int, code: str | None = None) -> dict:
    body = response.get_data(as_text=True)
    assert response.status_code == status, f"expected {status} {code or ''}, got {response.status_code}: {body}"
    if code is not None:
        assert problem_code(response) == code, body
    return response.get_json()


class CartMachine(RuleBasedStateMachine):
    # Given by the test function (pytest fixtures cannot reach a hypothesis state machine).
    app = None
    token = None
    ttl = 0
    offset: list[float] = [0.0]  # seconds the patched clock runs ahead
    examples = Counter()

    def __init__(self):
        super().__init__()
        reset_stores(self.app)
        self.offset[0] = 0.0
        self.examples["n"] += 1
        number = self.examples["n"]
        self.client = self.app.test_client()
        self.admin = {"Authorization": f"Bearer {self.token('admin', subject=f'admin-{number}')}"}
        guest = self.client.post("/v1/auth/guest")
        assert guest.status_code in (200, 201), guest.get_data(as_text=True)
        self.guest_token = guest.get_json()["accessToken"]
        self.headers = {
            "customer": {"Authorization": f"Bearer {self.token('customer', subject=f'u-{number}')}"},
            "guest": {"Authorization": f"Bearer {self.guest_token}"},
        }
        for product_id, stock in STOCK.items():
            create_product(self.client, self.admin, product_id, stock)
        self.stock = dict(STOCK)
        self.price = {product_id: Decimal("10.00") for product_id in STOCK}
        self.carts: dict[str, dict[str, Line]] = {shopper: {} for shopper in SHOPPERS}
        self.epoch = 0

    # --- the model -------------------------------------------------------------------------

    def live(self, line: Line) -> bool:
        return line.epoch == self.epoch

    def held_by_others(self, shopper: str, product_id: str) -> int:
        return sum(
            line.quantity
            for other, cart in self.carts.items()
            if other != shopper
            for pid, line in cart.items()
            if pid == product_id and self.live(line)
        )

    def fits(self, shopper: str, product_id: str, quantity: int) -> bool:
        return quantity <= self.stock[product_id] - self.held_by_others(shopper, product_id)

    def write_line(self, shopper: str, product_id: str, target: int, response, status: int) -> None:
        """Expect the answer of a write giving the line `target` units, and apply it."""
        cart = self.carts[shopper]
        line = cart.get(product_id)
        if target > MAX_LINE:
            expect(response, 409, "quantity_limit_exceeded")
        elif target == 0:
            expect(response, 200)
            del cart[product_id]
        elif line is not None and self.live(line) and target <= line.quantity:
            expect(response, 200)  # shrinking a live line: no stock needed, the hold keeps its expiry
            cart[product_id] = replace(line, quantity=target)
        elif self.fits(shopper, product_id, target):
            expect(response, status)
            price = line.price if line else self.price[product_id]
            cart[product_id] = Line(target, self.epoch, price)
        else:
            body = expect(response, 409, "insufficient_stock")
            assert body["available"] >= 0, body

    # --- rules -----------------------------------------------------------------------------

    def pick(self, data) -> str:
        """Mostly a product some cart holds already (where the interesting conflicts are)."""
        held = sorted({pid for cart in self.carts.values() for pid in cart})
        if held and data.draw(st.integers(0, 3), label="held") > 0:
            return data.draw(st.sampled_from(held), label="product_id")
        return data.draw(st.sampled_from(list(STOCK)), label="product_id")

    @rule(shopper=st.sampled_from(SHOPPERS), data=st.data(), quantity=QUANTITIES)
    def add(self, shopper, data, quantity):
        product_id = self.pick(data)
        body = {"productId": product_id, "quantity": quantity}
        response = self.client.post("/v1/cart/products", json=body, headers=self.headers[shopper])
        line = self.carts[shopper].get(product_id)
        self.write_line(shopper, product_id, (line.quantity if line else 0) + quantity, response, 201)

    @rule(shopper=st.sampled_from(SHOPPERS), data=st.data(), quantity=TARGETS)
    def set_quantity(self, shopper, data, quantity):
        product_id = self.pick(data)
        response = self.client.put(
            f"/v1/cart/products/{product_id}", json={"quantity": quantity}, headers=self.headers[shopper]
        )
        if quantity == 0 and product_id not in self.carts[shopper]:
            expect(response, 404, "line_not_found")
            return
        self.write_line(shopper, product_id, quantity, response, 200)

    @rule(shopper=st.sampled_from(SHOPPERS), data=st.data())
    def remove_one(self, shopper, data):
        product_id = self.pick(data)
        response = self.client.delete(f"/v1/cart/products/{product_id}", headers=self.headers[shopper])
        line = self.carts[shopper].get(product_id)
        if line is None:
            expect(response, 404, "line_not_found")
            return
        self.write_line(shopper, product_id, line.quantity - 1, response, 200)

    @rule(shopper=st.sampled_from(SHOPPERS), data=st.data())
    def remove_line(self, shopper, data):
        product_id = self.pick(data)
        response = self.client.delete(f"/v1/cart/products/{product_id}?all=true", headers=self.headers[shopper])
        if product_id not in self.carts[shopper]:
            expect(response, 404, "line_not_found")
            return
        self.write_line(shopper, product_id, 0, response, 200)

    @rule(shopper=st.sampled_from(SHOPPERS))
    def empty(self, shopper):
        cart = expect(self.client.delete("/v1/cart", headers=self.headers[shopper]), 200)
        assert cart["items"] == []
        self.carts[shopper] = {}

    @rule()
    def merge(self):
        """README: quantities add up, capped at 100 per line and by what can be reserved. A
        line the customer lacks moves over with its hold as it is (expired or not); a line
        both have is held again, up to stock minus what other live lines hold (with only
        two shoppers, nobody's)."""
        response = self.client.post(
            "/v1/cart/merge", json={"guestToken": self.guest_token}, headers=self.headers["customer"]
        )
        customer, guest = self.carts["customer"], self.carts["guest"]
        adjustments = {}
        for product_id, guest_line in guest.items():
            line = customer.get(product_id)
            if line is None:
                customer[product_id] = guest_line
                continue
            requested = line.quantity + guest_line.quantity
            merged = min(requested, MAX_LINE, self.stock[product_id])  # no third shopper holds any
            customer[product_id] = Line(merged, self.epoch, line.price)
            if merged < requested:
                reason = "quantity_limit" if merged == MAX_LINE else "insufficient_stock"
                adjustments[product_id] = {
                    "productId": product_id,
                    "requested": requested,
                    "merged": merged,
                    "reason": reason,
                }
        had_lines = bool(guest)
        self.carts["guest"] = {}
        result = expect(response, 200)
        assert result["mergedLines"] == (len(guest) if had_lines else 0), result
        assert {item["productId"]: item for item in result["adjustments"]} == adjustments, result
        assert self.lines_of(result["cart"]) == self.model_lines("customer"), result

    @rule()
    def checkout(self):
        response = self.client.post(
            "/v1/cart/checkout", headers={**self.headers["customer"], "Idempotency-Key": str(uuid.uuid4())}
        )
        cart = self.carts["customer"]
        if not cart:
            expect(response, 409, "cart_empty")
            return
        changed = {pid: line for pid, line in cart.items() if line.price != self.price[pid]}
        if changed:
            body = expect(response, 409, "price_changed")
            assert {change["productId"]: change["newPrice"] for change in body["priceChanges"]} == {
                pid: str(self.price[pid]) for pid in changed
            }, body
            for pid, line in changed.items():
                cart[pid] = replace(line, price=self.price[pid])
            return
        lost = [
            pid for pid, line in cart.items() if not self.live(line) and not self.fits("customer", pid, line.quantity)
        ]
        if lost:
            body = expect(response, 409, "reservation_expired")
            assert body["productId"] in lost, body
            return
        order = expect(response, 201)
        assert order["totalPrice"] == str(sum(line.price * line.quantity for line in cart.values())), order
        assert {item["productId"]: item["quantity"] for item in order["items"]} == {
            pid: line.quantity for pid, line in cart.items()
        }, order
        for pid, line in cart.items():
            self.stock[pid] -= line.quantity
        self.carts["customer"] = {}

    @rule()
    def time_passes(self):
        """Past CART_RESERVATION_TTL (and the products store's LAPSE_GRACE): every hold made so far lapses."""
        self.offset[0] += self.ttl + LAPSE_GRACE.total_seconds() + 1
        self.epoch += 1

    @rule(product_id=st.sampled_from(list(STOCK)), price=st.sampled_from(PRICES))
    def change_price(self, product_id, price):
        if Decimal(price) == self.price[product_id]:
            return
        etag = self.client.get(f"/v1/products/{product_id}").headers["ETag"]
        response = self.client.patch(
            f"/v1/products/{product_id}", json={"price": price}, headers={**self.admin, "If-Match": etag}
        )
        expect(response, 200)
        self.price[product_id] = Decimal(price)

    # --- invariants ------------------------------------------------------------------------

    def model_lines(self, shopper: str) -> dict[str, tuple[int, str, bool]]:
        return {pid: (line.quantity, str(line.price), not self.live(line)) for pid, line in self.carts[shopper].items()}

    @staticmethod
    def lines_of(cart: dict) -> dict[str, tuple[int, str, bool]]:
        lines = {
            item["productId"]: (item["quantity"], item["price"], item["reservationExpired"]) for item in cart["items"]
        }
        assert len(lines) == len(cart["items"]), f"two lines of one product: {cart['items']}"
        return lines

    @invariant()
    def carts_equal_the_model(self):
        for shopper in SHOPPERS:
            cart = expect(self.client.get("/v1/cart", headers=self.headers[shopper]), 200)
            assert self.lines_of(cart) == self.model_lines(shopper), shopper
            assert cart["totalQuantity"] == sum(line.quantity for line in self.carts[shopper].values())

    @invariant()
    def products_count_exactly_the_live_lines(self):
        for product_id in STOCK:
            product = expect(self.client.get(f"/v1/products/{product_id}"), 200)
            held = sum(
                line.quantity
                for cart in self.carts.values()
                for pid, line in cart.items()
                if pid == product_id and self.live(line)
            )
            assert (product["stock"], product["reserved"], product["available"]) == (
                self.stock[product_id],
                held,
                self.stock[product_id] - held,
            ), product_id

    @invariant()
    def every_live_line_has_its_hold_and_no_hold_counts_twice(self):
        now = clock.now()
        with self.app.app_context():
            rows = db.session.execute(
                select(CartLine.product_id, CartLine.quantity, CartLine.reservation_id, CartLine.reserved_until)
                .join(Cart)
                .where(Cart.status == "active")
            ).all()
        documents = list(mongoengine.get_db()["products"].find({}))
        holds = {
            reservation_id: {**hold, "product_id": product["product_id"]}
            for product in documents
            for reservation_id, hold in (product.get("holds") or {}).items()
        }
        for product_id, quantity, reservation_id, until in rows:
            live = (until if until.tzinfo else until.replace(tzinfo=now.tzinfo)) > now
            if live:
                hold = holds.get(reservation_id)
                assert hold is not None, f"live line {product_id} x{quantity} without a reservation"
                assert (hold["qty"], hold["product_id"]) == (quantity, product_id)
                assert hold["until"] >= to_epoch_ms(now.replace(tzinfo=None))
        for product in documents:
            active = sum(hold["qty"] for hold in (product.get("holds") or {}).values())
            assert product["reserved"] == active, f"{product['product_id']}: reserved {product['reserved']} != {active}"
            assert product["available"] == product["stock"] - product["reserved"], product["product_id"]


@pytest.fixture
def moving_clock(monkeypatch) -> list[float]:
    """app.clock.now runs `offset[0]` seconds ahead (every expiry decision reads it); restored after."""
    offset = [0.0]
    real_now = clock.now
    monkeypatch.setattr(clock, "now", lambda: real_now() + timedelta(seconds=offset[0]))
    return offset


def test_the_cart_api_follows_the_model(app, token, settings, moving_clock):
    attributes = {
        "app": app,
        "token": staticmethod(token),
        "ttl": settings.cart_reservation_ttl,
        "offset": moving_clock,
        "examples": Counter(),
    }
    run_state_machine_as_test(
        type("Machine", (CartMachine,), attributes),
        settings=hypothesis_settings(  # max_examples: the profile's (tests/conftest.py)
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


def test_parallel_adds_from_two_shoppers_take_exactly_the_free_units(app, client, token, admin_headers):
    """From a model state (customer holds 2, guest 3, of 10), 6 threads send 12 adds of one unit,
    half as each shopper: exactly the 5 free units are taken, none twice, none lost."""
    create_product(client, admin_headers, "race", 10)
    customer = {"Authorization": f"Bearer {token('customer', subject='racer')}"}
    guest = {"Authorization": f"Bearer {client.post('/v1/auth/guest').get_json()['accessToken']}"}
    expect(client.post("/v1/cart/products", json={"productId": "race", "quantity": 2}, headers=customer), 201)
    expect(client.post("/v1/cart/products", json={"productId": "race", "quantity": 3}, headers=guest), 201)
    start = threading.Barrier(6)

    def two_adds(number: int) -> list[tuple[str, int, str | None]]:
        shopper, headers = ("customer", customer) if number % 2 == 0 else ("guest", guest)
        thread_client = app.test_client()
        start.wait()
        answers = []
        for _ in range(2):
            response = thread_client.post(
                "/v1/cart/products", json={"productId": "race", "quantity": 1}, headers=headers
            )
            answers.append((shopper, response.status_code, problem_code(response)))
        return answers

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = [answer for answers in pool.map(two_adds, range(6)) for answer in answers]
    outcomes = Counter((status, code) for _, status, code in answers)
    assert outcomes == {(201, None): 5, (409, "insufficient_stock"): 7}, outcomes
    won = Counter(shopper for shopper, status, _ in answers if status == 201)
    for shopper, headers, start_quantity in (("customer", customer, 2), ("guest", guest, 3)):
        cart = expect(client.get("/v1/cart", headers=headers), 200)
        assert [(item["productId"], item["quantity"]) for item in cart["items"]] == [
            ("race", start_quantity + won[shopper])
        ], shopper
    product = expect(client.get("/v1/products/race"), 200)
    assert (product["stock"], product["reserved"], product["available"]) == (10, 10, 0)


# --- cases the machine found: each a minimal sequence of its steps, a regression test of the fix ---------------


@pytest.fixture
def machine(app, token, settings, moving_clock) -> CartMachine:
    attributes = {
        "app": app,
        "token": staticmethod(token),
        "ttl": settings.cart_reservation_ttl,
        "offset": moving_clock,
        "examples": Counter(),
    }
    return type("Machine", (CartMachine,), attributes)()


class Chosen:
    """Stands in for hypothesis' `data` in a step run by hand: every product drawn is `product_id`."""

    def __init__(self, product_id: str):
        self.product_id = product_id

    def draw(self, strategy, label=None):
        return 1 if label == "held" else self.product_id


def check(machine: CartMachine) -> None:
    machine.carts_equal_the_model()
    machine.products_count_exactly_the_live_lines()
    machine.every_live_line_has_its_hold_and_no_hold_counts_twice()


def test_removing_an_expired_line_whose_hold_was_taken_answers_200(machine):
    """Found by the machine before 5f971cb: the line went, but the answer was 409 reservation_conflict."""
    machine.add("customer", Chosen("p1"), 2)
    machine.time_passes()
    machine.add("guest", Chosen("p1"), 2)  # needs the customer's lapsed units: their hold is released
    check(machine)
    machine.remove_line("customer", Chosen("p1"))  # (PUT quantity 0, or DELETE of a last unit: the same)
    check(machine)


def test_a_merge_past_the_line_maximum_tops_up_to_100(machine):
    """Found by the machine: the top-up after a merge cut short by stock asked for the uncapped sum
    (120) and answered 409 quantity_limit_exceeded after the merge had committed."""
    machine.add("customer", Chosen("big"), 60)
    machine.add("guest", Chosen("big"), 60)
    check(machine)
    machine.merge()  # model: 100 units, adjustment quantity_limit (requested 120)
    check(machine)


def test_a_refused_checkout_extends_no_hold(machine):
    """Found by the machine: a checkout refused with reservation_expired left the other lapsed
    lines' holds extended in the products store while the lines stayed expired."""
    machine.add("customer", Chosen("p1"), 2)
    machine.add("customer", Chosen("p2"), 3)
    machine.time_passes()
    machine.add("guest", Chosen("p2"), 5)  # takes the customer's lapsed p2 units
    check(machine)
    machine.checkout()  # 409 reservation_expired for p2; p1 must not end up held again
    check(machine)


def test_a_refused_add_revives_no_lapsed_hold(machine):
    """Found by the machine: a refused hold change (409 insufficient_stock) still moved the
    reservation's expiry, so a lapsed hold came back to life for another TTL."""
    machine.add("customer", Chosen("p1"), 2)
    machine.time_passes()
    check(machine)
    machine.add("customer", Chosen("p1"), 40)  # 409 insufficient_stock: 42 of 3
    check(machine)  # p1 must still count 0 reserved
