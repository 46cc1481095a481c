"""The shipped alerts, proven: Debian's Prometheus with the repository's alert rules scrapes the
app served by gunicorn with the repository's gunicorn.conf.py (two workers, the master's
METRICS_PORT), and alerts Debian's Alertmanager routing with the repository's alertmanager.yml
to a webhook this test runs; every interval is a second (tests/prometheus_server.py).

The MongoDB server is this module's own: one test stops it until the products breaker opens."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.e2e.gunicorn_server import REPOSITORY_CONFIG, app_environment, flask_process, gunicorn
from tests.mongo_server import MongoServer, free_port
from tests.prometheus_server import (
    alertmanager,
    alertmanager_config,
    prometheus,
    prometheus_config,
    used_metric_names,
    webhook,
)
from tests.redis_server import RedisServer

ALERT = "StorefrontBreakerOpen"
ALERT_WITHIN = 60  # seconds from the breaker opening to the webhook's notification
# Each request against the stopped server fails in 0.3 s rather than the default 3 s.
MONGODB_TIMEOUTS = "serverSelectionTimeoutMS=300&connectTimeoutMS=300"
BREAKER_OPEN = re.compile(r'^storefront_circuit_breaker_state\{dependency="mongodb"\} 2\.0$', re.MULTILINE)


@dataclass(frozen=True)
class Monitored:
    api: str
    metrics: str
    prometheus: str
    alertmanager: str
    notifications: list[dict]


def eventually(probe: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
    """The probe's first truthy answer within `timeout` seconds, else a failure saying `what`."""
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, what()
        time.sleep(0.5)
    return found


