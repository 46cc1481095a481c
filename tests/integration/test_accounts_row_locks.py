"""Writes to an account lock its row (FOR UPDATE on PostgreSQL) before they read it: a change
that meets another one in progress waits for it to commit, then works on, and answers with,
the account as that change left it. Each test holds the row in a second connection, lets
the call start, sees it wait for that connection, and commits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from tests.integration.test_auth_api import (
    NEW_PASSWORD,
    PASSWORD,
    auth,
    enable_mfa,
    login,
    me,
    patch_user,
    register_and_verify,
    user_row,
)
from tests.problems import expect_problem

WAIT_LIMIT = 10.0  # seconds a call may take to reach the held row


@contextmanager
def account_held(database_url: str, user_id: str, change: str) -> Iterator[Callable[[Callable[[], object]], Future]]:
    """Another writer's transaction that has run `change` (SQL on the users row :id) and holds
    the row. The block gets `start(call)`: runs the call in a thread, returns once the call
    waits for this transaction, and the call's future; the transaction commits when the block ends."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder = engine.connect()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        transaction = holder.begin()
        holder.execute(text(change), {"id": user_id})
        holder_pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()

        def start(call: Callable[[], object]) -> Future:
            future = pool.submit(call)
            deadline = time.monotonic() + WAIT_LIMIT
            while not _waits_for(watcher, holder_pid):
                assert not future.done(), f"the call did not wait for the held row: {future.result()!r}"
                assert time.monotonic() < deadline, "the call never reached the held row"
                time.sleep(0.005)
            return future

        yield start
        transaction.commit()
    finally:
        pool.shutdown(wait=True)
        holder.close()
        watcher.close()
        engine.dispose()


def _waits_for(watcher, holder_pid: int) -> bool:
    return bool(
        watcher.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"),
            {"holder": holder_pid},
        ).scalar_one()
    )


def test_a_profile_change_waits_for_a_concurrent_change_and_answers_with_its_result(client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    promotion = """UPDATE users SET roles = '["admin", "customer"]' WHERE id = :id"""

    with account_held(database_url, ada["userId"], promotion) as start:
        changing = start(lambda: client.patch("/v1/users/me", json={"displayName": "Ada"}, headers=auth(token)))

    changed = changing.result(timeout=WAIT_LIMIT)
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert (changed.get_json()["displayName"], changed.get_json()["roles"]) == ("Ada", ["admin", "customer"])


def test_disabling_mfa_while_another_disable_is_in_progress_answers_that_it_is_not_on(client, mail_dir, database_url):
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    token = login(client, "ada@example.test")["accessToken"]
    enable_mfa(client, token)
    other_disable = "UPDATE users SET mfa_secret = NULL, mfa_enabled_at = NULL WHERE id = :id"

    with account_held(database_url, ada["userId"], other_disable) as start:
        disabling = start(lambda: client.post("/v1/auth/mfa/disable", json={"password": PASSWORD}, headers=auth(token)))

    disabled = disabling.result(timeout=WAIT_LIMIT)
    expect_problem(disabled, 409, "mfa_not_set_up", detail="Two-factor authentication is not on.")


def test_an_admin_change_during_a_logout_everywhere_ends_the_sessions_once_more(
    app, client, mail_dir, database_url, admin_headers
):
    """Both end every session by raising the account's session generation: neither raise is lost."""
    ada = register_and_verify(client, mail_dir, "ada@example.test")
    log_out_everywhere = "UPDATE users SET session_generation = session_generation + 1 WHERE id = :id"

    with account_held(database_url, ada["userId"], log_out_everywhere) as start:
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

    with account_held(database_url, ada["userId"], log_out_everywhere) as start:
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

    with account_held(database_url, ada["userId"], log_out_everywhere) as start:
        refreshing = start(lambda: client.post("/v1/auth/refresh", headers=auth(session["refreshToken"])))

    refused = refreshing.result(timeout=WAIT_LIMIT)
    expect_problem(refused, 401, "token_revoked", detail="This session has ended; log in again.")
