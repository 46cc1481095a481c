"""Fixtures of the end-to-end tests that run the split deployment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import TEST_SECRET
from tests.redis_server import RedisServer


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def split_environment(mongo_uri, database_url, mail_dir, app, private_redis) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": database_url,
        "REDIS_URL": private_redis.url,
        "JWT_SECRET": TEST_SECRET,
        "MAIL_BACKEND": "file",
        "MAIL_FILE_DIR": str(mail_dir),
        "THROTTLE_LIMIT": "100000",
        "AUTH_RATE_LIMIT": "1000 per minute",
        "CATALOG_CACHE_TTL": "0",
        "BREAKER_FAILURES": "3",
        "BREAKER_RESET_SECONDS": "1",
        "SERVICE_RETRIES": "1",
        "LOG_LEVEL": "WARNING",
    }
