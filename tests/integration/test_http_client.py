"""The HTTP implementation of a port (app/http_client.py) against a real server on loopback.

A stub service answers as told (a result, a 5xx, a domain error, a dropped connection, a slow
or a blocked answer) and counts the requests that reach it, so that what is asserted is what a
caller sees: the result or the exception, its Retry-After, and whether the service was reached.
The store breakers (app/errors.py StoreGuard) are checked through the public API at the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt as pyjwt
import pytest
from flask import Flask
from pymongo.errors import ConnectionFailure
from sqlalchemy.exc import OperationalError

from app.accounts import interface as accounts
from app.cart import interface as cart
from app.cart.service import Carts
from app.config import ResilienceSettings
from app.errors import DomainError
from app.http_client import ServiceClient
from app.products import catalog
from app.products import interface as products
from app.resilience import RetryBudget
from tests.metric_counts import Counts
from tests.mongo_server import free_port
from tests.problems import PROBLEM

WHEN = "2030-01-02T03:04:05+00:00"
PRODUCT = {
    "product_id": "p1",
    "sku": "SKU-1",
    "name": "Shoe",
    "description": "",
    "category": "",
    "tags": ["run"],
    "price": "19.99",
    "currency": "USD",
    "stock": 5,
    "reserved": 0,
    "status": "active",
    "created_at": WHEN,
    "updated_at": WHEN,
    "version": 1,
}
CART = {
    "shopping_cart_id": "c1",
    "user_id": "guest:1",
    "currency": "USD",
    "total_price": "0.00",
    "total_quantity": 0,
    "items": [],
    "version": 1,
}


# --- the stub service ----------------------------------------------------------------------


@dataclass
class Stub:
    """What the stub answers next, and what reached it."""

    answers: list = field(default_factory=list)  # consumed one per request; the last one repeats
    requests: list = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)  # "block" answers wait for it
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *answers) -> None:
        with self.lock:
            self.answers = list(answers)

    def next_answer(self, path: str, body: dict, headers: dict):
        with self.lock:
            self.requests.append({"path": path, "body": body, "headers": headers})
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """True once `count` more requests have arrived (False after `timeout`)."""
        deadline = time.monotonic() + timeout
        return all(self.arrived.acquire(timeout=max(0.0, deadline - time.monotonic())) for _ in range(count))

    @property
    def count(self) -> int:
        return len(self.requests)


def result(value) -> tuple:
    return (200, {"result": value})


def failure(status: int = 500) -> tuple:
    return (status, {"type": "about:blank", "status": status, "code": "internal_error"})


def domain_error(status: int, code: str, exception: str, **extensions) -> tuple:
    body = {"status": status, "code": code, "detail": f"{code} detail", "exception": exception, **extensions}
    return (status, body)


DROP = ("drop",)  # close the connection without answering


def slow(seconds: float, answer: tuple) -> tuple:
    return ("sleep", seconds, answer)


def blocked(answer: tuple) -> tuple:
    return ("block", answer)


def handler_for(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            answer = stub.next_answer(self.path, body, dict(self.headers))
            stub.arrived.release()
            if answer[0] == "sleep":
                time.sleep(answer[1])
                answer = answer[2]
            elif answer[0] == "block":
                stub.gate.wait(10)
                answer = answer[1]
            if answer == DROP:
                self.close_connection = True
                return
            status, payload = answer
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if status == 200 else PROBLEM)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:  # the client gave up (read timeout)
                self.close_connection = True

    return Handler


@pytest.fixture(scope="module")
def stub_server() -> Iterator[tuple[dict, str]]:
    """One server for the module; each test's `stub` fixture installs the handler it talks to."""
    holder = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *args: holder["handler"](*args))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def stub(stub_server) -> Iterator[Stub]:
    holder, _url = stub_server
    stub = Stub()
    stub.answer(result(None))
    holder["handler"] = handler_for(stub)
    yield stub
    stub.gate.set()  # never leave a handler thread blocked


