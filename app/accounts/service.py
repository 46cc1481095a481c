"""Account rules: registration, verification, login, passwords, MFA, profiles, roles."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.accounts import emails, mfa, one_time_tokens, passwords
from app.accounts.dto import LoginAttempt, MfaSetup, Session, UserPage
from app.accounts.dto import User as UserDto
from app.accounts.errors import (
    AccountDisabled,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidOtp,
    MfaAlreadyEnabled,
    MfaNotSetUp,
    MfaRequired,
    UserNotFound,
    WeakPassword,
)
from app.accounts.lockout import LoginLockout
from app.accounts.mail import Email, MailDeliveryFailed, Mailer
from app.accounts.models import User, utcnow
from app.accounts.sessions import Sessions
from app.config import AuthSettings
from app.extensions import db

ROLES = ("customer", "admin")
logger = logging.getLogger(__name__)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def to_dto(user: User) -> UserDto:
    return UserDto(
        user_id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        roles=tuple(user.roles),
        is_active=user.is_active,
        email_verified=user.email_verified_at is not None,
        mfa_enabled=user.mfa_enabled_at is not None,
        created_at=_aware(user.created_at),
        updated_at=_aware(user.updated_at),
    )


def _aware(moment: datetime) -> datetime:
    """SQLite (the embedded default) returns naive datetimes; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Accounts:
    def __init__(self, settings: AuthSettings, sessions: Sessions, mailer: Mailer):
        self.settings = settings
        self.sessions = sessions
        self.mailer = mailer
        self.lockout = LoginLockout(settings.login_max_failures, settings.login_lock_seconds)

    # --- registration and email verification -------------------------------------------

    def register(self, email: str, password: str) -> UserDto:
        email = normalise_email(email)
        _check_policy(password, email)
        user = User(email=email, password_hash=passwords.hash_password(password), roles=["customer"])
        db.session.add(user)
        try:
            db.session.flush()
        except IntegrityError:
            db.session.rollback()
            raise EmailTaken(f"An account with {email} already exists.", field="email") from None
        self._send_verification(user)
        db.session.commit()
        return to_dto(user)

    def _send_verification(self, user: User) -> None:
        self._send_link(
            user, one_time_tokens.VERIFY_EMAIL, self.settings.email_token_ttl, "verify-email", emails.verification
        )

    def verify_email(self, token: str) -> UserDto:
        user = db.session.get(User, one_time_tokens.redeem(token, one_time_tokens.VERIFY_EMAIL))
        if user.email_verified_at is None:
            user.email_verified_at = utcnow()
        db.session.commit()
        return to_dto(user)

    def resend_verification(self, email: str) -> None:
        user = self._by_email(email)
        if user is not None and user.email_verified_at is None and user.is_active:
            self._send_verification(user)
            db.session.commit()

    # --- login -------------------------------------------------------------------------

    def login(self, attempt: LoginAttempt) -> Session:
        email = normalise_email(attempt.email)
        self.lockout.check(email, attempt.client_ip)
        user = self._by_email(email)
        if not passwords.verify_password(user.password_hash if user else None, attempt.password):
            self.lockout.record_failure(email, attempt.client_ip)
            raise InvalidCredentials("Wrong email or password.")
        if user.mfa_enabled_at is not None:
            self._check_second_factor(user, attempt)
        if not user.is_active:
            raise AccountDisabled("This account is disabled.")
        if user.email_verified_at is None:
            raise EmailNotVerified("Confirm your email address first (POST /v1/auth/verify-email/resend).")
        if passwords.needs_rehash(user.password_hash):
            user.password_hash = passwords.hash_password(attempt.password)
        self.lockout.clear(email)
        return self.sessions.issue(user)

    def _check_second_factor(self, user: User, attempt: LoginAttempt) -> None:
        if not attempt.otp:
            raise MfaRequired("Send the code from your authenticator app as `otp`.")
        if not self._accept_otp(user, attempt.otp):
            self.lockout.record_failure(user.email, attempt.client_ip)
            raise InvalidOtp("The code is wrong, expired or already used.")

    def _accept_otp(self, user: User, code: str) -> bool:
        step = mfa.matching_step(user.mfa_secret, code, after_step=user.mfa_last_step)
        if step is None:
            return False
        claimed = db.session.execute(
            db.update(User).where(User.id == user.id, User.mfa_last_step < step).values(mfa_last_step=step)
        ).rowcount
        db.session.commit()
        return claimed == 1

    # --- passwords ---------------------------------------------------------------------

    def request_password_reset(self, email: str) -> None:
        user = self._by_email(email)
        if user is None or not user.is_active:
            return
        self._send_link(
            user, one_time_tokens.RESET_PASSWORD, self.settings.reset_token_ttl, "reset-password", emails.password_reset
        )
        db.session.commit()

    def reset_password(self, token: str, new_password: str) -> None:
        user = db.session.get(User, one_time_tokens.redeem(token, one_time_tokens.RESET_PASSWORD))
        _check_policy(new_password, user.email, field="newPassword")
        self._set_password(user, new_password)
        user.email_verified_at = user.email_verified_at or utcnow()  # the reset proved the address
        self.sessions.end_all(user)
        self.lockout.clear(user.email)

    def change_password(self, user_id: str, current_password: str, new_password: str) -> Session:
        user = self._get(user_id)
        if not passwords.verify_password(user.password_hash, current_password):
            raise InvalidCredentials("The current password is wrong.", field="currentPassword")
        _check_policy(new_password, user.email, field="newPassword")
        self._set_password(user, new_password)
        self.sessions.end_all(user)
        return self.sessions.issue(user)

    def _set_password(self, user: User, new_password: str) -> None:
        """A new password also voids every reset link still out there."""
        user.password_hash = passwords.hash_password(new_password)
        one_time_tokens.spend_all(user.id, one_time_tokens.RESET_PASSWORD)

    # --- MFA ---------------------------------------------------------------------------

    def start_mfa_setup(self, user_id: str) -> MfaSetup:
        user = self._get(user_id)
        if user.mfa_enabled_at is not None:
            raise MfaAlreadyEnabled("Two-factor authentication is already on; disable it first.")
        user.mfa_secret = mfa.new_secret()
        db.session.commit()
        return MfaSetup(secret=user.mfa_secret, otpauth_uri=mfa.otpauth_uri(user.mfa_secret, user.email))

    def enable_mfa(self, user_id: str, otp: str) -> UserDto:
        user = self._get(user_id)
        if user.mfa_enabled_at is not None:
            raise MfaAlreadyEnabled("Two-factor authentication is already on.")
        if user.mfa_secret is None:
            raise MfaNotSetUp("Call POST /v1/auth/mfa/setup first.")
        if not self._accept_otp(user, otp):
            raise InvalidOtp("The code is wrong, expired or already used.")
        user.mfa_enabled_at = utcnow()
        db.session.commit()
        return to_dto(user)

    def disable_mfa(self, user_id: str, otp: str | None, password: str | None) -> UserDto:
        user = self._get(user_id)
        if user.mfa_enabled_at is None:
            raise MfaNotSetUp("Two-factor authentication is not on.")
        proved = (otp and self._accept_otp(user, otp)) or (
            password and passwords.verify_password(user.password_hash, password)
        )
        if not proved:
            raise InvalidOtp("Send a current code as `otp` or your password as `password`.")
        user.mfa_secret, user.mfa_enabled_at = None, None
        db.session.commit()
        return to_dto(user)

    def log_out_everywhere(self, user_id: str) -> None:
        self.sessions.end_all(self._get(user_id))

    # --- profiles and administration ---------------------------------------------------

    def get_user(self, user_id: str) -> UserDto:
        return to_dto(self._get(user_id))

    def update_profile(self, user_id: str, changes: dict[str, Any]) -> UserDto:
        user = self._get(user_id)
        if "display_name" in changes:
            user.display_name = changes["display_name"]
        db.session.commit()
        return to_dto(user)

    def list_users(self, page: int, page_size: int) -> UserPage:
        total = db.session.scalar(select(func.count()).select_from(User))
        users = db.session.scalars(
            select(User).order_by(User.created_at, User.id).offset((page - 1) * page_size).limit(page_size)
        )
        return UserPage(items=tuple(to_dto(user) for user in users), total=total)

    def update_user(self, user_id: str, roles: list[str] | None, is_active: bool | None) -> UserDto:
        user = self._get(user_id)
        if roles is not None:
            user.roles = sorted(set(roles) | {"customer"})
        if is_active is not None:
            user.is_active = is_active
        if roles is not None or is_active is False:
            self.sessions.end_all(user)  # new roles take effect at the next login
        db.session.commit()
        return to_dto(user)

    def create_admin(self, email: str, password: str) -> UserDto:
        """Create (or promote) an administrator whose email counts as verified."""
        email = normalise_email(email)
        _check_policy(password, email)
        user = self._by_email(email) or User(email=email)
        user.password_hash = passwords.hash_password(password)
        user.roles = sorted(set(user.roles or []) | {"customer", "admin"})
        user.email_verified_at = user.email_verified_at or utcnow()
        user.is_active = True
        db.session.add(user)
        db.session.commit()
        return to_dto(user)

    # --- helpers -----------------------------------------------------------------------

    def _send_link(
        self, user: User, purpose: str, lifetime: int, page: str, compose: Callable[[str, str, str, int], Email]
    ) -> None:
        """Email `user` a link to the front end's `page` carrying a new single-use token."""
        token = one_time_tokens.issue(user.id, purpose, lifetime)
        self._send(compose(user.email, f"{self.settings.public_base_url}/{page}?token={token}", token, lifetime))

    def _send(self, message: Email) -> None:
        """A mail outage must not fail the request (nor reveal whether an account exists):
        it is logged, and the user can ask for the link again."""
        try:
            self.mailer.send(message)
        except MailDeliveryFailed:
            logger.exception("could not send %r to %s", message.subject, message.to)

    def _by_email(self, email: str) -> User | None:
        return db.session.scalar(select(User).where(User.email == normalise_email(email)))

    def _get(self, user_id: str) -> User:
        try:
            user = db.session.get(User, uuid.UUID(str(user_id)))
        except ValueError:
            user = None
        if user is None:
            raise UserNotFound(f"No user {user_id!r}.", userId=str(user_id))
        return user


def _check_policy(password: str, email: str, field: str = "password") -> None:
    problems = passwords.policy_problems(password, email)
    if problems:
        raise WeakPassword("The password does not meet the policy.", errors={field: problems})
