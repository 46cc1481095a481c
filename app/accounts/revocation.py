"""Where revoked access tokens and session generations live: Redis when REDIS_URL is set
(shared by every worker and instance, entries expire with the tokens), else PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from redis import Redis
from sqlalchemy import delete, select

from app.accounts.models import RevokedToken, User, utcnow
from app.extensions import db


class RevocationStore(Protocol):
    """Revoked ids are token ids (`jti`) or login families (`family:<id>`)."""

    def revoke(self, revoked_id: str, expires_at: datetime) -> None: ...

    def state(self, ids: list[str], user_id: uuid.UUID | None) -> tuple[bool, int | None]:
        """Whether any of `ids` is revoked, and the user's session generation (None for no
        user, or an unknown one), in one round trip: it is asked on every authenticated request."""
        ...

    def set_generation(self, user_id: uuid.UUID, generation: int) -> None: ...


def _generation_in_database(user_id: uuid.UUID) -> int | None:
    return db.session.scalar(select(User.session_generation).where(User.id == user_id))


class SqlRevocations:
    def revoke(self, revoked_id: str, expires_at: datetime) -> None:
        if db.session.get(RevokedToken, revoked_id) is None:
            db.session.add(RevokedToken(jti=revoked_id, expires_at=expires_at))
        db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
        db.session.commit()

    def state(self, ids: list[str], user_id: uuid.UUID | None) -> tuple[bool, int | None]:
        revoked = select(RevokedToken.jti).where(RevokedToken.jti.in_(ids)).exists()
        if user_id is None:
            return bool(db.session.scalar(select(revoked))), None
        generation = select(User.session_generation).where(User.id == user_id).scalar_subquery()
        is_revoked, current = db.session.execute(select(revoked, generation)).one()
        return bool(is_revoked), current

    def set_generation(self, user_id: uuid.UUID, generation: int) -> None:
        """Nothing to do: the users table is the source."""


GENERATION_TTL = 7 * 24 * 3600


class RedisRevocations:
    def __init__(self, client: Redis):
        self.client = client

    def revoke(self, revoked_id: str, expires_at: datetime) -> None:
        seconds = max(int((expires_at - utcnow()).total_seconds()) + 1, 1)
        self.client.set(f"storefront:revoked:{revoked_id}", 1, ex=seconds)

    def state(self, ids: list[str], user_id: uuid.UUID | None) -> tuple[bool, int | None]:
        pipeline = self.client.pipeline(transaction=False)
        pipeline.exists(*(f"storefront:revoked:{revoked_id}" for revoked_id in ids))
        if user_id is not None:
            pipeline.get(f"storefront:generation:{user_id}")
        revoked, *cached = pipeline.execute()
        if user_id is None:
            return bool(revoked), None
        if cached[0] is not None:
            return bool(revoked), int(cached[0])
        return bool(revoked), self._generation(user_id)

    def _generation(self, user_id: uuid.UUID) -> int | None:
        generation = _generation_in_database(user_id)
        if generation is not None:
            # NX: a logout-all that committed meanwhile has already stored the newer value.
            self.client.set(f"storefront:generation:{user_id}", generation, ex=GENERATION_TTL, nx=True)
        return generation

    def set_generation(self, user_id: uuid.UUID, generation: int) -> None:
        self.client.set(f"storefront:generation:{user_id}", generation, ex=GENERATION_TTL)


def build_store(redis_url: str | None) -> RevocationStore:
    if redis_url:
        return RedisRevocations(Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2))
    return SqlRevocations()
