"""Writes to an account lock its row (FOR UPDATE on PostgreSQL) before they read it: a change
that meets another one in progress waits for it to commit, then works on, and answers with,
the account as that change left it. Each test holds the row in a second connection, lets
the call start, sees it wait for that connection, and commits."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pyotp

from app.accounts import interface as accounts
from tests.held_locks import WAIT_LIMIT, row_held
from tests.integration.test_auth_api import (
    NEW_PASSWORD,
    PASSWORD,
    auth,
    enable_mfa,
    last_email,
    login,
    me,
    patch_user,
    register_and_verify,
    token_from,
    user_row,
)
from tests.problems import expect_problem


def log_in_with_code(client, code: str):
    return client.post("/v1/auth/login", json={"email": "ada@example.test", "password": PASSWORD, "otp": code})


def test_a_profile_change_waits_for_a_concurrent_change_and_answers_with_its_result(client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    promotion = """UPDATE users SET roles = '["admin", "customer"]' WHERE id = :id"""

    with row_held(database_url, ada["userId"], promotion) as start:
        changing = start(lambda: client.patch("/v1/users/me", json={"displayName": "Ada"}, headers=auth(token)))

    changed = changing.result(timeout=WAIT_LIMIT)
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert (changed.get_json()["displayName"], changed.get_json()["roles"]) == ("Ada", ["admin", "customer"])


def test_disabling_mfa_while_another_disable_is_in_progress_answers_that_it_is_not_on(client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    enable_mfa(client, token)
    other_disable = "UPDATE users SET mfa_secret = NULL, mfa_enabled_at = NULL WHERE id = :id"

    with row_held(database_url, ada["userId"], other_disable) as start:
        disabling = start(lambda: client.post("/v1/auth/mfa/disable", json={"password": PASSWORD}, headers=auth(token)))

    disabled = disabling.result(timeout=WAIT_LIMIT)
    expect_problem(disabled, 409, "mfa_not_set_up", detail="Two-factor authentication is not on.")


def test_an_admin_change_during_a_logout_everywhere_ends_the_sessions_once_more(
    app, client, mail_dir, database_url, admin_headers
):
    """Both end every session by raising the account's session generation: neither raise is lost."""
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    log_out_everywhere = "UPDATE users SET session_generation = session_generation + 1 WHERE id = :id"

    with row_held(database_url, ada["userId"], log_out_everywhere) as start:
        promoting = start(lambda: patch_user(client, admin_headers, ada["userId"], roles=["admin"]))

    promoted = promoting.result(timeout=WAIT_LIMIT)
    assert promoted.status_code == 200, promoted.get_data(as_text=True)
    assert promoted.get_json()["roles"] == ["admin", "customer"]
    assert user_row(app, "ada@example.test").session_generation == 2


def test_a_password_change_during_a_logout_everywhere_ends_the_sessions_once_more(app, client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    log_out_everywhere = "UPDATE users SET session_generation = session_generation + 1 WHERE id = :id"
    body = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}

    with row_held(database_url, ada["userId"], log_out_everywhere) as start:
        changing = start(lambda: client.post("/v1/users/me/password", json=body, headers=auth(token)))

    changed = changing.result(timeout=WAIT_LIMIT)
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert user_row(app, "ada@example.test").session_generation == 2
    assert me(client, changed.get_json()["accessToken"]).status_code == 200


def test_a_refresh_during_a_logout_everywhere_is_refused_once_that_commits(client, mail_dir, database_url):
    """The refresh token is spent after the logout's revocation of it commits: the session it
    belonged to has ended, and no new pair is issued."""
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    session = login(client, "ada@example.test")
    log_out_everywhere = (
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = :id;"
        " UPDATE users SET session_generation = session_generation + 1 WHERE id = :id"
    )

    with row_held(database_url, ada["userId"], log_out_everywhere) as start:
        refreshing = start(lambda: client.post("/v1/auth/refresh", headers=auth(session["refreshToken"])))

    refused = refreshing.result(timeout=WAIT_LIMIT)
    expect_problem(refused, 401, "token_revoked", detail="This session has ended; log in again.")


def test_enabling_mfa_while_another_enable_is_in_progress_answers_that_it_is_already_on(client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    secret = client.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=auth(token)).get_json()["secret"]
    other_enable = "UPDATE users SET mfa_enabled_at = now() WHERE id = :id"
    body = {"otp": pyotp.TOTP(secret).now(), "password": PASSWORD}

    with row_held(database_url, ada["userId"], other_enable) as start:
        enabling = start(lambda: client.post("/v1/auth/mfa/enable", json=body, headers=auth(token)))

    refused = enabling.result(timeout=WAIT_LIMIT)
    expect_problem(refused, 409, "mfa_already_enabled", detail="Two-factor authentication is already on.")


