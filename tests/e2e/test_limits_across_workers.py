"""Rate limits hold across gunicorn workers when they share Redis (and not without it)."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from tests.conftest import TEST_SECRET
from tests.e2e.gunicorn_server import gunicorn, pids_that_answered

LIMIT = 12
REQUESTS = 30


@pytest.fixture
def environment(mongo_uri, database_url, app) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        "THROTTLE_LIMIT": str(LIMIT),
        "THROTTLE_TTL": "60",
        "LOG_LEVEL": "WARNING",
    }


def hammer(url: str) -> Counter:
    """Concurrent requests on fresh connections: while one sync worker is busy, the other accepts."""

    def get(_: int) -> int:
        return requests.get(f"{url}/v1/products", headers={"Connection": "close"}, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        return Counter(pool.map(get, range(REQUESTS)))


def test_limit_is_shared_by_two_workers_through_redis(environment, redis_url, tmp_path):
    redis.Redis.from_url(redis_url).flushdb()
    log = tmp_path / "gunicorn.log"
    with gunicorn({**environment, "REDIS_URL": redis_url}, log, workers=2) as url:
        statuses = hammer(url)
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}
    assert len(pids_that_answered(log, "/v1/products")) == 2


def test_without_redis_each_worker_counts_alone(environment, tmp_path):
    """The control: in-memory counters let two workers together exceed the limit."""
    log = tmp_path / "gunicorn.log"
    with gunicorn(environment, log, workers=2) as url:
        statuses = hammer(url)
    assert len(pids_that_answered(log, "/v1/products")) == 2
    assert statuses[200] > LIMIT
