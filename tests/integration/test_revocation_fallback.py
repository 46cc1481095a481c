"""Token revocation with Redis in front of PostgreSQL: a Redis outage neither fails the
check made on every request nor lets a logout made during the outage be forgotten."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from app.accounts.models import User, utcnow
from app.accounts.revocation import GENERATION_TTL, build_store
from app.extensions import db
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


BOUNDS = {"timeout": 0.3, "breaker_failures": 5, "breaker_reset_seconds": 1}


def in_five_minutes():
    return utcnow() + timedelta(minutes=5)


def test_checks_fall_back_to_the_database_and_missed_revocations_reach_redis_later(app, redis_server):
    store = build_store(redis_server.url, **BOUNDS)
    with app.app_context():
        store.revoke("jti-before", in_five_minutes())
        assert store.state(["jti-before"], None) == (True, None)

        redis_server.stop()
        store.revoke("jti-during", in_five_minutes())  # no error: PostgreSQL holds it
        assert store.state(["jti-during"], None) == (True, None)
        assert store.state(["jti-before"], None) == (True, None)
        assert store.state(["jti-other"], None) == (False, None)

        redis_server.start()  # a fresh, empty Redis
        assert store.state(["jti-during"], None) == (True, None)
        assert store.state(["jti-other"], None) == (False, None)
    assert redis.Redis.from_url(redis_server.url).exists("storefront:revoked:jti-during") == 1


def test_a_generation_raised_during_an_outage_is_not_undone_by_a_stale_copy(app, redis_server, token):
    token("customer", subject="generation-user")
    store = build_store(redis_server.url, **BOUNDS)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "generation-user@example.test"))
        user_id = user.id
        assert store.state(["any"], user_id) == (False, user.session_generation)  # now cached in Redis

        redis_server.stop()
        user.session_generation += 1  # a logout-all while Redis is down
        db.session.commit()
        store.set_generation(user_id, user.session_generation)
        raised = user.session_generation
        assert store.state(["any"], user_id) == (False, raised)

        redis_server.start()
        cached = redis.Redis.from_url(redis_server.url)
        cached.set(f"storefront:generation:{user_id}", raised - 1)  # stale copy
        assert store.state(["any"], user_id) == (False, raised)
        assert cached.get(f"storefront:generation:{user_id}") == str(raised).encode()  # the copy is right again


def test_a_cached_generation_expires_with_the_longest_session(app, redis_server, token):
    """Redis keeps a user's generation a week at most (a session's life), then reads it again,
    so that the cache does not grow with every user who ever signed in."""
    token("customer", subject="ttl-user")
    store = build_store(redis_server.url, **BOUNDS)
    cached = redis.Redis.from_url(redis_server.url)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "ttl-user@example.test"))
        store.state(["any"], user.id)  # cached on the first check
        assert 0 < cached.ttl(f"storefront:generation:{user.id}") <= GENERATION_TTL
        store.set_generation(user.id, user.session_generation + 1)  # a logout-all
    assert cached.get(f"storefront:generation:{user.id}") == str(user.session_generation + 1).encode()
    assert 0 < cached.ttl(f"storefront:generation:{user.id}") <= GENERATION_TTL


def test_once_redis_fails_checks_go_straight_to_the_database_until_the_breaker_probes(app, redis_server):
    store = build_store(redis_server.url, timeout=0.3, breaker_failures=1, breaker_reset_seconds=60)
    with app.app_context():
        store.revoke("jti-1", in_five_minutes())
        redis_server.stop()
        assert store.state(["jti-1"], None) == (True, None)  # the failure that opens the breaker

        asked = []
        store.redis.state = lambda *args: asked.append(args)  # Redis must not be asked while open
        assert store.state(["jti-1"], None) == (True, None)
        assert store.state(["jti-2"], None) == (False, None)
    assert asked == []
