"""Single-use, expiring tokens sent by email (verification, password reset).

Only a SHA-256 of each token is stored, so a database leak reveals no usable link.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import update

from app.accounts.errors import InvalidToken
from app.accounts.models import OneTimeToken, utcnow
from app.extensions import db

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 (a purpose, not a password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(user_id: uuid.UUID, purpose: str, lifetime_seconds: int) -> str:
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(seconds=lifetime_seconds)
    db.session.add(OneTimeToken(token_hash=_digest(token), user_id=user_id, purpose=purpose, expires_at=expires_at))
    return token


def spend_all(user_id: uuid.UUID, purpose: str) -> None:
    """Void every outstanding token of this purpose (e.g. old reset links after a new password)."""
    db.session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.user_id == user_id, OneTimeToken.purpose == purpose, OneTimeToken.used_at.is_(None))
        .values(used_at=utcnow())
    )


def redeem(token: str, purpose: str) -> uuid.UUID:
    """Mark the token used and return its user; refuses unknown, used, expired or foreign tokens."""
    digest = _digest(token)
    used = db.session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.token_hash == digest,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > utcnow(),
        )
        .values(used_at=utcnow())
        .returning(OneTimeToken.user_id)
    ).scalar_one_or_none()
    if used is None:
        raise InvalidToken("This link is invalid, expired or already used; ask for a new one.")
    return used
