"""Finding 2 of the audit: links' tokens reach the log (MAIL_BACKEND=console) in development
mode only, where reading them there is how a local user verifies an account; production
refuses the console backend (tests/unit/test_config.py)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from app.accounts.mail import HIDDEN

PASSWORD = "Correct-Horse-Battery-9"
TOKEN_LINE = re.compile(r"send this token to POST (/v1/auth/[\w/-]+):\n(.+)\n")


def console_app(other_app, settings, env: str):
    return other_app(env=env, mail=replace(settings.mail, backend="console")).test_client()


def logged_mail(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "app.accounts.mail"]


def test_in_test_mode_the_console_masks_every_link_token(other_app, settings, caplog):
    client = console_app(other_app, settings, "test")
    caplog.set_level(logging.INFO, logger="app.accounts.mail")

    assert client.post("/v1/auth/register", json={"email": "ada@example.test", "password": PASSWORD}).status_code == 201
    assert client.post("/v1/auth/password/forgot", json={"email": "ada@example.test"}).status_code == 202

    messages = logged_mail(caplog)
    assert len(messages) == 2
    for message in messages:
        assert "ada@example.test" in message  # the operator still sees what was sent, to whom
        assert f"?token={HIDDEN}" in message
        assert TOKEN_LINE.search(message).group(2) == HIDDEN
        assert not re.search(r"[A-Za-z0-9_-]{40,}", message)  # no token (43 characters) anywhere


def test_in_development_the_console_shows_the_link_a_local_user_verifies_with(other_app, settings, caplog):
    client = console_app(other_app, settings, "development")
    caplog.set_level(logging.INFO, logger="app.accounts.mail")

    assert client.post("/v1/auth/register", json={"email": "dev@example.test", "password": PASSWORD}).status_code == 201

    [message] = logged_mail(caplog)
    assert HIDDEN not in message
    path, token = TOKEN_LINE.search(message).groups()
    assert f"/verify-email?token={token}" in message
    verified = client.post(path, json={"token": token})
    assert verified.status_code == 200, verified.get_data(as_text=True)
    assert verified.get_json()["emailVerified"] is True
