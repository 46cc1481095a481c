"""Access and refresh tokens: issuing, rotation with reuse detection, logout.

A login starts a token *family*. Each refresh spends the presented refresh token and
issues a new pair in the same family; presenting a spent token again means it was stolen
(or replayed), so the whole family is revoked. Access tokens carry the user's session
generation: bumping it (logout-all, password change) invalidates every older token.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import update

from app.accounts.dto import Session
from app.accounts.errors import RefreshTokenReused, SessionRevoked
from app.accounts.models import RefreshToken, User, utcnow
from app.accounts.revocation import RevocationStore
from app.config import AuthSettings
from app.extensions import db

GUEST_PREFIX = "guest:"


class Sessions:
    def __init__(self, settings: AuthSettings, store: RevocationStore):
        self.settings = settings
        self.store = store

    def issue(self, user: User, family_id: str | None = None) -> Session:
        family = family_id or str(uuid.uuid4())
        claims = {"roles": list(user.roles), "userId": str(user.id), "gen": user.session_generation, "fam": family}
        access = create_access_token(
            identity=str(user.id), additional_claims=claims, expires_delta=timedelta(seconds=self.settings.access_ttl)
        )
        refresh_jti = str(uuid.uuid4())
        refresh_lifetime = timedelta(seconds=self.settings.refresh_ttl)
        refresh = create_refresh_token(
            identity=str(user.id),
            additional_claims={"jti": refresh_jti, "fam": family, "gen": user.session_generation},
            expires_delta=refresh_lifetime,
        )
        db.session.add(
            RefreshToken(jti=refresh_jti, family_id=family, user_id=user.id, expires_at=utcnow() + refresh_lifetime)
        )
        db.session.commit()
        return Session(
            access_token=access, refresh_token=refresh, user_id=str(user.id), expires_in=self.settings.access_ttl
        )

    def issue_guest(self) -> Session:
        subject = f"{GUEST_PREFIX}{uuid.uuid4()}"
        access = create_access_token(
            identity=subject,
            additional_claims={"roles": ["guest"], "userId": subject},
            expires_delta=timedelta(seconds=self.settings.access_ttl),
        )
        return Session(access_token=access, refresh_token=None, user_id=subject, expires_in=self.settings.access_ttl)

    def refresh(self, claims: dict[str, Any]) -> Session:
        row = db.session.get(RefreshToken, claims["jti"])
        if row is None or row.revoked_at is not None or str(row.user_id) != claims["sub"]:
            raise SessionRevoked("This refresh token has been revoked; log in again.")
        spent = db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == row.jti, RefreshToken.used_at.is_(None))
            .values(used_at=utcnow())
        ).rowcount
        if spent == 0:
            self.revoke_family(row.family_id)
            raise RefreshTokenReused("This refresh token was already used; every session of this login is revoked.")
        user = db.session.get(User, row.user_id)
        if user is None or not user.is_active or claims.get("gen") != user.session_generation:
            db.session.commit()
            raise SessionRevoked("This session has ended; log in again.")
        return self.issue(user, row.family_id)

    def revoke_family(self, family_id: str) -> None:
        """End one login: its refresh tokens, and every access token issued to it."""
        self.store.revoke(f"family:{family_id}", utcnow() + timedelta(seconds=self.settings.access_ttl))
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        db.session.commit()

    def logout(self, claims: dict[str, Any]) -> None:
        self.store.revoke(claims["jti"], datetime.fromtimestamp(claims["exp"], UTC))
        if claims.get("fam"):
            self.revoke_family(claims["fam"])

    def end_all(self, user: User) -> None:
        """Invalidate every token of the user issued so far (the caller commits)."""
        user.session_generation += 1
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        db.session.commit()
        self.store.set_generation(user.id, user.session_generation)

    def is_revoked(self, claims: dict[str, Any]) -> bool:
        revoked_ids = [claims["jti"]] + ([f"family:{claims['fam']}"] if claims.get("fam") else [])
        subject = claims["sub"]
        user_id = None
        if not subject.startswith(GUEST_PREFIX):
            try:
                user_id = uuid.UUID(subject)
            except ValueError:
                return True
        revoked, generation = self.store.state(revoked_ids, user_id)
        return revoked or (user_id is not None and generation != claims.get("gen"))
