"""Where revoked access tokens and session generations live: PostgreSQL always, and Redis in
front of it when REDIS_URL is set (shared by every worker and instance, entries expire with
the tokens), so that the check made on every request costs no SQL.

A revocation is written in two steps: `record` adds it to the caller's unit of work, and
`publish` tells Redis once that unit of work has committed (never a revocation that could
still roll back). `revoke` does both, in a unit of work of its own. A generation is only
ever published, after the commit that raised it."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

import pybreaker
from redis import Redis, RedisError
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.accounts.models import RevokedToken, User, utcnow
from app.extensions import db
from app.resilience import new_breaker
from app.transactions import unit_of_work

logger = logging.getLogger(__name__)
R = TypeVar("R")


class RevocationStore(Protocol):
    """Revoked ids are token ids (`jti`) or login families (`family:<id>`)."""

    def record(self, revoked_id: str, expires_at: datetime) -> None:
        """Write the revocation to PostgreSQL, in the caller's (write) unit of work."""
        ...

    def publish(self, revoked_id: str, expires_at: datetime) -> None:
        """Pass a recorded revocation on to Redis, once its unit of work has committed."""
        ...

    def revoke(self, revoked_id: str, expires_at: datetime) -> None:
        """Record and publish, in a unit of work of its own."""
        ...

    def state(self, ids: list[str], user_id: uuid.UUID | None) -> tuple[bool, int | None]:
        """Whether any of `ids` is revoked, and the user's session generation (None for no
        user, or an unknown one), in one round trip: it is asked on every authenticated request."""
        ...

    def set_generation(self, user_id: uuid.UUID, generation: int) -> None: ...


def _generation_in_database(user_id: uuid.UUID) -> int | None:
    with unit_of_work(write=False):
        return db.session.scalar(select(User.session_generation).where(User.id == user_id))


class _RecordThenPublish:
    def record(self, revoked_id: str, expires_at: datetime) -> None:
        raise NotImplementedError

    def publish(self, revoked_id: str, expires_at: datetime) -> None:
        raise NotImplementedError

    def revoke(self, revoked_id: str, expires_at: datetime) -> None:
        with unit_of_work():
            self.record(revoked_id, expires_at)
        self.publish(revoked_id, expires_at)


class SqlRevocations(_RecordThenPublish):
    def record(self, revoked_id: str, expires_at: datetime) -> None:
        # One statement, so two logouts with one token at once both succeed (a read, then an
        # insert, let the second fail on the primary key).
        dialect_insert = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        db.session.execute(
            dialect_insert(RevokedToken)
            .values(jti=revoked_id, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=[RevokedToken.jti])
        )
        db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))

    def publish(self, revoked_id: str, expires_at: datetime) -> None:
        """Nothing to do: the table is the source."""

    def state(self, ids: list[str], user_id: uuid.UUID | None) -> tuple[bool, int | None]:
        """A read unit of work of its own: asked by the token check, before any other one."""
        revoked = select(RevokedToken.jti).where(RevokedToken.jti.in_(ids)).exists()
        with unit_of_work(write=False):
            if user_id is None:
                return bool(db.session.scalar(select(revoked))), None
            generation = select(User.session_generation).where(User.id == user_id).scalar_subquery()
            is_revoked, current = db.session.execute(select(revoked, generation)).one()
            return bool(is_revoked), current

    def set_generation(self, user_id: uuid.UUID, generation: int) -> None:
        """Nothing to do: the users table is the source."""


GENERATION_TTL = 7 * 24 * 3600


# The per-request token check in one Redis command: is any of the token's ids revoked, and the
# user's cached session generation (KEYS: the revoked-id keys, then the generation key when
# ARGV[1] is "1"). One script call rather than a pipeline of EXISTS and GET.
REVOCATION_CHECK_LUA = """
local ids = #KEYS
if ARGV[1] == "1" then ids = ids - 1 end
local revoked = 0
if ids > 0 then revoked = redis.call("EXISTS", unpack(KEYS, 1, ids)) end
local generation = false
if ARGV[1] == "1" then generation = redis.call("GET", KEYS[#KEYS]) end
return {revoked, generation}
"""