@pytest.fixture
def caller(settings, stub_server):
    """A caller process of the products and cart services at the stub's URL: calls to
    `products.*` and `cart.*` inside `caller(...)` go over HTTP with these limits."""
    _holder, url = stub_server

    def build(url: str = url, **limits) -> Flask:
        bounds = {
            "service_connect_timeout": 1.0,
            "service_read_timeout": 2.0,
            "service_retries": 2,
            "breaker_failures": 5,
            "breaker_reset_seconds": 1,
            **limits,
        }
        caller_settings = settings.override(modules=("gateway",), resilience=ResilienceSettings(**bounds))
        app = Flask("caller")
        app.extensions["remote_ports"] = {
            "products": ServiceClient(products.port, url, caller_settings),
            "cart": ServiceClient(cart.port, url, caller_settings),
        }
        return app

    return build


def get_product(app: Flask, product_id: str = "p1") -> products.Product:
    with app.app_context():
        return products.get_product(product_id=product_id)


def expect_unavailable(app: Flask, call, error_class=products.ProductsUnavailable) -> DomainError:
    with app.app_context(), pytest.raises(error_class) as raised:
        call()
    error = raised.value
    assert type(error) is error_class
    assert (error.status, error.code) == (503, "dependency_unavailable")
    assert int(error.headers["Retry-After"]) >= 1
    return error


def in_thread(function) -> tuple[threading.Thread, dict]:
    outcome = {}

    def run() -> None:
        try:
            outcome["result"] = function()
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# --- the wire ------------------------------------------------------------------------------


