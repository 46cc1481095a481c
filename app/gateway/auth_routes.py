"""Public auth API: /v1/auth (register, verify, login, refresh, logout, passwords, MFA, guests)."""

import logging

from flask import current_app, request
from flask.views import MethodView
from flask_jwt_extended import get_jwt, get_jwt_identity, jwt_required

from app.accounts import interface as accounts
from app.cart import interface as cart
from app.extensions import ApiBlueprint, limiter
from app.gateway.account_schemas import (
    EmailSchema,
    LoginSchema,
    MfaDisableSchema,
    MfaEnableSchema,
    MfaSetupRequestSchema,
    MfaSetupSchema,
    PasswordResetSchema,
    RegisterSchema,
    SessionSchema,
    TokenSchema,
    UserSchema,
)
from app.gateway.auth import BEARER, guest_subject, signed_in
from app.gateway.http import require_json_body
from app.products import interface as products

logger = logging.getLogger(__name__)
blp = ApiBlueprint(
    "auth", __name__, url_prefix="/v1/auth", description="Accounts, sessions and two-factor authentication."
)
blp.before_request(require_json_body)


def auth_rate_limit() -> str:
    return current_app.extensions["settings"].auth_rate_limit


def guest_rate_limit() -> str:
    return current_app.extensions["settings"].guest_rate_limit


def _client_address() -> str:
    return request.remote_addr or "unknown"


strict_limit = limiter.limit(auth_rate_limit, key_func=_client_address)
# Guest sessions have their own, larger budget: many shoppers share one IP behind an office NAT
# or a mobile carrier's gateway, and a guest token grants no more than a cart.
guest_limit = limiter.limit(guest_rate_limit, key_func=_client_address)


@blp.route("/register")
class Register(MethodView):
    decorators = [strict_limit]

    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema)
    @blp.problem_response(429, "`rate_limited`")
    def post(self, body):
        """Create an account; a verification link is emailed

        An address that already has an account gets the same answer (never a 409 that would
        tell anyone so), its owner an email saying so; the account does not change.
        """
        return accounts.register_user(**body)


@blp.route("/verify-email")
class VerifyEmail(MethodView):
    @blp.arguments(TokenSchema)
    @blp.response(200, UserSchema)
    @blp.problem_response(400, "`invalid_token`: unknown, used or expired")
    def post(self, body):
        """Confirm an email address with the token from the email"""
        return accounts.verify_email(token=body["token"])


@blp.route("/verify-email/resend")
class ResendVerification(MethodView):
    decorators = [strict_limit]

    @blp.arguments(EmailSchema)
    @blp.response(202)
    def post(self, body):
        """Send a new verification link (always 202: never says whether the account exists)"""
        accounts.resend_verification(email=body["email"])


@blp.route("/login")
class Login(MethodView):
    decorators = [strict_limit]

    @blp.arguments(LoginSchema)
    @blp.response(200, SessionSchema)
    @blp.problem_response(
        400, "`validation_error`, or `guest_token_invalid`: X-Guest-Token invalid, expired or revoked"
    )
    @blp.problem_response(
        401, "`invalid_credentials` (same answer for an unknown email), `mfa_required`, `invalid_otp`"
    )
    @blp.problem_response(403, "`email_not_verified`, `account_disabled`")
    @blp.problem_response(429, "`login_locked` after repeated failures, or `rate_limited` (see Retry-After)")
    def post(self, body):
        """Log in: an access token (15 min) and a refresh token (30 days)

        With the visitor's guest token in `X-Guest-Token`, the guest's cart is merged into
        the user's and `cartMerge` says what was adjusted.
        """
        guest_token = request.headers.get("X-Guest-Token")
        guest_id = guest_subject(guest_token) if guest_token else None
        attempt = accounts.LoginAttempt(client_ip=_client_address(), **body)
        session = accounts.log_in(attempt=attempt)
        if guest_id is None:
            return session
        return {**vars(session), "cart_merge": _merge_after_login(guest_id, session.user_id)}


def _merge_after_login(guest_id: str, user_id: str) -> cart.MergeResult | None:
    """A failed merge must not fail the login: the client can call POST /v1/cart/merge later."""
    try:
        return cart.merge_guest_cart(guest_id=guest_id, user_id=user_id)
    except (cart.CartError, products.ProductsError):
        logger.exception("merging the cart of %s into %s after login failed", guest_id, user_id)
        return None