class RedisRevocations:
    def __init__(self, client: Redis):
        self.client = client
        self.token_state = client.register_script(REVOCATION_CHECK_LUA)

    def revoke(self, revoked_id: str, expires_at: datetime) -> None:
        seconds = max(int((expires_at - utcnow()).total_seconds()) + 1, 1)
        self.client.set(f"storefront:revoked:{revoked_id}", 1, ex=seconds)

    def state(self, ids: list[str], user_id: uuid.UUID | None) -> tuple[bool, int | None]:
        keys = [f"storefront:revoked:{revoked_id}" for revoked_id in ids]
        if user_id is not None:
            keys.append(f"storefront:generation:{user_id}")
        revoked, cached = self.token_state(keys=keys, args=["0" if user_id is None else "1"])
        if user_id is None:
            return bool(revoked), None
        if cached is not None:
            return bool(revoked), int(cached)
        return bool(revoked), self._generation(user_id)

    def _generation(self, user_id: uuid.UUID) -> int | None:
        generation = _generation_in_database(user_id)
        if generation is not None:
            # NX: a logout-all that committed meanwhile has already stored the newer value.
            self.client.set(f"storefront:generation:{user_id}", generation, ex=GENERATION_TTL, nx=True)
        return generation

    def set_generation(self, user_id: uuid.UUID, generation: int) -> None:
        self.client.set(f"storefront:generation:{user_id}", generation, ex=GENERATION_TTL)

    def forget_generation(self, user_id: uuid.UUID) -> None:
        """Drop the cached generation: the next check reads it from the users table."""
        self.client.delete(f"storefront:generation:{user_id}")


class RedisBackedBySql(_RecordThenPublish):
    """Redis for the checks, PostgreSQL as the record, so that a Redis outage neither fails
    requests nor forgets a logout.

    Every revocation is written to PostgreSQL (committed), then to Redis. While Redis does not answer,
    checks read PostgreSQL; Redis calls go through a circuit breaker, so that during an
    outage each request does not first wait for Redis to time out. A write that missed Redis
    is replayed by this process before its next Redis call succeeds; a missed generation is
    replayed by dropping Redis's copy (never by writing the number, which another process may
    have raised since).
    """

    def __init__(self, redis: RedisRevocations, sql: SqlRevocations, breaker: pybreaker.CircuitBreaker):
        self.redis, self.sql, self.breaker = redis, sql, breaker
        self._missed: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def record(self, revoked_id: str, expires_at: datetime) -> None:
        self.sql.record(revoked_id, expires_at)

    def publish(self, revoked_id: str, expires_at: datetime) -> None:
        self._write(lambda: self.redis.revoke(revoked_id, expires_at))

    def set_generation(self, user_id: uuid.UUID, generation: int) -> None:
        self._write(
            lambda: self.redis.set_generation(user_id, generation), lambda: self.redis.forget_generation(user_id)
        )

    def state(self, ids: list[str], user_id: uuid.UUID | None) -> tuple[bool, int | None]:
        try:
            return self.breaker.call(self._after_replay, lambda: self.redis.state(ids, user_id))
        except pybreaker.CircuitBreakerError:
            return self.sql.state(ids, user_id)
        except RedisError as error:
            logger.warning("Redis unavailable, token checked in the database: %s", error)
            return self.sql.state(ids, user_id)

    def _write(self, write: Callable[[], None], replay: Callable[[], None] | None = None) -> None:
        try:
            self.breaker.call(self._after_replay, write)
        except (RedisError, pybreaker.CircuitBreakerError) as error:
            logger.warning("Redis unavailable, revocation kept in the database until it answers: %s", error)
            with self._lock:
                self._missed.append(replay or write)

    def _after_replay(self, call: Callable[[], R]) -> R:
        self._replay()
        return call()

    def _replay(self) -> None:
        with self._lock:
            while self._missed:
                self._missed[0]()  # a RedisError leaves it queued
                self._missed.pop(0)


def build_store(
    redis_url: str | None, *, timeout: float, breaker_failures: int, breaker_reset_seconds: int
) -> RevocationStore:
    if redis_url:
        client = Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        breaker = new_breaker(
            "redis-revocations", failures=breaker_failures, reset_seconds=breaker_reset_seconds, counts=(RedisError,)
        )
        return RedisBackedBySql(RedisRevocations(client), SqlRevocations(), breaker)
    return SqlRevocations()