def test_a_call_posts_the_encoded_arguments_with_the_service_credentials_and_decodes_the_dto(stub, caller):
    stub.answer(result(PRODUCT))

    product = get_product(caller(), "p1")

    assert product == products.Product(
        **{
            **PRODUCT,
            "tags": ("run",),
            "price": Decimal("19.99"),
            "created_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
            "updated_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
    )
    (request,) = stub.requests
    assert request["path"] == "/internal/products/get_product"
    assert request["body"] == {"product_id": "p1"}
    assert request["headers"]["X-Service-Key"] == "test-gateway-key"
    assert request["headers"]["X-Service-Caller"] == "gateway"


def test_the_request_id_goes_with_every_call_made_inside_a_request(stub, caller):
    stub.answer(result(PRODUCT))
    app = caller()

    with app.test_request_context("/v1/carts", headers={"X-Request-ID": "hop-1"}):
        products.get_product(product_id="p1")
    get_product(app, "p1")  # outside any request (a CLI command): no id to pass on

    inside, outside = stub.requests
    assert inside["headers"]["X-Request-ID"] == "hop-1"
    assert "X-Request-ID" not in outside["headers"]


def test_a_domain_error_is_raised_again_as_the_same_class_with_its_attributes(stub, caller):
    stub.answer(
        domain_error(
            409,
            "insufficient_stock",
            "app.products.errors.InsufficientStock",
            productId="p1",
            available=1,
            requested=5,
        )
    )
    app = caller()

    with app.app_context(), pytest.raises(products.InsufficientStock) as raised:
        products.reserve_stock(product_id="p1", quantity=5, reservation_id="r1", expires_at=datetime.now(UTC))

    assert (raised.value.product_id, raised.value.available, raised.value.requested) == ("p1", 1, 5)
    assert raised.value.detail == "insufficient_stock detail"
    assert stub.count == 1  # an answer, not a failure: never retried


def test_an_answer_without_a_known_exception_is_the_module_unavailable_error(stub, caller):
    stub.answer(domain_error(409, "conflict", "builtins.KeyError"))

    expect_unavailable(caller(), lambda: products.get_product(product_id="p1"))
    assert stub.count == 1


# --- timeouts and connection errors --------------------------------------------------------


def test_a_refused_connection_is_the_module_unavailable_error_with_retry_after(caller):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    error = expect_unavailable(caller(closed, service_retries=1), lambda: products.get_product(product_id="p1"))
    assert error.headers["Retry-After"] == "1"


def test_a_read_timeout_is_the_module_unavailable_error(stub, caller):
    stub.answer(slow(1.0, result(PRODUCT)))
    app = caller(service_read_timeout=0.2, service_retries=0)

    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 1


# --- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", [failure(500), failure(503), DROP], ids=["500", "503", "dropped"])
def test_an_idempotent_call_is_retried_then_succeeds(stub, caller, failing):
    stub.answer(failing, failing, result(PRODUCT))

    assert get_product(caller(service_retries=2)).product_id == "p1"
    assert stub.count == 3


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_an_idempotent_call_is_tried_one_plus_service_retries_times(stub, caller, retries):
    stub.answer(failure(500))

    expect_unavailable(caller(service_retries=retries), lambda: products.get_product(product_id="p1"))
    assert stub.count == 1 + retries


def test_an_idempotent_call_is_retried_after_a_dropped_connection(stub, caller):
    stub.answer(DROP)

    expect_unavailable(caller(service_retries=2), lambda: products.get_product(product_id="p1"))
    assert stub.count == 3


@pytest.mark.parametrize(
    ("call", "error_class"),
    [
        (lambda: cart.add_item(owner_id="guest:1", product_id="p1", quantity=1), cart.CartUnavailable),
        (
            lambda: products.create_product(draft=products.ProductDraft(sku="SKU-1", name="x", price=Decimal("1"))),
            products.ProductsUnavailable,
        ),
    ],
    ids=["cart.add_item", "products.create_product"],
)
@pytest.mark.parametrize("failing", [failure(500), DROP], ids=["500", "dropped"])
def test_a_call_that_is_not_idempotent_is_tried_once(stub, caller, call, error_class, failing):
    stub.answer(failing)

    expect_unavailable(caller(service_retries=3), call, error_class)
    assert stub.count == 1


def test_retries_stop_when_the_retry_budget_is_spent(stub, caller):
    stub.answer(failure(500))
    app = caller(service_retries=2, breaker_failures=100)
    app.extensions["remote_ports"]["products"].budget = RetryBudget(ratio=0, floor=3)

    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 3  # two retries spent: one left
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 5  # the last retry
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 6  # no retry left


def test_calls_that_are_not_retried_leave_the_retry_budget_alone(stub, caller):
    stub.answer(failure(500))
    app = caller(service_retries=2, breaker_failures=100)
    app.extensions["remote_ports"]["products"].budget = RetryBudget(ratio=0, floor=2)
    draft = products.ProductDraft(sku="SKU-1", name="x", price=Decimal("1"))

    for _ in range(3):
        expect_unavailable(app, lambda: products.create_product(draft=draft))
    assert stub.count == 3

    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 6  # both retries were still in the budget


# --- the circuit breaker -------------------------------------------------------------------


def test_the_breaker_opens_after_breaker_failures_and_then_fails_without_calling(stub, caller):
    stub.answer(failure(500))
    app = caller(service_retries=0, breaker_failures=3, breaker_reset_seconds=5)

    for _ in range(3):
        expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 3

    stub.answer(result(PRODUCT))  # the service is back, but the breaker does not know yet
    error = expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert 1 <= int(error.headers["Retry-After"]) <= 5
    assert stub.count == 3
    # non-idempotent calls and other functions are refused the same way
    expect_unavailable(app, lambda: products.adjust_stock(product_id="p1", delta=1, reason="x"))
    assert stub.count == 3


def test_retries_stop_once_the_breaker_opens(stub, caller):
    stub.answer(failure(500))
    app = caller(service_retries=5, breaker_failures=2, breaker_reset_seconds=5)

    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 2


def test_each_service_has_its_own_breaker(stub, caller):
    stub.answer(failure(500))
    app = caller(service_retries=0, breaker_failures=2, breaker_reset_seconds=5)
    for _ in range(2):
        expect_unavailable(app, lambda: products.get_product(product_id="p1"))

    stub.answer(result(CART))
    with app.app_context():
        assert cart.get_cart(owner_id="guest:1").shopping_cart_id == "c1"
    assert stub.count == 3


def test_after_the_reset_time_one_probe_goes_through_and_success_closes_the_breaker(stub, caller, advance_clock):
    stub.answer(failure(500))
    app = caller(service_retries=0, breaker_failures=2, breaker_reset_seconds=1)
    for _ in range(2):
        expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 2

    advance_clock(1.1)
    stub.answer(result(PRODUCT))
    assert get_product(app).product_id == "p1"  # the probe
    assert stub.count == 3
    assert get_product(app).product_id == "p1"  # closed again
    assert stub.count == 4


def test_a_failed_probe_opens_the_breaker_again(stub, caller, advance_clock):
    stub.answer(failure(500))
    app = caller(service_retries=0, breaker_failures=2, breaker_reset_seconds=1)
    for _ in range(2):
        expect_unavailable(app, lambda: products.get_product(product_id="p1"))

    advance_clock(1.1)
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))  # the probe fails
    assert stub.count == 3
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 3


