"""Idempotency keys: a repeated request with the same key and body gets the first answer.

The key is claimed (inserted) before the work starts, so two concurrent requests with one
key cannot both run; a failed request gives its claim up so that the client may retry.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from app.cart.dto import StoredResponse
from app.cart.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from app.cart.models import IdempotencyKey, utcnow
from app.extensions import db
from app.transactions import unit_of_work

KEY_LIFETIME = timedelta(hours=24)


def claim(owner_id: str, key: str, request_hash: str) -> StoredResponse | None:
    """The stored answer for a repeat; None when the caller now owns the key and must do the work."""
    with unit_of_work():
        db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < utcnow()))
        try:
            with db.session.begin_nested():
                db.session.add(
                    IdempotencyKey(
                        owner_id=owner_id, key=key, request_hash=request_hash, expires_at=utcnow() + KEY_LIFETIME
                    )
                )
            return None
        except IntegrityError:
            stored = db.session.get(IdempotencyKey, (owner_id, key))
            if stored is None:  # given up by a failed request between our insert and read
                first = None
            elif stored.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different request; use a new key."
                ) from None
            elif stored.response_status is None:
                raise IdempotencyKeyInUse(
                    "A request with this Idempotency-Key is still running; retry shortly."
                ) from None
            else:
                first = StoredResponse(
                    status=stored.response_status, body=stored.response_body, etag=stored.response_etag
                )
    return first if first is not None else claim(owner_id, key, request_hash)


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
