"""Accounts on the embedded SQLite database, where a write unit of work takes the database's
write lock (app/transactions.py): reads take no such lock, so an account is read while a
write is in progress instead of queueing behind it."""

from __future__ import annotations

import pytest
import redis
from flask_jwt_extended import decode_token
from flask_migrate import upgrade

from app.accounts import interface as accounts
from tests.held_locks import a_writer_holding_the_lock
from tests.integration.test_auth_api import PASSWORD

ANYWHERE = "192.0.2.7"


def test_users_are_read_and_listed_while_a_writer_holds_the_lock(embedded, database):
    with embedded.app_context():
        admin = accounts.create_admin(email="root@example.test", password=PASSWORD)

    with a_writer_holding_the_lock(database, "UPDATE users SET display_name = 'Root'"), embedded.app_context():
        page = accounts.list_users(page=1, page_size=20)
        read = accounts.get_user(user_id=admin.user_id)

    assert (page.total, page.items, read) == (1, (admin,), admin)  # as committed


def test_a_wrong_current_password_is_answered_while_a_writer_holds_the_lock(embedded, database):
    with embedded.app_context():
        admin = accounts.create_admin(email="root@example.test", password=PASSWORD)

    writing = a_writer_holding_the_lock(database, "UPDATE users SET display_name = 'Root'")
    with writing, embedded.app_context(), pytest.raises(accounts.InvalidCredentials):
        accounts.start_mfa_setup(user_id=admin.user_id, password="Wrong-Password-1", client_ip=ANYWHERE)


def test_tokens_are_checked_and_logouts_recorded_on_the_embedded_database(embedded):
    with embedded.app_context():
        accounts.create_admin(email="root@example.test", password=PASSWORD)
        session = accounts.log_in(
            attempt=accounts.LoginAttempt(email="root@example.test", password=PASSWORD, client_ip=ANYWHERE)
        )
        claims = accounts.TokenClaims.of(decode_token(session.access_token))
        assert accounts.is_token_revoked(claims=claims) is False

        for _ in range(2):  # the port may send it again
            accounts.log_out(access_claims=claims)

        assert accounts.is_token_revoked(claims=claims) is True


def test_a_token_is_checked_while_a_writer_holds_the_lock_with_redis_in_front(other_app, database, redis_url):
    """Redis caches each user's session generation; a check that misses the cache reads it
    from the database, without waiting for a write in progress."""
    app = other_app(database_url=f"sqlite:///{database}", redis_url=redis_url)
    with app.app_context():
        upgrade()
        accounts.create_admin(email="root@example.test", password=PASSWORD)
        session = accounts.log_in(
            attempt=accounts.LoginAttempt(email="root@example.test", password=PASSWORD, client_ip=ANYWHERE)
        )
        claims = accounts.TokenClaims.of(decode_token(session.access_token))
    cached = redis.Redis.from_url(redis_url)
    try:
        with a_writer_holding_the_lock(database, "UPDATE users SET display_name = 'Root'"), app.app_context():
            assert accounts.is_token_revoked(claims=claims) is False  # read from the database
        assert cached.get(f"storefront:generation:{session.user_id}") == b"0"
    finally:
        cached.delete(f"storefront:generation:{session.user_id}")
        for key in cached.scan_iter(match="*root@example.test*"):
            cached.delete(key)
        cached.close()


def test_a_wrong_password_at_the_login_is_answered_while_a_writer_holds_the_lock(embedded, database):
    with embedded.app_context():
        accounts.create_admin(email="root@example.test", password=PASSWORD)
    wrong = accounts.LoginAttempt(email="root@example.test", password="Wrong-Password-1", client_ip=ANYWHERE)

    writing = a_writer_holding_the_lock(database, "UPDATE users SET display_name = 'Root'")
    with writing, embedded.app_context(), pytest.raises(accounts.InvalidCredentials):
        accounts.log_in(attempt=wrong)