def test_while_half_open_only_one_probe_is_in_flight(stub, caller, advance_clock):
    stub.answer(failure(500))
    app = caller(service_retries=0, breaker_failures=1, breaker_reset_seconds=1)
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    advance_clock(1.1)
    stub.answer(blocked(result(PRODUCT)))

    probe, outcome = in_thread(lambda: get_product(app))
    assert stub.wait_for(2)  # the first failure, then the probe
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    assert stub.count == 2
    stub.gate.set()
    probe.join(5)
    assert outcome["result"].product_id == "p1"
    assert get_product(app).product_id == "p1"


def test_domain_errors_do_not_open_the_breaker(stub, caller):
    stub.answer(domain_error(404, "product_not_found", "app.products.errors.ProductNotFound", productId="p1"))
    app = caller(service_retries=0, breaker_failures=2, breaker_reset_seconds=5)

    for _ in range(5):
        with app.app_context(), pytest.raises(products.ProductNotFound) as raised:
            products.get_product(product_id="p1")
        assert raised.value.product_id == "p1"
    assert stub.count == 5

    stub.answer(result(PRODUCT))
    assert get_product(app).product_id == "p1"
    assert stub.count == 6


def test_an_answer_between_failures_starts_the_count_again(stub, caller):
    not_found = domain_error(404, "product_not_found", "app.products.errors.ProductNotFound", productId="p1")
    stub.answer(failure(500), not_found, failure(500), result(PRODUCT))
    app = caller(service_retries=0, breaker_failures=2, breaker_reset_seconds=5)

    expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    with app.app_context(), pytest.raises(products.ProductNotFound):
        products.get_product(product_id="p1")
    expect_unavailable(app, lambda: products.get_product(product_id="p1"))

    assert get_product(app).product_id == "p1"  # one failure in a row: still closed
    assert stub.count == 4


# --- the bulkhead --------------------------------------------------------------------------


def test_a_full_bulkhead_refuses_a_call_at_once_instead_of_queueing_it(stub, caller):
    stub.answer(blocked(result(PRODUCT)))
    app = caller(service_pool_size=1, service_connect_timeout=3.0, service_read_timeout=5.0)

    first, outcome = in_thread(lambda: get_product(app))
    assert stub.wait_for(1)
    # Freed shortly: a call queued for the slot would get it, and succeed.
    release = threading.Timer(0.3, stub.gate.set)
    release.start()
    try:
        expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    finally:
        release.join()
        first.join(5)
    assert outcome["result"].product_id == "p1"
    assert stub.count == 1

    assert get_product(app).product_id == "p1"  # the slot is free again
    assert stub.count == 2


def test_the_bulkhead_lets_service_pool_size_calls_run_at_once(stub, caller):
    stub.answer(blocked(result(PRODUCT)))
    app = caller(service_pool_size=2, service_read_timeout=5.0)

    running = [in_thread(lambda: get_product(app)) for _ in range(2)]
    both_arrived = stub.wait_for(2, timeout=3)
    stub.gate.set()
    for thread, _outcome in running:
        thread.join(5)

    assert both_arrived
    assert [outcome["result"].product_id for _thread, outcome in running] == ["p1", "p1"]


def test_a_call_failing_at_the_bulkhead_gives_its_slot_back(stub, caller):
    stub.answer(failure(500))
    app = caller(service_pool_size=1, service_retries=0, breaker_failures=100)

    for _ in range(3):
        expect_unavailable(app, lambda: products.get_product(product_id="p1"))
    stub.answer(result(PRODUCT))
    assert get_product(app).product_id == "p1"


