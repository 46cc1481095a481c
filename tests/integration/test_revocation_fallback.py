"""Token revocation with Redis in front of PostgreSQL: a Redis outage neither fails the
check made on every request nor lets a logout made during the outage be forgotten."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from app.accounts import revocation
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


def test_checks_fall_back_to_the_database_and_missed_revocations_reach_redis_later(app, redis_server, caplog):
    store = build_store(redis_server.url, **BOUNDS)
    with app.app_context(), caplog.at_level(logging.WARNING, logger="app.accounts.revocation"):
        store.revoke("jti-before", in_five_minutes())
        assert store.state(["jti-before"], None) == (True, None)

        redis_server.stop()
        store.revoke("jti-during", in_five_minutes())  # no error: PostgreSQL holds it
        assert store.state(["jti-during"], None) == (True, None)
        assert store.state(["jti-before"], None) == (True, None)
        assert store.state(["jti-other"], None) == (False, None)
        warnings = [record.getMessage() for record in caplog.records if record.name == "app.accounts.revocation"]
        assert any(
            re.fullmatch(
                r"Redis unavailable, token checked in the database: "
                r"Error \d+ connecting to [\w.]+:\d+\. Connection refused\.",
                warning,
            )
            for warning in warnings
        ), warnings

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


def test_once_redis_fails_checks_go_straight_to_the_database_until_the_breaker_probes(app, redis_server, token):
    token("customer", subject="breaker-user")
    store = build_store(redis_server.url, timeout=0.3, breaker_failures=1, breaker_reset_seconds=60)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "breaker-user@example.test"))
        user.session_generation = 3
        db.session.commit()
        store.revoke("jti-1", in_five_minutes())
        redis_server.stop()
        assert store.state(["jti-1"], None) == (True, None)  # the failure that opens the breaker

        asked = []
        store.redis.state = lambda *args: asked.append(args)  # Redis must not be asked while open
        assert store.state(["jti-1"], None) == (True, None)
        assert store.state(["jti-2"], None) == (False, None)
        assert store.state(["jti-2"], user.id) == (False, 3)  # the user's generation too
    assert asked == []


def test_a_revocation_missed_during_an_outage_reaches_other_instances_with_the_next_write(app, redis_server, caplog):
    store, other = build_store(redis_server.url, **BOUNDS), build_store(redis_server.url, **BOUNDS)
    with app.app_context(), caplog.at_level(logging.WARNING, logger="app.accounts.revocation"):
        redis_server.stop()
        store.revoke("jti-during", in_five_minutes())
        redis_server.start()
        store.revoke("jti-after", in_five_minutes())  # this instance's next Redis call: a write

        assert other.state(["jti-during"], None) == (True, None)  # another instance reads only Redis
    (warning,) = [record.getMessage() for record in caplog.records if record.name == "app.accounts.revocation"]
    assert re.fullmatch(
        r"Redis unavailable, revocation kept in the database until it answers: "
        r"Error \d+ connecting to [\w.]+:\d+\. Connection refused\.",
        warning,
    )


def test_a_generation_missed_during_an_outage_never_overwrites_a_newer_one(app, redis_server, token):
    """The missed write is replayed by dropping Redis's copy: another instance may have raised
    the generation since Redis came back, and a lower one would let ended sessions in again."""
    token("customer", subject="generation-user")
    store, other = build_store(redis_server.url, **BOUNDS), build_store(redis_server.url, **BOUNDS)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "generation-user@example.test"))
        user_id = user.id
        redis_server.stop()
        user.session_generation += 1  # a logout-all while Redis is down
        db.session.commit()
        store.set_generation(user_id, user.session_generation)
        redis_server.start()
        user.session_generation += 1  # another, at another instance, once Redis is back
        db.session.commit()
        other.set_generation(user_id, user.session_generation)
        newest = user.session_generation

        assert store.state(["any"], user_id) == (False, newest)  # this instance replays what it missed
        assert other.state(["any"], user_id) == (False, newest)


@pytest.mark.parametrize("lifetime", [10.5, 0.5])
def test_a_revoked_id_is_kept_in_redis_as_long_as_its_token_lives_and_at_most_a_second_longer(
    app, redis_server, lifetime
):
    store = build_store(redis_server.url, **BOUNDS)
    expires_at = utcnow() + timedelta(seconds=lifetime)
    with app.app_context():
        store.revoke("jti-1", expires_at)

    kept = redis.Redis.from_url(redis_server.url).pttl("storefront:revoked:jti-1")
    token_left = (expires_at - utcnow()).total_seconds() * 1000
    assert token_left <= kept <= token_left + 1000 + 50  # 50 ms for the calls in between


def test_a_revoked_token_is_refused_when_its_users_generation_is_not_cached(app, redis_server, token):
    token("customer", subject="uncached-user")
    store = build_store(redis_server.url, **BOUNDS)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "uncached-user@example.test"))
        store.revoke("jti-1", in_five_minutes())

        assert store.state(["jti-1"], user.id) == (True, user.session_generation)  # generation read from SQL


def test_a_generation_read_from_the_database_never_overwrites_a_newer_one_cached_meanwhile(
    app, redis_server, token, monkeypatch
):
    """A check that missed the cache reads the generation, then caches it unless a logout-all
    committed and published a newer one in between: that one stays."""
    token("customer", subject="race-user")
    store, other = build_store(redis_server.url, **BOUNDS), build_store(redis_server.url, **BOUNDS)
    read_from_database = revocation._generation_in_database

    def read_then_a_logout_all_elsewhere(user_id):
        generation = read_from_database(user_id)
        user = db.session.get(User, user_id)
        user.session_generation = generation + 1
        db.session.commit()
        other.set_generation(user_id, generation + 1)
        return generation

    monkeypatch.setattr(revocation, "_generation_in_database", read_then_a_logout_all_elsewhere)
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == "race-user@example.test"))
        assert store.state(["any"], user_id) == (False, 0)  # what it read

        assert other.state(["any"], user_id) == (False, 1)
        assert store.state(["any"], user_id) == (False, 1)
    assert redis.Redis.from_url(redis_server.url).get(f"storefront:generation:{user_id}") == b"1"
