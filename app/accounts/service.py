"""Account rules: registration, verification, login, passwords, MFA, profiles, roles."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app import metrics
from app.accounts import emails, mfa, one_time_tokens, passwords
from app.accounts.dto import LoginAttempt, MfaSetup, Session, UserPage
from app.accounts.dto import User as UserDto
from app.accounts.errors import (
    AccountDisabled,
    EmailNotVerified,
    InvalidCredentials,
    InvalidOtp,
    LoginLocked,
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
from app.events.envelope import new_event
from app.events.outbox import record
from app.extensions import db
from app.transactions import unit_of_work

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


def _written(user: User) -> UserDto:
    """The DTO of a user changed in this unit of work, with the `updated_at` of the change."""
    db.session.flush()
    return to_dto(user)


def _aware(moment: datetime) -> datetime:
    """SQLite (the embedded default) returns naive datetimes; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Credentials:
    """What a login checks before it writes anything, read in a unit of work that has ended
    by the time the (slow) argon2 verification runs."""

    user_id: uuid.UUID
    password_hash: str
    mfa_enabled: bool


class Accounts:
    """Each public method is one interface call. Its SQL runs in units of work
    (app/transactions.py), one open at a time: usually a single one, committed as the method
    returns; where a write must outlast an error raised afterwards, a unit of work of its
    own that commits before the error is raised. Password hashing runs outside any unit of
    work where the order of checks allows it: on SQLite an open transaction holds off every
    other writer. Write units of work lock the user's row first (PostgreSQL; SQLite's write
    lock already serialises them), so that no read-modify-write of an account loses another."""

    def __init__(self, settings: AuthSettings, sessions: Sessions, mailer: Mailer):
        self.settings = settings
        self.sessions = sessions
        self.mailer = mailer
        self.lockout = LoginLockout(
            settings.login_max_failures,
            settings.login_lock_seconds,
            settings.login_account_max_failures,
            settings.login_account_lock_seconds,
        )

    # --- registration and email verification -------------------------------------------

    def register(self, email: str, password: str) -> UserDto:
        email = normalise_email(email)
        _check_policy(password, email)
        password_hash = passwords.hash_password(password)
        try:
            with unit_of_work():
                user = User(email=email, password_hash=password_hash, roles=["customer"])
                db.session.add(user)
                db.session.flush()  # a taken email fails here
                message = self._verification(user)
                registered = to_dto(user)
                record(new_event("user.registered", registered.user_id, {"userId": registered.user_id}))
        except IntegrityError:
            # Taken: answered as for a new account (an answer saying so would tell anyone which
            # addresses have accounts); the owner is told by mail instead, and nothing changes.
            self._send(emails.account_exists(email, self.settings.public_base_url))
            return _unsaved_customer(email)
        self._send(message)  # once committed, so that no link points at a token that rolled back
        return registered

    def _verification(self, user: User) -> Email:
        return self._link(
            user, one_time_tokens.VERIFY_EMAIL, self.settings.email_token_ttl, "verify-email", emails.verification
        )

    def verify_email(self, token: str) -> UserDto:
        with unit_of_work():
            user = self._get(one_time_tokens.redeem(token, one_time_tokens.VERIFY_EMAIL), lock=True)
            if user.email_verified_at is None:
                user.email_verified_at = utcnow()
            return _written(user)

    def resend_verification(self, email: str) -> None:
        message = None
        with unit_of_work():
            user = self._by_email(email)
            if user is not None and user.email_verified_at is None and user.is_active:
                message = self._verification(user)
        if message is not None:
            self._send(message)

    # --- login -------------------------------------------------------------------------

    def login(self, attempt: LoginAttempt) -> Session:
        email = normalise_email(attempt.email)
        # Counted before the password is checked, in one atomic step per counter (not in SQL):
        # concurrent guesses cannot all slip past the limit. A wrong password or code stays
        # counted; an attempt that proved the password (or failed before checking it) is not.
        try:
            self.lockout.count_attempt(email, attempt.client_ip)
        except LoginLocked:
            metrics.LOGINS.labels("locked").inc()
            raise
        try:
            session = self._login(email, attempt)
        except (InvalidCredentials, InvalidOtp):
            metrics.LOGINS.labels("failure").inc()
            raise
        except BaseException:
            self.lockout.forgive(email, attempt.client_ip)
            raise
        self.lockout.succeeded(email, attempt.client_ip)
        metrics.LOGINS.labels("success").inc()
        return session

    def _login(self, email: str, attempt: LoginAttempt) -> Session:
        with unit_of_work(write=False):
            user = self._by_email(email)
            known = _Credentials(user.id, user.password_hash, user.mfa_enabled_at is not None) if user else None
        if not passwords.verify_password(known.password_hash if known else None, attempt.password):
            raise InvalidCredentials("Wrong email or password.")
        if known.mfa_enabled:
            self._check_second_factor(known.user_id, attempt)
        with unit_of_work():
            user = db.session.get(User, known.user_id, with_for_update=True)
            if user is None or (
                user.password_hash != known.password_hash  # changed since: is the password still right?
                and not passwords.verify_password(user.password_hash, attempt.password)
            ):
                raise InvalidCredentials("Wrong email or password.")
            if user.mfa_enabled_at is not None and not known.mfa_enabled:  # turned on since
                raise MfaRequired("Send the code from your authenticator app as `otp`.")
            if not user.is_active:
                raise AccountDisabled("This account is disabled.")
            if user.email_verified_at is None:
                raise EmailNotVerified("Confirm your email address first (POST /v1/auth/verify-email/resend).")
            if passwords.needs_rehash(user.password_hash):
                user.password_hash = passwords.hash_password(attempt.password)
            return self.sessions.issue(user)

    def _check_second_factor(self, user_id: uuid.UUID, attempt: LoginAttempt) -> None:
        if not attempt.otp:
            raise MfaRequired("Send the code from your authenticator app as `otp`.")
        # The code is claimed in a unit of work of its own, committed before the login can
        # still fail (account disabled, email not verified): a code once accepted stays used.
        with unit_of_work():
            user = db.session.get(User, user_id)
            accepted = user is not None and self._accept_otp(user, attempt.otp)
        if not accepted:
            raise InvalidOtp("The code is wrong, expired or already used.")

    def _accept_otp(self, user: User, code: str) -> bool:
        """Claim the code's time step, in the caller's unit of work (no step is accepted twice)."""
        if user.mfa_secret is None:
            return False
        step = mfa.matching_step(user.mfa_secret, code, after_step=user.mfa_last_step)
        if step is None:
            return False
        claimed = db.session.execute(
            db.update(User).where(User.id == user.id, User.mfa_last_step < step).values(mfa_last_step=step)
        ).rowcount
        return claimed == 1

    # --- passwords ---------------------------------------------------------------------

    def request_password_reset(self, email: str) -> None:
        message = None
        with unit_of_work():
            user = self._by_email(email)
            if user is not None and user.is_active:
                message = self._link(
                    user,
                    one_time_tokens.RESET_PASSWORD,
                    self.settings.reset_token_ttl,
                    "reset-password",
                    emails.password_reset,
                )
        if message is not None:
            self._send(message)

    def reset_password(self, token: str, new_password: str) -> None:
        # One unit of work, the new password hashed inside it: the policy needs the account's
        # email, known once the token is redeemed, and a refused password must leave the
        # token unspent (the rollback does that).
        with unit_of_work():
            user = self._get(one_time_tokens.redeem(token, one_time_tokens.RESET_PASSWORD), lock=True)
            _check_policy(new_password, user.email, field="newPassword")
            self._set_password(user, new_password)
            user.email_verified_at = user.email_verified_at or utcnow()  # the reset proved the address
            generation = self.sessions.end_all(user)
            user_id, email = user.id, user.email
        self.sessions.publish_generation(user_id, generation)
        self.lockout.clear(email)

    def change_password(self, user_id: str, current_password: str, new_password: str, client_ip: str) -> Session:
        self._prove_password(user_id, current_password, client_ip, field="currentPassword")
        with unit_of_work():
            user = self._get(user_id, lock=True)
            _check_policy(new_password, user.email, field="newPassword")
            self._set_password(user, new_password)
            generation = self.sessions.end_all(user)
            session = self.sessions.issue(user)
        self.sessions.publish_generation(uuid.UUID(session.user_id), generation)
        return session

    def _prove_password(self, user_id: str, password: str, client_ip: str, field: str) -> None:
        """The account's current password, asked again before a change to how it is protected
        (its password, its second factor), so that a stolen access token alone cannot make one.
        Counted by the login lockout, in the same counters as logins: a token holder guessing
        the password here gets no more tries than at the login, and is locked (429) as there."""
        with unit_of_work(write=False):
            user = self._get(user_id)
            email, password_hash = user.email, user.password_hash
        self.lockout.count_attempt(email, client_ip)
        if not passwords.verify_password(password_hash, password):
            raise InvalidCredentials("The current password is wrong.", field=field)
        self.lockout.succeeded(email, client_ip)

    def _set_password(self, user: User, new_password: str) -> None:
        """A new password also voids every reset link still out there."""
        user.password_hash = passwords.hash_password(new_password)
        one_time_tokens.spend_all(user.id, one_time_tokens.RESET_PASSWORD)

    # --- MFA ---------------------------------------------------------------------------

    def start_mfa_setup(self, user_id: str, password: str, client_ip: str) -> MfaSetup:
        self._prove_password(user_id, password, client_ip, field="password")
        with unit_of_work():
            user = self._get(user_id, lock=True)
            if user.mfa_enabled_at is not None:
                raise MfaAlreadyEnabled("Two-factor authentication is already on; disable it first.")
            user.mfa_secret = mfa.new_secret()
            return MfaSetup(secret=user.mfa_secret, otpauth_uri=mfa.otpauth_uri(user.mfa_secret, user.email))

    def enable_mfa(self, user_id: str, otp: str, password: str, client_ip: str) -> UserDto:
        self._prove_password(user_id, password, client_ip, field="password")
        with unit_of_work():  # a refused code claimed no step: nothing to keep
            user = self._get(user_id, lock=True)
            if user.mfa_enabled_at is not None:
                raise MfaAlreadyEnabled("Two-factor authentication is already on.")
            if user.mfa_secret is None:
                raise MfaNotSetUp("Call POST /v1/auth/mfa/setup first.")
            if not self._accept_otp(user, otp):
                raise InvalidOtp("The code is wrong, expired or already used.")
            user.mfa_enabled_at = utcnow()
            return _written(user)

    def disable_mfa(self, user_id: str, password: str, client_ip: str, otp: str | None = None) -> UserDto:
        self._prove_password(user_id, password, client_ip, field="password")
        with unit_of_work():  # a refusal claimed no step: nothing to keep
            user = self._get(user_id, lock=True)
            if user.mfa_enabled_at is None:
                raise MfaNotSetUp("Two-factor authentication is not on.")
            if otp is not None and not self._accept_otp(user, otp):
                raise InvalidOtp("The code is wrong, expired or already used.")
            user.mfa_secret, user.mfa_enabled_at = None, None
            return _written(user)

    def log_out_everywhere(self, user_id: str) -> None:
        with unit_of_work():
            user = self._get(user_id, lock=True)
            generation, key = self.sessions.end_all(user), user.id  # read before the commit expires it
        self.sessions.publish_generation(key, generation)

    # --- profiles and administration ---------------------------------------------------

    def get_user(self, user_id: str) -> UserDto:
        with unit_of_work(write=False):
            return to_dto(self._get(user_id))

    def update_profile(self, user_id: str, display_name: str | None) -> UserDto:
        with unit_of_work():
            user = self._get(user_id, lock=True)
            if display_name is not None:
                user.display_name = display_name
            return _written(user)

    def list_users(self, page: int, page_size: int) -> UserPage:
        with unit_of_work(write=False):
            total = db.session.scalar(select(func.count()).select_from(User))
            users = db.session.scalars(
                select(User).order_by(User.created_at, User.id).offset((page - 1) * page_size).limit(page_size)
            )
            return UserPage(items=tuple(to_dto(user) for user in users), total=total)

    def update_user(self, user_id: str, roles: list[str] | None, is_active: bool | None) -> UserDto:
        generation = None
        with unit_of_work():
            user = self._get(user_id, lock=True)
            if roles is not None:
                user.roles = sorted(set(roles) | {"customer"})
            if is_active is not None:
                user.is_active = is_active
            if roles is not None or is_active is False:
                generation = self.sessions.end_all(user)  # new roles take effect at the next login
            updated = _written(user)
        if generation is not None:
            self.sessions.publish_generation(uuid.UUID(updated.user_id), generation)
        return updated

    def create_admin(self, email: str, password: str) -> UserDto:
        """Create (or promote) an administrator whose email counts as verified."""
        email = normalise_email(email)
        _check_policy(password, email)
        password_hash = passwords.hash_password(password)
        with unit_of_work():
            user = self._by_email(email, lock=True) or User(email=email)
            user.password_hash = password_hash
            user.roles = sorted(set(user.roles or []) | {"customer", "admin"})
            user.email_verified_at = user.email_verified_at or utcnow()
            user.is_active = True
            db.session.add(user)
            return _written(user)

    # --- helpers -----------------------------------------------------------------------

    def _link(
        self, user: User, purpose: str, lifetime: int, page: str, compose: Callable[[str, str, str, int], Email]
    ) -> Email:
        """A message to `user` with a link to the front end's `page` carrying a new single-use
        token (written in the caller's unit of work; send it once that has committed)."""
        token = one_time_tokens.issue(user.id, purpose, lifetime)
        return compose(user.email, f"{self.settings.public_base_url}/{page}?token={token}", token, lifetime)

    def _send(self, message: Email) -> None:
        """A mail outage must not fail the request (nor reveal whether an account exists):
        it is logged, and the user can ask for the link again. Called outside any unit of
        work, so that a slow mail server holds no transaction open."""
        try:
            self.mailer.send(message)
        except MailDeliveryFailed:
            logger.exception("could not send %r to %s", message.subject, message.to)

    def _by_email(self, email: str, *, lock: bool = False) -> User | None:
        query = select(User).where(User.email == normalise_email(email))
        return db.session.scalar(query.with_for_update() if lock else query)

    def _get(self, user_id: str | uuid.UUID, *, lock: bool = False) -> User:
        """The user, its row locked (FOR UPDATE on PostgreSQL) when the caller will write it."""
        try:
            user = db.session.get(User, uuid.UUID(str(user_id)), with_for_update=lock or None)
        except ValueError:
            user = None
        if user is None:
            raise UserNotFound(f"No user {user_id!r}.", user_id=str(user_id))
        return user


def _unsaved_customer(email: str) -> UserDto:
    """What a registration answers for an address that already has an account: the shape of a
    new, unverified customer, with an id that belongs to no one."""
    now = utcnow()
    return UserDto(
        user_id=str(uuid.uuid4()),
        email=email,
        display_name="",
        roles=("customer",),
        is_active=True,
        email_verified=False,
        mfa_enabled=False,
        created_at=now,
        updated_at=now,
    )


def _check_policy(password: str, email: str, field: str = "password") -> None:
    problems = passwords.policy_problems(password, email)
    if problems:
        raise WeakPassword("The password does not meet the policy.", errors={field: problems})