# --- the store breakers (app/errors.py StoreGuard) -----------------------------------------


@pytest.fixture
def store_breakers(app, client):
    """The session app's breakers of both stores, created by a first call, closed again after."""
    assert client.get("/v1/products/x").status_code == 404
    breakers = app.extensions["breakers"]
    yield breakers
    for breaker in breakers.values():
        breaker.close()


def assert_unavailable(response) -> dict:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    assert response.get_json()["code"] == "dependency_unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    return response.get_json()


def test_an_open_mongodb_breaker_answers_503_without_asking_the_store(app, client, store_breakers):
    store_breakers["mongodb"].open()

    refused = client.get("/v1/products/x")
    assert_unavailable(refused)  # the store is up: it would say 404
    # the breaker's own wait, not the rate limit window's reset that flask-limiter would put there
    assert int(refused.headers["Retry-After"]) <= app.extensions["settings"].resilience.breaker_reset_seconds
    assert_unavailable(client.get("/v1/products"))

    store_breakers["mongodb"].close()
    assert client.get("/v1/products/x").status_code == 404


def test_store_outages_open_the_mongodb_breaker(app, client, store_breakers, monkeypatch):
    failures = app.extensions["settings"].resilience.breaker_failures
    calls = []

    def store_down(product_id):
        calls.append(product_id)
        raise ConnectionFailure("connection refused")

    monkeypatch.setattr(catalog, "get_product", store_down)
    for _ in range(failures):
        body = assert_unavailable(client.get("/v1/products/x"))
        assert body["code"] == "dependency_unavailable"
    assert len(calls) == failures

    monkeypatch.undo()  # the store answers again; the breaker does not know yet
    assert_unavailable(client.get("/v1/products/x"))
    with app.app_context(), pytest.raises(products.ProductsUnavailable) as refused:
        products.get_product(product_id="x")
    assert 1 <= int(refused.value.headers["Retry-After"]) <= app.extensions["settings"].resilience.breaker_reset_seconds
    assert len(calls) == failures


def test_store_outages_open_the_postgresql_breaker_of_cart_and_accounts(app, token, store_breakers, monkeypatch):
    user_id = pyjwt.decode(token("customer", subject="breaker"), options={"verify_signature": False})["sub"]
    failures = app.extensions["settings"].resilience.breaker_failures
    calls = []

    def database_down(*args, **kwargs):
        calls.append(args)
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(Carts, "get", database_down)
    with app.app_context():
        for _ in range(failures):
            with pytest.raises(cart.CartUnavailable):
                cart.get_cart(owner_id=user_id)
        monkeypatch.undo()  # the database answers again; the breaker does not know yet

        with pytest.raises(cart.CartUnavailable) as refused:
            cart.get_cart(owner_id=user_id)
        assert int(refused.value.headers["Retry-After"]) >= 1
        with pytest.raises(accounts.AccountsUnavailable) as refused:  # one breaker per store
            accounts.get_user(user_id=user_id)
        assert int(refused.value.headers["Retry-After"]) >= 1
        assert len(calls) == failures
        assert products.get_products(product_ids=["x"]) == ()  # the other store's breaker is closed

        store_breakers["postgresql"].close()
        assert cart.get_cart(owner_id=user_id).items == ()
        assert accounts.get_user(user_id=user_id).user_id == user_id


def test_retries_and_retries_the_budget_refused_are_counted(stub, caller):
    stub.answer(failure(500))
    app = caller(service_retries=2, breaker_failures=100)
    app.extensions["remote_ports"]["products"].budget = RetryBudget(ratio=0, floor=3)
    counts = Counts()

    for _ in range(2):
        expect_unavailable(app, lambda: products.get_product(product_id="p1"))

    assert stub.count == 5  # 2 calls, 3 retries: the fourth was refused
    assert counts.delta("storefront_service_retries_total", service="products-service", outcome="retried") == 3
    assert counts.delta("storefront_service_retries_total", service="products-service", outcome="budget_exhausted") == 1