@pytest.fixture(scope="module")
def mongo(tmp_path_factory) -> Iterator[MongoServer]:
    """A Mongo server of this module's own, so that stopping it affects no other test."""
    server = MongoServer(tmp_path_factory.mktemp("alerting-mongo"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monitored(mongo, app, database_url, tmp_path_factory) -> Iterator[Monitored]:
    directory = tmp_path_factory.mktemp("alerting")
    metrics_port = free_port()
    with ExitStack() as stack:
        redis = RedisServer(tmp_path_factory.mktemp("alerting-redis"))  # the cart cache's hits and misses
        redis.start()
        stack.callback(redis.stop)
        environment = app_environment(
            f"{mongo.uri}?{MONGODB_TIMEOUTS}",
            database_url,
            METRICS_PORT=str(metrics_port),
            REDIS_URL=redis.url,
            THROTTLE_LIMIT="100000",
            AUTH_RATE_LIMIT="3 per minute",  # the fourth login is refused: a rate-limit refusal
            CATALOG_CACHE_TTL="0",  # every product read asks MongoDB
        )
        hook, notifications = stack.enter_context(webhook())
        alerts_url = stack.enter_context(alertmanager(directory / "alertmanager", alertmanager_config(hook)))
        api = stack.enter_context(
            gunicorn(environment, directory / "gunicorn.log", workers=2, config=REPOSITORY_CONFIG)
        )
        relay_target = f"127.0.0.1:{free_port()}"  # the outbox relay, handing events to the local consumers
        relay_environment = {**environment, "METRICS_PORT": relay_target.rsplit(":", 1)[1]}
        stack.enter_context(
            flask_process(["events", "relay", "--interval", "0.5"], relay_environment, directory / "relay.log")
        )
        metrics_target = f"127.0.0.1:{metrics_port}"
        config = prometheus_config(metrics_target, alerts_url.removeprefix("http://"), relay_target=relay_target)
        prometheus_url = stack.enter_context(prometheus(directory / "prometheus", config))
        yield Monitored(api, f"http://{metrics_target}/metrics", prometheus_url, alerts_url, notifications)


def test_every_metric_the_dashboard_and_alerts_use_is_scraped(monitored, token, admin_headers):
    """Some of everything: holds made and refused, a checkout, cart reads from the cache,
    failed logins until the rate limit refuses one, a readiness report."""
    api = monitored.api
    product = {"productId": "lamp", "sku": "SKU-LAMP", "name": "Lamp", "price": "12.50", "stock": 1}
    assert requests.post(f"{api}/v1/products", json=product, headers=admin_headers, timeout=10).status_code == 201
    buyer = {"Authorization": f"Bearer {token('customer', subject='alerting-buyer')}"}
    other = {"Authorization": f"Bearer {token('customer', subject='alerting-other')}"}
    line = {"productId": "lamp", "quantity": 1}
    assert requests.post(f"{api}/v1/cart/products", json=line, headers=buyer, timeout=10).status_code == 201
    assert requests.post(f"{api}/v1/cart/products", json=line, headers=other, timeout=10).status_code == 409
    for _ in range(2):  # a miss, then a hit
        assert requests.get(f"{api}/v1/cart", headers=buyer, timeout=10).status_code == 200
    checkout = requests.post(
        f"{api}/v1/cart/checkout", headers={**buyer, "Idempotency-Key": str(uuid.uuid4())}, timeout=10
    )
    assert checkout.status_code == 201, checkout.text
    wrong = {"email": "nobody@example.test", "password": "not-the-password-1"}
    logins = [requests.post(f"{api}/v1/auth/login", json=wrong, timeout=10).status_code for _ in range(4)]
    assert logins == [401, 401, 401, 429]
    assert requests.get(f"{api}/health/ready", timeout=10).status_code == 200

    def missing() -> set[str]:
        names = requests.get(f"{monitored.prometheus}/api/v1/label/__name__/values", timeout=5).json()["data"]
        return used_metric_names() - set(names)

    eventually(lambda: not missing(), 30, lambda: f"never scraped: {sorted(missing())}")


def firing(alerts: list[dict], state_of: Callable[[dict], str], state: str) -> list[dict]:
    """The api's mongodb breaker alerts (the relay, which moves product events out of MongoDB,
    opens a breaker of its own meanwhile)."""
    return [
        alert
        for alert in alerts
        if alert["labels"]["alertname"] == ALERT
        and alert["labels"]["dependency"] == "mongodb"
        and alert["labels"]["job"] == "api"
        and state_of(alert) == state
    ]


def test_the_breaker_open_alert_fires_and_reaches_alertmanager(monitored, mongo):
    mongo.stop()
    try:
        deadline = time.monotonic() + 60
        while not BREAKER_OPEN.search(requests.get(monitored.metrics, timeout=5).text):
            assert time.monotonic() < deadline, "the mongodb breaker did not open"
            answer = requests.get(f"{monitored.api}/v1/products/lamp", headers={"Connection": "close"}, timeout=10)
            assert answer.status_code == 503
        opened = time.monotonic()

        def prometheus_alerts() -> list[dict]:
            alerts = requests.get(f"{monitored.prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            return firing(alerts, lambda alert: alert["state"], "firing")

        [alert] = eventually(prometheus_alerts, ALERT_WITHIN, lambda: "Prometheus did not fire the alert")
        assert alert["labels"]["job"] == "api"
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"].endswith("the mongodb breaker is open")

        def alertmanager_alerts() -> list[dict]:
            alerts = requests.get(f"{monitored.alertmanager}/api/v2/alerts", timeout=5).json()
            return firing(alerts, lambda alert: alert["status"]["state"], "active")

        eventually(alertmanager_alerts, ALERT_WITHIN - (time.monotonic() - opened), lambda: "not in Alertmanager")

        def notified() -> list[dict]:
            return [
                alert
                for notification in monitored.notifications
                for alert in firing(notification["alerts"], lambda alert: alert["status"], "firing")
            ]

        eventually(notified, ALERT_WITHIN - (time.monotonic() - opened), lambda: "no webhook notification")
    finally:
        mongo.start()
