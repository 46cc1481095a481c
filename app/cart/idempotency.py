"""Idempotency keys: a repeated request with the same key and body gets the first answer.

The key is claimed (inserted) before the work starts, in a transaction of its own that
commits first, so two concurrent requests with one key cannot both run; a failed request
gives its claim up so that the client may retry. A claim is one statement: an insert that
also takes over a key past its lifetime (`ON CONFLICT ... DO UPDATE ... WHERE expired`), and
reads the stored answer only when the key is taken. Expired keys are deleted by `flask carts
sweep` (sweep.py), not on the request path.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite

from app.cart.dto import StoredResponse
from app.cart.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from app.cart.models import IdempotencyKey, utcnow
from app.extensions import db
from app.transactions import unit_of_work

KEY_LIFETIME = timedelta(hours=24)


def claim(owner_id: str, key: str, request_hash: str) -> StoredResponse | None:
    """The stored answer for a repeat; None when the caller now owns the key and must do the work."""
    with unit_of_work():
        if _insert_or_take_over_expired(owner_id, key, request_hash):
            return None
        stored = db.session.get(IdempotencyKey, (owner_id, key))
        if stored is None:  # given up by a failed request between our insert and read
            first = None
        elif stored.request_hash != request_hash:
            raise IdempotencyKeyReused("This Idempotency-Key was used for a different request; use a new key.")
        elif stored.response_status is None:
            raise IdempotencyKeyInUse("A request with this Idempotency-Key is still running; retry shortly.")
        else:
            first = StoredResponse(status=stored.response_status, body=stored.response_body, etag=stored.response_etag)
    return first if first is not None else claim(owner_id, key, request_hash)


def _insert_or_take_over_expired(owner_id: str, key: str, request_hash: str) -> bool:
    """Whether the key is now ours: inserted, or taken over from a request past its lifetime.

    On PostgreSQL an insert that meets a row not yet committed waits for that transaction, so
    two claims of one key never both win."""
    now = utcnow()
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    claimed = {"request_hash": request_hash, "expires_at": now + KEY_LIFETIME, "created_at": now}
    statement = dialect.insert(IdempotencyKey).values(owner_id=owner_id, key=key, **claimed)
    statement = statement.on_conflict_do_update(
        index_elements=[IdempotencyKey.owner_id, IdempotencyKey.key],
        set_={**claimed, "response_status": None, "response_body": None, "response_etag": None},
        where=IdempotencyKey.expires_at < now,
    )
    return db.session.execute(statement).rowcount == 1


def forget_expired(now: datetime) -> int:
    """Delete the keys past their lifetime (the sweeper's job); how many there were."""
    with unit_of_work():
        return db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < now)).rowcount


def complete(owner_id: str, key: str, response: StoredResponse) -> None:
    with unit_of_work():
        db.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.owner_id == owner_id, IdempotencyKey.key == key)
            .values(response_status=response.status, response_body=response.body, response_etag=response.etag)
        )


def give_up(owner_id: str, key: str) -> None:
    with unit_of_work():
        db.session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.owner_id == owner_id,
                IdempotencyKey.key == key,
                IdempotencyKey.response_status.is_(None),
            )
        )
