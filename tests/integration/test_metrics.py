"""What the app counts (app/metrics.py), read from this process's registry as a scrape would;
tests/e2e/test_metrics_served.py checks the sum over gunicorn workers on the metrics port."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.config import ResilienceSettings
from app.extensions import db
from app.products import interface as products
from app.products.models import utcnow
from app.resilience import new_breaker
from tests.integration.test_auth_api import log_in, register_and_verify
from tests.integration.test_cart_api import add, create
from tests.metric_counts import Counts, value
from tests.problems import expect_problem

MAX_HELD = 100  # connections a test takes before giving up on the pool ever making it wait


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='counted-shopper')}"}


def test_requests_are_counted_and_timed_by_route_template_method_and_status(client):
    counts = Counts()
    for product_id in ("nope-1", "nope-2"):
        assert client.get(f"/v1/products/{product_id}").status_code == 404
    assert client.get("/v1/products").status_code == 200
    assert client.get("/no/such/path").status_code == 404

    route = "/v1/products/<string:product_id>"
    assert counts.delta("storefront_http_requests_total", route=route, method="GET", status="404") == 2
    assert counts.delta("storefront_http_requests_total", route="/v1/products", method="GET", status="200") == 1
    assert counts.delta("storefront_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert counts.delta("storefront_http_request_duration_seconds_count", route=route, method="GET") == 2
    assert counts.delta("storefront_http_request_duration_seconds_sum", route=route, method="GET") > 0


def test_holds_made_and_refused_by_the_oversell_guard_are_counted(client, admin_headers, shopper, token):
    create(client, admin_headers, "lamp", stock=3)
    other = {"Authorization": f"Bearer {token('customer', subject='counted-other')}"}
    counts = Counts()

    assert add(client, shopper, "lamp", 2).status_code == 201
    expect_problem(add(client, other, "lamp", 2), 409, "insufficient_stock")
    expect_problem(add(client, other, "ghost", 1), 404, "product_not_found")  # not the oversell guard

    assert counts.delta("storefront_stock_holds_total", outcome="made") == 1
    assert counts.delta("storefront_stock_holds_total", outcome="refused") == 1


def test_lapsed_holds_released_for_another_buyer_are_counted_as_expired(app, client, admin_headers):
    create(client, admin_headers, "lamp", stock=3)
    counts = Counts()
    with app.app_context():
        lapsed = utcnow() - timedelta(minutes=1)
        products.reserve_stock(product_id="lamp", quantity=2, reservation_id="r-lapsed", expires_at=lapsed)
        products.reserve_stock(
            product_id="lamp", quantity=3, reservation_id="r-new", expires_at=utcnow() + timedelta(minutes=5)
        )

    assert counts.delta("storefront_stock_holds_total", outcome="expired") == 1
    assert counts.delta("storefront_stock_holds_total", outcome="made") == 2


def test_orders_and_their_totals_are_counted_by_currency(client, admin_headers, shopper):
    create(client, admin_headers, "mug", price="2.50", stock=10)
    add(client, shopper, "mug", 3)
    counts = Counts()

    response = client.post("/v1/cart/checkout", headers={**shopper, "Idempotency-Key": "count-me"})
    assert response.status_code == 201, response.get_data(as_text=True)
    replayed = client.post("/v1/cart/checkout", headers={**shopper, "Idempotency-Key": "count-me"})
    assert replayed.status_code == 201  # the same order again: not counted twice

    assert counts.delta("storefront_orders_total", currency="USD") == 1
    assert Decimal(str(counts.delta("storefront_order_value_total", currency="USD"))) == Decimal("7.5")


def test_logins_are_counted_as_success_failure_and_locked(client, mail_dir):
    register_and_verify(client, mail_dir, "counted@example.test")
    counts = Counts()
    assert log_in(client, "counted@example.test").status_code == 200
    for _ in range(5):
        expect_problem(log_in(client, "counted@example.test", "Wrong-Password-1"), 401, "invalid_credentials")
    expect_problem(log_in(client, "counted@example.test"), 429, "login_locked")

    assert counts.delta("storefront_logins_total", outcome="success") == 1
    assert counts.delta("storefront_logins_total", outcome="failure") == 5
    assert counts.delta("storefront_logins_total", outcome="locked") == 1


def test_rate_limit_refusals_are_counted_by_route(other_app):
    limited = other_app(guest_rate_limit="2 per minute").test_client()
    counts = Counts()
    answers = [limited.post("/v1/auth/guest").status_code for _ in range(3)]

    assert answers == [201, 201, 429]
    assert counts.delta("storefront_rate_limited_total", route="/v1/auth/guest") == 1


def test_breakers_export_their_state_from_creation_and_count_transitions():
    breaker = new_breaker("metrics-test", failures=2, reset_seconds=1, counts=(ConnectionError,))
    assert value("storefront_circuit_breaker_state", dependency="metrics-test") == 0
    counts = Counts()

    def fail():
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    assert value("storefront_circuit_breaker_state", dependency="metrics-test") == 2
    threading.Event().wait(1.05)  # the reset time: the next call is the half-open probe
    breaker.call(lambda: None)

    assert value("storefront_circuit_breaker_state", dependency="metrics-test") == 0
    for state in ("open", "half-open", "closed"):
        assert counts.delta("storefront_circuit_breaker_transitions_total", dependency="metrics-test", state=state) == 1


def test_the_stores_breakers_are_exported_closed_before_any_call(other_app):
    other_app()
    assert value("storefront_circuit_breaker_state", dependency="mongodb") == 0
    assert value("storefront_circuit_breaker_state", dependency="postgresql") == 0


def test_pooled_connections_in_use_and_waits_are_measured(app, client, shopper):
    counts = Counts()
    assert client.get("/v1/cart", headers=shopper).status_code == 200

    assert value("storefront_db_pool_connections_in_use", store="postgresql") == 0  # all given back
    assert counts.delta("storefront_db_pool_wait_seconds_count", store="postgresql") >= 1


def test_a_request_finding_every_pooled_connection_busy_answers_503_after_the_pool_timeout(other_app, shopper):
    busy = other_app(resilience=replace(ResilienceSettings(), db_pool_size=1, db_pool_timeout=1))
    counts = Counts()
    held = []
    with busy.app_context():
        try:
            while len(held) < MAX_HELD:  # the pool and its overflow, until the pool makes us wait
                held.append(db.engine.connect())
        except PoolTimeout:
            response = busy.test_client().get("/v1/cart", headers=shopper)
        finally:
            for connection in held:
                connection.close()

    expect_problem(response, 503, "dependency_unavailable")  # was a 500 before the pool timeout was an outage
    assert counts.delta("storefront_db_pool_timeouts_total", store="postgresql") == 2  # ours, and the request's


def test_readiness_reports_set_the_ready_gauge(client):
    assert client.get("/health/ready").status_code == 200
    assert value("storefront_ready", service="api-gateway") == 1


def test_metrics_are_not_served_on_the_public_listener_unless_enabled(client, other_app):
    assert client.get("/metrics").status_code == 404

    served = other_app(metrics_on_public_port=True).test_client().get("/metrics")
    assert served.status_code == 200
    assert served.mimetype == "text/plain"
    assert b"storefront_http_requests_total" in served.data
    assert served.data.count(b"# TYPE") == generate_latest(REGISTRY).count(b"# TYPE")
