"""Access and refresh tokens: issuing, rotation with reuse detection, logout.

A login starts a token *family*. Each refresh spends the presented refresh token and
issues a new pair in the same family; presenting a spent token again means it was stolen
(or replayed), so the whole family is revoked. Access tokens carry the user's session
generation: bumping it (logout-all, password change) invalidates every older token.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import update

from app.accounts.dto import Session, TokenClaims
from app.accounts.errors import RefreshTokenReused, SessionRevoked
from app.accounts.models import RefreshToken, User, utcnow
from app.accounts.revocation import RevocationStore
from app.config import AuthSettings
from app.extensions import db
from app.transactions import unit_of_work

GUEST_PREFIX = "guest:"
Revocation = tuple[str, datetime]  # a revoked id and when it may be forgotten


class Sessions:
    def __init__(self, settings: AuthSettings, store: RevocationStore):
        self.settings = settings
        self.store = store

    def issue(self, user: User, family_id: str | None = None) -> Session:
        """A new token pair; its refresh token is written in the caller's unit of work."""
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

    def refresh(self, claims: TokenClaims) -> Session:
        # Both refusals after the spend commit first and raise after the unit of work: a
        # replay's family revocation, and the spend of a token whose session has ended, must
        # outlast the error (a rolled-back spend would let the token be presented again).
        reused: Revocation | None = None
        session: Session | None = None
        with unit_of_work():
            row = db.session.get(RefreshToken, claims.token_id)
            if row is None or row.revoked_at is not None or str(row.user_id) != claims.subject:
                raise SessionRevoked("This refresh token has been revoked; log in again.")
            spent = db.session.execute(
                update(RefreshToken)
                .where(RefreshToken.jti == row.jti, RefreshToken.used_at.is_(None))
                .values(used_at=utcnow())
            ).rowcount
            if spent == 0:
                reused = self._revoke_family(row.family_id)
            else:
                user = db.session.get(User, row.user_id)
                if user is not None and user.is_active and claims.generation == user.session_generation:
                    session = self.issue(user, row.family_id)
        if reused is not None:
            self.store.publish(*reused)
            raise RefreshTokenReused("This refresh token was already used; every session of this login is revoked.")
        if session is None:
            raise SessionRevoked("This session has ended; log in again.")
        return session

    def _revoke_family(self, family_id: str) -> Revocation:
        """End one login, in the caller's unit of work: its refresh tokens, and every access
        token issued to it (the revocation to publish once committed)."""
        revocation = (f"family:{family_id}", utcnow() + timedelta(seconds=self.settings.access_ttl))
        self.store.record(*revocation)
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return revocation

    def logout(self, claims: TokenClaims) -> None:
        revocations = [(claims.token_id, datetime.fromtimestamp(claims.expires_at, UTC))]
        with unit_of_work():
            self.store.record(*revocations[0])
            if claims.family:
                revocations.append(self._revoke_family(claims.family))
        for revocation in revocations:
            self.store.publish(*revocation)

    def end_all(self, user: User) -> int:
        """Invalidate every token of the user issued so far, in the caller's unit of work
        (the user's row locked); the new generation, for `publish_generation` after the commit."""
        user.session_generation += 1
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return user.session_generation

    def publish_generation(self, user_id: uuid.UUID, generation: int) -> None:
        """After the commit of `end_all`: published earlier, a rollback would leave Redis with
        a generation the database never reached, refusing every token until it expires."""
        self.store.set_generation(user_id, generation)

    def is_revoked(self, claims: TokenClaims) -> bool:
        revoked_ids = [claims.token_id] + ([f"family:{claims.family}"] if claims.family else [])
        subject = claims.subject
        user_id = None
        if not subject.startswith(GUEST_PREFIX):
            try:
                user_id = uuid.UUID(subject)
            except ValueError:
                return True
        revoked, generation = self.store.state(revoked_ids, user_id)
        if revoked or user_id is None:
            return revoked
        # A user's token names the user's current generation. No such user (generation None), or
        # no claim, is refused: compared as they are, None == None would let either through.
        return generation is None or claims.generation is None or generation != claims.generation
