"""The accounts module's public port: the only thing other modules may import from it.

Users, credentials, roles, sessions (JWT access + refresh tokens) and MFA. No password
hash or MFA secret ever crosses this boundary.
"""

from __future__ import annotations

from flask import current_app

from app.accounts.database import translate_database_errors as _translate_database_errors
from app.accounts.dto import LoginAttempt, MfaSetup, Session, TokenClaims, User, UserPage
from app.accounts.errors import (
    AccountDisabled,
    AccountsError,
    AccountsUnavailable,
    EmailNotVerified,
    EmailTaken,
    InvalidCredentials,
    InvalidOtp,
    InvalidToken,
    LoginLocked,
    MfaAlreadyEnabled,
    MfaNotSetUp,
    MfaRequired,
    RefreshTokenReused,
    SessionRevoked,
    UserNotFound,
    WeakPassword,
)
from app.accounts.service import ROLES
from app.extensions import database_answers as _database_answers
from app.extensions import db as _db
from app.ports import Port as _Port

__all__ = [
    "ROLES",
    "AccountDisabled",
    "AccountsError",
    "AccountsUnavailable",
    "EmailNotVerified",
    "EmailTaken",
    "InvalidCredentials",
    "InvalidOtp",
    "InvalidToken",
    "LoginAttempt",
    "LoginLocked",
    "MfaAlreadyEnabled",
    "MfaNotSetUp",
    "MfaRequired",
    "MfaSetup",
    "RefreshTokenReused",
    "Session",
    "SessionRevoked",
    "TokenClaims",
    "User",
    "UserNotFound",
    "UserPage",
    "WeakPassword",
    "change_password",
    "create_admin",
    "disable_mfa",
    "enable_mfa",
    "end_all_sessions",
    "get_user",
    "is_available",
    "is_token_revoked",
    "list_users",
    "log_in",
    "log_out",
    "refresh_session",
    "register_user",
    "request_password_reset",
    "resend_verification",
    "reset_password",
    "start_guest_session",
    "start_mfa_setup",
    "store_name",
    "update_profile",
    "update_user",
    "verify_email",
]

port = _Port("accounts", unavailable=AccountsUnavailable)


def _accounts():
    return current_app.extensions["accounts"]


@port.expose
@_translate_database_errors
def register_user(*, email: str, password: str) -> User:
    """Create a customer account and email a verification link."""
    return _accounts().register(email, password)


@port.expose
@_translate_database_errors
def verify_email(*, token: str) -> User:
    return _accounts().verify_email(token)


@port.expose
@_translate_database_errors
def resend_verification(*, email: str) -> None:
    """Send a new link if the account exists and is unverified; silent otherwise."""
    _accounts().resend_verification(email)


@port.expose
@_translate_database_errors
def log_in(*, attempt: LoginAttempt) -> Session:
    return _accounts().login(attempt)


@port.expose
@_translate_database_errors
def start_guest_session() -> Session:
    return _accounts().sessions.issue_guest()


@port.expose
@_translate_database_errors
def refresh_session(*, refresh_claims: TokenClaims) -> Session:
    """Spend a refresh token (its verified claims) for a new pair; reuse revokes its family."""
    return _accounts().sessions.refresh(refresh_claims)


@port.expose(idempotent=True)
@_translate_database_errors
def log_out(*, access_claims: TokenClaims) -> None:
    _accounts().sessions.logout(access_claims)


@port.expose(idempotent=True)
@_translate_database_errors
def end_all_sessions(*, user_id: str) -> None:
    _accounts().log_out_everywhere(user_id)


@port.expose(idempotent=True)
@_translate_database_errors
def is_token_revoked(*, claims: TokenClaims) -> bool:
    return _accounts().sessions.is_revoked(claims)


@port.expose
@_translate_database_errors
def request_password_reset(*, email: str) -> None:
    """Email a reset link if the account exists; never says whether it does."""
    _accounts().request_password_reset(email)


@port.expose
@_translate_database_errors
def reset_password(*, token: str, new_password: str) -> None:
    _accounts().reset_password(token, new_password)


@port.expose
@_translate_database_errors
def change_password(*, user_id: str, current_password: str, new_password: str, client_ip: str) -> Session:
    """Change the password, end every other session, and return a fresh one for the caller.

    The current password is checked, and its failures counted by the login lockout of
    (account, `client_ip`) (InvalidCredentials, then LoginLocked)."""
    return _accounts().change_password(user_id, current_password, new_password, client_ip)


@port.expose
@_translate_database_errors
def start_mfa_setup(*, user_id: str, password: str, client_ip: str) -> MfaSetup:
    """Needs the current password, as enable_mfa and disable_mfa do (see change_password)."""
    return _accounts().start_mfa_setup(user_id, password, client_ip)


@port.expose
@_translate_database_errors
def enable_mfa(*, user_id: str, otp: str, password: str, client_ip: str) -> User:
    return _accounts().enable_mfa(user_id, otp, password, client_ip)


@port.expose
@_translate_database_errors
def disable_mfa(*, user_id: str, password: str, client_ip: str, otp: str | None = None) -> User:
    """Needs the current password; a code (`otp`), when sent, must be right as well."""
    return _accounts().disable_mfa(user_id, password, client_ip, otp)


@port.expose(idempotent=True)
@_translate_database_errors
def get_user(*, user_id: str) -> User:
    return _accounts().get_user(user_id)


@port.expose(idempotent=True)
@_translate_database_errors
def update_profile(*, user_id: str, display_name: str | None = None) -> User:
    return _accounts().update_profile(user_id, display_name)


@port.expose(idempotent=True)
@_translate_database_errors
def list_users(*, page: int = 1, page_size: int = 20) -> UserPage:
    return _accounts().list_users(page, page_size)


@port.expose(idempotent=True)
@_translate_database_errors
def update_user(*, user_id: str, roles: list[str] | None = None, is_active: bool | None = None) -> User:
    """Admin change of roles or activation; ends the user's sessions so it takes effect."""
    return _accounts().update_user(user_id, roles, is_active)


@port.expose
@_translate_database_errors
def create_admin(*, email: str, password: str) -> User:
    return _accounts().create_admin(email, password)


@port.expose(idempotent=True)
def store_name() -> str:
    """The database behind the module ("postgresql", or "sqlite" in the embedded default)."""
    return _db.engine.dialect.name


@port.expose(idempotent=True)
def is_available() -> bool:
    """Whether the accounts database answers (for health checks)."""
    return _database_answers()