def test_an_mfa_setup_while_an_enable_is_in_progress_leaves_the_enabled_secret(app, client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    secret = client.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=auth(token)).get_json()["secret"]
    enable_in_progress = "UPDATE users SET mfa_enabled_at = now() WHERE id = :id"

    with row_held(database_url, ada["userId"], enable_in_progress) as start:
        setting_up = start(lambda: client.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=auth(token)))

    refused = setting_up.result(timeout=WAIT_LIMIT)
    detail = "Two-factor authentication is already on; disable it first."
    expect_problem(refused, 409, "mfa_already_enabled", detail=detail)
    assert user_row(app, "ada@example.test").mfa_secret == secret


def test_a_password_reset_during_a_logout_everywhere_ends_the_sessions_once_more(app, client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    client.post("/v1/auth/password/forgot", json={"email": "ada@example.test"})
    link = token_from(last_email(mail_dir, "ada@example.test"))
    log_out_everywhere = "UPDATE users SET session_generation = session_generation + 1 WHERE id = :id"
    body = {"token": link, "newPassword": NEW_PASSWORD}

    with row_held(database_url, ada["userId"], log_out_everywhere) as start:
        resetting = start(lambda: client.post("/v1/auth/password/reset", json=body))

    assert resetting.result(timeout=WAIT_LIMIT).status_code == 204
    assert user_row(app, "ada@example.test").session_generation == 2


def test_create_admin_during_a_deactivation_leaves_the_account_active(app, client, mail_dir, database_url):
    """`flask create-admin` promises an active administrator, whatever it waited for."""
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    deactivation = "UPDATE users SET is_active = false, session_generation = session_generation + 1 WHERE id = :id"

    def create_admin():
        with app.app_context():
            return accounts.create_admin(email="ada@example.test", password=NEW_PASSWORD)

    with row_held(database_url, ada["userId"], deactivation) as start:
        creating = start(create_admin)

    admin = creating.result(timeout=WAIT_LIMIT)
    assert (admin.is_active, admin.roles) == (True, ("admin", "customer"))
    assert user_row(app, "ada@example.test").is_active is True


def test_a_code_claimed_by_a_login_in_progress_is_refused_once_that_commits(client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    totp = pyotp.TOTP(enable_mfa(client, login(client, "ada@example.test")["accessToken"]))
    now = time.time()
    code, step = totp.at(now), totp.timecode(datetime.fromtimestamp(now, UTC))
    other_login = "UPDATE users SET mfa_last_step = :step WHERE id = :id"

    with row_held(database_url, ada["userId"], other_login, step=step) as start:
        logging_in = start(lambda: log_in_with_code(client, code))

    refused = logging_in.result(timeout=WAIT_LIMIT)
    expect_problem(refused, 401, "invalid_otp", detail="The code is wrong, expired or already used.")


def test_a_login_during_a_deactivation_is_refused_once_that_commits(client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    deactivation = "UPDATE users SET is_active = false, session_generation = session_generation + 1 WHERE id = :id"

    with row_held(database_url, ada["userId"], deactivation) as start:
        logging_in = start(
            lambda: client.post("/v1/auth/login", json={"email": "ada@example.test", "password": PASSWORD})
        )

    expect_problem(logging_in.result(timeout=WAIT_LIMIT), 403, "account_disabled")


def test_a_verification_during_a_reset_keeps_when_the_address_was_first_proved(app, client, mail_dir, database_url):
    client.post("/v1/auth/register", json={"email": "ada@example.test", "password": PASSWORD})
    link = token_from(last_email(mail_dir, "ada@example.test"))
    user_id = str(user_row(app, "ada@example.test").id)
    proved_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    reset_proving_the_address = "UPDATE users SET email_verified_at = :at WHERE id = :id"

    with row_held(database_url, user_id, reset_proving_the_address, at=proved_at) as start:
        verifying = start(lambda: client.post("/v1/auth/verify-email", json={"token": link}))

    verified = verifying.result(timeout=WAIT_LIMIT)
    assert (verified.status_code, verified.get_json()["emailVerified"]) == (200, True)
    assert user_row(app, "ada@example.test").email_verified_at == proved_at


def test_reads_of_an_account_do_not_wait_for_a_write_in_progress(client, mail_dir, database_url):
    """Only writes lock the row: the profile and a forgotten-password request answer at once,
    the profile as committed."""
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]

    with row_held(database_url, ada["userId"], "UPDATE users SET display_name = 'Held' WHERE id = :id") as start:
        profile = start(lambda: client.get("/v1/users/me", headers=auth(token)), waits=False).result()
        forgot = start(
            lambda: client.post("/v1/auth/password/forgot", json={"email": "ada@example.test"}), waits=False
        ).result()

    assert (profile.status_code, profile.get_json()["displayName"]) == (200, ada["displayName"])
    assert forgot.status_code == 202, forgot.get_data(as_text=True)
