"""The app as operators run it: gunicorn serving wsgi:app, over real HTTP on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from app.gateway.health import MAX_AGE_SECONDS as HEALTH_MAX_AGE
from tests.conftest import TEST_SECRET
from tests.e2e.gunicorn_server import REPO, gunicorn
from tests.mongo_server import MongoServer, free_port


@pytest.fixture(scope="module")
def mongo(tmp_path_factory) -> Iterator[MongoServer]:
    """A Mongo server of this module's own, so that stopping it affects no other test."""
    server = MongoServer(tmp_path_factory.mktemp("e2e-mongo"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def base_url(mongo, app, database_url, tmp_path_factory) -> Iterator[str]:
    environment = {
        **os.environ,
        "APP_ENV": "development",
        # The app gives up on a store it cannot reach after 3 s (app/products/database.py), at
        # each request of the outage test: 1 s here.
        "MONGODB_URI": f"{mongo.uri}?serverSelectionTimeoutMS=1000",
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "THROTTLE_LIMIT": "40",
        "THROTTLE_TTL": "60",
        "CORS_ORIGINS": "https://shop.example.com",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "seed", "--count", "30"],
        cwd=REPO,
        env=environment,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with gunicorn(environment, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log") as url:
        yield url


def test_original_clients_still_list_products(base_url):
    response = requests.get(f"{base_url}/v1/products", params={"page_size": 100}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert len(body) == 30
    assert all(isinstance(item["productId"], str) and isinstance(item["price"], str) for item in body)


def test_cors_allows_only_configured_origins(base_url):
    preflight = {"Access-Control-Request-Method": "GET"}
    allowed = requests.options(
        f"{base_url}/v1/products", headers={"Origin": "https://shop.example.com", **preflight}, timeout=5
    )
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    simple = requests.get(f"{base_url}/v1/products", headers={"Origin": "https://shop.example.com"}, timeout=5)
    assert simple.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert "X-Pagination" in simple.headers["Access-Control-Expose-Headers"]
    refused = requests.options(
        f"{base_url}/v1/products", headers={"Origin": "https://evil.example", **preflight}, timeout=5
    )
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_store_outage_is_a_clear_503_and_recovers(base_url, mongo):
    mongo.stop()
    try:
        time.sleep(HEALTH_MAX_AGE)  # the report from before the stop has aged out
        health = requests.get(f"{base_url}/v1/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        assert health.json()["dependencies"]["productsService"]["status"] == "down"
        live = requests.get(f"{base_url}/health/live", timeout=10)
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = requests.get(f"{base_url}/health/ready", timeout=10)
        last_report = time.monotonic()  # the outage's last health report was made before this
        assert ready.status_code == 503
        assert ready.headers["Content-Type"] == "application/problem+json"
        assert ready.json()["code"] == "not_ready"
        assert {"check": "store", "name": "mongodb"} in ready.json()["failed"]
        listing = requests.get(f"{base_url}/v1/products", timeout=10)
        assert listing.status_code == 503
        assert listing.headers["Content-Type"] == "application/problem+json"
        assert listing.json()["code"] == "dependency_unavailable"
    finally:
        mongo.start()
    time.sleep(max(last_report + HEALTH_MAX_AGE - time.monotonic(), 0))  # it has aged out
    assert requests.get(f"{base_url}/v1/health", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{base_url}/health/ready", timeout=10).json() == {"status": "ok"}


def test_rate_limit_answers_429_problem_with_retry_after(base_url):
    statuses = []
    for _ in range(60):
        response = requests.get(f"{base_url}/v1/products/1", timeout=5)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["RateLimit-Limit"] == "40"