@blp.route("/refresh")
class Refresh(MethodView):
    @jwt_required(refresh=True)
    @blp.response(200, SessionSchema)
    @blp.problem_response(401, "`refresh_token_reused` (the whole login is revoked), `token_revoked`, `token_expired`")
    @blp.doc(security=BEARER, description="Send the refresh token as the bearer token. Each works once.")
    def post(self):
        """Exchange a refresh token for a new pair (rotation)"""
        return accounts.refresh_session(refresh_claims=accounts.TokenClaims.of(get_jwt()))


@blp.route("/logout")
class Logout(MethodView):
    @jwt_required()
    @blp.response(204)
    @blp.doc(security=BEARER)
    def post(self):
        """Revoke this access token and its refresh tokens"""
        accounts.log_out(access_claims=accounts.TokenClaims.of(get_jwt()))


@blp.route("/logout-all")
class LogoutAll(MethodView):
    @signed_in
    @blp.response(204)
    @blp.doc(security=BEARER)
    def post(self):
        """Revoke every session of this user"""
        accounts.end_all_sessions(user_id=get_jwt_identity())


@blp.route("/password/forgot")
class ForgotPassword(MethodView):
    decorators = [strict_limit]

    @blp.arguments(EmailSchema)
    @blp.response(202)
    def post(self, body):
        """Email a password reset link (always 202: never says whether the account exists)"""
        accounts.request_password_reset(email=body["email"])


@blp.route("/password/reset")
class ResetPassword(MethodView):
    decorators = [strict_limit]

    @blp.arguments(PasswordResetSchema)
    @blp.response(204)
    @blp.problem_response(400, "`invalid_token` or `validation_error` (password policy)")
    def post(self, body):
        """Set a new password with the emailed token; ends every session"""
        accounts.reset_password(**body)


CURRENT_PASSWORD_ERRORS = (
    (400, "`validation_error`: `password` (the current password) is missing"),
    (401, "`invalid_credentials` (`field`: the password's field): the current password is wrong"),
    (429, "`login_locked` after repeated wrong passwords, here or at the login (see Retry-After)"),
)


def current_password_docs(*extra: tuple[int, str]):
    """A change that needs the current password: its errors, counted by the login lockout."""

    def decorate(view):
        errors = dict(CURRENT_PASSWORD_ERRORS)
        for status, description in extra:
            errors[status] = f"{errors[status]}; {description}" if status in errors else description
        for status, description in errors.items():
            view = blp.problem_response(status, description)(view)
        return view

    return decorate


@blp.route("/mfa/setup")
class MfaSetup(MethodView):
    @signed_in
    @blp.arguments(MfaSetupRequestSchema)
    @blp.response(200, MfaSetupSchema)
    @current_password_docs((409, "`mfa_already_enabled`"))
    @blp.doc(security=BEARER)
    def post(self, body):
        """Start two-factor setup with your current password: scan the otpauth URI, then confirm with /mfa/enable"""
        return accounts.start_mfa_setup(user_id=get_jwt_identity(), client_ip=_client_address(), **body)


@blp.route("/mfa/enable")
class MfaEnable(MethodView):
    @signed_in
    @blp.arguments(MfaEnableSchema)
    @blp.response(200, UserSchema)
    @current_password_docs((401, "`invalid_otp`"), (409, "`mfa_not_set_up`, `mfa_already_enabled`"))
    @blp.doc(security=BEARER)
    def post(self, body):
        """Turn two-factor authentication on with a current code and your current password"""
        return accounts.enable_mfa(user_id=get_jwt_identity(), client_ip=_client_address(), **body)


@blp.route("/mfa/disable")
class MfaDisable(MethodView):
    @signed_in
    @blp.arguments(MfaDisableSchema)
    @blp.response(200, UserSchema)
    @current_password_docs((401, "`invalid_otp` (a code was sent and is wrong)"), (409, "`mfa_not_set_up`"))
    @blp.doc(security=BEARER)
    def post(self, body):
        """Turn two-factor authentication off with your current password (and a code, if you send one)"""
        return accounts.disable_mfa(user_id=get_jwt_identity(), client_ip=_client_address(), **body)


@blp.route("/guest")
class Guest(MethodView):
    decorators = [guest_limit]

    @blp.response(201, SessionSchema)
    def post(self):
        """A guest access token (role `guest`), so a visitor can have a cart before signing up"""
        return accounts.start_guest_session()
