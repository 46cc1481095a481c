"""Prometheus metrics (prometheus-client): what every process counts, and where it is served.

Under gunicorn the workers write to PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets one and
empties it at start) and the master serves the sum of them on METRICS_PORT, a listener of
its own that is never the public one. METRICS_ON_PUBLIC_PORT=true adds GET /metrics to the
app's own listener instead, for platforms with one port per process.

Every metric has labels, so that a value exists only once a process has something to say
(an unlabelled one would exist in the gunicorn master too, which serves no request). The
gauges an alert needs from the start are set at start-up: each breaker's state (closed) when
it is created, the database pool's connections in use (0).
"""

from __future__ import annotations

import os
import time
from decimal import Decimal

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from app.config import ConfigError, Settings, check_bind, default_host

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets (seconds) for the public API: p99 targets sit between 50 ms and 1 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
# pybreaker's state names as the breaker gauge's values.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
UNMATCHED_ROUTE = "unmatched"  # a request no route matched (404, 405): one series, whatever the path

REQUESTS = Counter(
    "storefront_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "storefront_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HOLDS = Counter(
    "storefront_stock_holds_total",
    "Stock holds: made (units held for a cart), refused (not enough stock: the oversell guard), "
    "expired (a lapsed hold released).",
    ["outcome"],
)
ORDERS = Counter("storefront_orders_total", "Orders placed at checkout, by currency.", ["currency"])
ORDER_VALUE = Counter(
    "storefront_order_value_total",
    "Sum of the totals of the orders placed, in the currency's major unit.",
    ["currency"],
)
LOGINS = Counter(
    "storefront_logins_total",
    "Login attempts: success, failure (wrong credentials), locked (refused by the lockout).",
    ["outcome"],
)
RATE_LIMITED = Counter(
    "storefront_rate_limited_total", "Requests refused with 429 by a rate limit, by route template.", ["route"]
)
BREAKER_STATE = Gauge(
    "storefront_circuit_breaker_state",
    "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open (the highest of the workers).",
    ["dependency"],
    multiprocess_mode="livemax",
)
BREAKER_TRANSITIONS = Counter(
    "storefront_circuit_breaker_transitions_total",
    "Circuit breaker state changes, by dependency and new state.",
    ["dependency", "state"],
)
RETRIES = Counter(
    "storefront_service_retries_total",
    "Calls to another service: retried (a retry was sent), budget_exhausted (a retry the budget refused).",
    ["service", "outcome"],
)
CART_CACHE = Counter("storefront_cart_cache_total", "Cart cache lookups: hit or miss.", ["result"])
DB_POOL_IN_USE = Gauge(
    "storefront_db_pool_connections_in_use",
    "SQL connections checked out of the pool (summed over the workers).",
    ["store"],
    multiprocess_mode="livesum",
)
DB_POOL_WAIT = Histogram(
    "storefront_db_pool_wait_seconds",
    "Time to get a pooled SQL connection: waiting for a free one, or opening a new one.",
    ["store"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DB_POOL_TIMEOUTS = Counter(
    "storefront_db_pool_timeouts_total",
    "Requests that waited DB_POOL_TIMEOUT for a pooled SQL connection and gave up.",
    ["store"],
)
READY = Gauge(
    "storefront_ready",
    "1 when the last readiness report (/health/ready, /v1/health) of a worker was ready, else 0 "
    "(the lowest of the workers), by the service the process is.",
    ["service"],
    multiprocess_mode="livemin",
)
OUTBOX_LAG = Gauge(
    "storefront_outbox_lag_seconds",
    "Age of the oldest outbox event not yet published, set by `flask events relay` after each pass "
    "(0: none waiting), by where it publishes: rabbitmq, or local (the in-process consumers).",
    ["sink"],
    multiprocess_mode="livemax",
)
EVENTS_PUBLISHED = Counter(
    "storefront_events_published",
    "Outbox events the relay published (confirmed by RabbitMQ, or taken by the local consumers), by type.",
    ["type"],
)
RELAY_FAILURES = Counter(
    "storefront_relay_failures",
    "Relay failures: unroutable (no queue bound), nacked, local_delivery (an event refused), "
    "broker_unavailable or pass_failed (a pass retried with backoff), product_events (not moved in).",
    ["reason"],
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_VARIABLE))


def _registry() -> CollectorRegistry:
    """The sum of every worker's files in multiprocess mode, else this process's own metrics."""
    if not multiprocess_mode():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition() -> tuple[bytes, str]:
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def serve(settings: Settings) -> None:
    """Serve /metrics on METRICS_HOST:METRICS_PORT in a thread of this process (a gunicorn
    master); METRICS_PORT=0 serves none. A port that cannot be bound stops the start-up."""
    if not settings.metrics_port:
        return
    host = settings.metrics_host or default_host(settings)
    check_bind(settings, host, "METRICS_HOST")
    try:
        start_http_server(settings.metrics_port, addr=host, registry=_registry())
    except OSError as error:
        raise ConfigError("METRICS_PORT", f"{settings.metrics_port} cannot be listened on at {host}: {error}") from None


def worker_exited(pid: int) -> None:
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)


def init_app(app: Flask, settings: Settings) -> None:
    """Count and time every request and, with METRICS_ON_PUBLIC_PORT, serve GET /metrics on
    the app's own listener. Before the rate limiter's hooks, so that refused requests count."""

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        route = current_route()
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        if "metrics_started" in g:
            LATENCY.labels(route, request.method).observe(time.perf_counter() - g.metrics_started)
        return response

    if settings.metrics_on_public_port:
        app.add_url_rule("/metrics", "metrics", _serve_metrics, methods=["GET"])


def current_route() -> str:
    return request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE


def rate_limited() -> None:
    RATE_LIMITED.labels(current_route()).inc()


def _serve_metrics() -> Response:
    body, content_type = exposition()
    return Response(body, content_type=content_type)


def breaker_changed(dependency: str, state: str, *, transition: bool = True) -> None:
    BREAKER_STATE.labels(dependency).set(BREAKER_STATES[state])
    if transition:
        BREAKER_TRANSITIONS.labels(dependency, state).inc()


def order_placed(currency: str, total: Decimal) -> None:
    ORDERS.labels(currency).inc()
    ORDER_VALUE.labels(currency).inc(float(total))
