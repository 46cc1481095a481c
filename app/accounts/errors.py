"""Exceptions of the accounts module; re-exported by `interface.py`."""

from app.errors import DomainError


class AccountsError(DomainError):
    """Base of every error the accounts module raises."""


class WeakPassword(AccountsError):
    status, code = 400, "validation_error"
    errors: dict[str, list[str]]


class EmailTaken(AccountsError):
    status, code = 409, "email_taken"


class InvalidCredentials(AccountsError):
    status, code = 401, "invalid_credentials"
    field: str | None  # which field was wrong, when one was (a password change names it)


class EmailNotVerified(AccountsError):
    status, code = 403, "email_not_verified"


class AccountDisabled(AccountsError):
    status, code = 403, "account_disabled"


class LoginLocked(AccountsError):
    status, code = 429, "login_locked"


class MfaRequired(AccountsError):
    status, code = 401, "mfa_required"


class InvalidOtp(AccountsError):
    status, code = 401, "invalid_otp"


class MfaNotSetUp(AccountsError):
    status, code = 409, "mfa_not_set_up"


class MfaAlreadyEnabled(AccountsError):
    status, code = 409, "mfa_already_enabled"


class InvalidToken(AccountsError):
    """An email verification or password reset token that is unknown, used or expired."""

    status, code = 400, "invalid_token"


class RefreshTokenReused(AccountsError):
    status, code = 401, "refresh_token_reused"


class SessionRevoked(AccountsError):
    status, code = 401, "token_revoked"


class UserNotFound(AccountsError):
    status, code = 404, "user_not_found"
    user_id: str


class AccountsUnavailable(AccountsError):
    status, code = 503, "dependency_unavailable"
