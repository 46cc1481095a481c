"""Log lines: the request's fields on each line, the request id echoed and passed on, and no
secret in any line while every auth flow runs (logging captured at DEBUG, in both formats)."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator

import pyotp
import pytest
from flask_jwt_extended import verify_jwt_in_request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id
from werkzeug.test import Client

from app import logs
from tests.conftest import GATEWAY_KEY, TEST_SECRET
from tests.integration.test_auth_api import (
    NEW_PASSWORD,
    PASSWORD,
    auth,
    forgot,
    last_email,
    login,
    refresh,
    register,
    register_and_verify,
    reset,
    token_from,
)

THIRD_PASSWORD = "Quiet-Lantern-93"
SERVICE_HEADERS = {"X-Service-Key": GATEWAY_KEY, "X-Service-Caller": "gateway"}


class Captured:
    def __init__(self):
        self.json, self.console = io.StringIO(), io.StringIO()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.json.getvalue().splitlines()]

    def text(self) -> str:
        return self.json.getvalue() + self.console.getvalue()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Every record at DEBUG and up, rendered by the app's formatter as JSON and as console lines."""
    capture = Captured()
    handlers = []
    for stream, log_format in ((capture.json, "json"), (capture.console, "console")):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.formatter(log_format))
        handlers.append(handler)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    yield capture
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def both(app, service_app) -> Client:
    """/internal/* to the service app, the public API to the monolith (as in test_service_api)."""

    def dispatch(environ, start_response):
        target = service_app if environ["PATH_INFO"].startswith("/internal/") else app
        return target.wsgi_app(environ, start_response)

    return Client(dispatch, app.response_class, use_cookies=False)


def test_no_secret_reaches_a_log_line_in_any_auth_flow(both, mail_dir, captured):
    client, address = both, "grace@example.test"
    secrets = [PASSWORD, NEW_PASSWORD, THIRD_PASSWORD, GATEWAY_KEY, TEST_SECRET]

    assert register(client, address).status_code == 201
    verification = token_from(last_email(mail_dir, address))
    assert client.post("/v1/auth/verify-email", json={"token": verification}).status_code == 200
    session = login(client, address)
    renewed = refresh(client, session["refreshToken"])
    assert renewed.status_code == 200
    changed = client.post(
        "/v1/users/me/password",
        json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
        headers=auth(renewed.get_json()["accessToken"]),
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert forgot(client, address).status_code in (200, 202, 204)
    reset_token = token_from(last_email(mail_dir, address))
    assert reset(client, reset_token, THIRD_PASSWORD).status_code in (200, 204)
    signed_in = login(client, address, THIRD_PASSWORD)
    setup = client.post("/v1/auth/mfa/setup", json={"password": THIRD_PASSWORD}, headers=auth(signed_in["accessToken"]))
    assert setup.status_code == 200, setup.get_data(as_text=True)
    totp_secret = setup.get_json()["secret"]
    if time.time() % 30 > 29:
        time.sleep(1.1)
    enabling_code = pyotp.TOTP(totp_secret).at(time.time() - 30)
    enabled = client.post(
        "/v1/auth/mfa/enable",
        json={"otp": enabling_code, "password": THIRD_PASSWORD},
        headers=auth(signed_in["accessToken"]),
    )
    assert enabled.status_code == 200, enabled.get_data(as_text=True)
    login_code = pyotp.TOTP(totp_secret).now()
    with_mfa = login(client, address, THIRD_PASSWORD, otp=login_code)
    assert client.post("/v1/auth/logout", headers=auth(with_mfa["accessToken"])).status_code == 204
    internal = client.post("/internal/products/get_product", json={"product_id": "nope"}, headers=SERVICE_HEADERS)
    assert internal.status_code == 404, internal.get_data(as_text=True)

    secrets += [verification, reset_token, totp_secret, enabling_code, login_code]
    for pair in (session, renewed.get_json(), changed.get_json(), signed_in, with_mfa):
        secrets += [pair["accessToken"], pair["refreshToken"]]
    text = captured.text()
    assert "called by gateway" in text  # the DEBUG lines were captured
    leaked = [secret for secret in secrets if secret in text]
    assert leaked == [], text


def test_every_line_in_a_request_carries_its_fields(both, captured):
    answer = both.post(
        "/internal/products/get_product",
        json={"product_id": "nope"},
        headers={**SERVICE_HEADERS, "X-Request-ID": "trace-me-42"},
    )
    assert answer.headers["X-Request-ID"] == "trace-me-42"
    [line] = [line for line in captured.lines() if "called by" in line["event"]]
    assert line["request_id"] == "trace-me-42"
    assert line["route"].startswith("/internal/products/")
    assert line["caller"] == "gateway"
    assert (line["trace_id"], line["span_id"]) == (None, None)


def test_a_line_in_a_signed_in_request_names_the_user(app, client, mail_dir, captured):
    register_and_verify(client, mail_dir, "hopper@example.test")
    session = login(client, "hopper@example.test")
    with app.test_request_context("/v1/users/me", headers=auth(session["accessToken"])):
        verify_jwt_in_request()
        logging.getLogger("app.somewhere").warning("inside")
    [line] = [line for line in captured.lines() if line["event"] == "inside"]
    assert line["user_id"] == session["userId"]
    assert line["guest_id"] is None
    assert line["route"] == "/v1/users/me"


@pytest.mark.parametrize("sent", ["r" * 129, "bad\x01id", "caf\u00e9", " "])
def test_an_insane_request_id_is_replaced(client, sent):
    answer = client.get("/v1/products", headers={"X-Request-ID": sent})
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])


@pytest.mark.parametrize("sent", ["abc-123", "r" * 128, "a b/c:d=e"])
def test_a_sane_request_id_is_echoed(client, sent):
    assert client.get("/v1/products", headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent


def test_a_request_without_an_id_gets_one(client):
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/v1/products").headers["X-Request-ID"])


def test_browsers_may_read_the_request_id_across_origins(client, settings):
    answer = client.get("/v1/products", headers={"Origin": settings.cors_origins[0]})
    assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]


def test_an_error_answer_carries_the_request_id_too(client):
    answer = client.get("/v1/no-such-route", headers={"X-Request-ID": "lost-1"})
    assert answer.status_code == 404
    assert answer.headers["X-Request-ID"] == "lost-1"


def test_the_redactor_cuts_secrets_out_of_any_line(captured):
    logging.getLogger("somewhere").warning(
        "header Authorization: Bearer abc.def and a token eyJhbGciOi.eyJzdWIi.c2ln and %s", {"password": "hunter22"}
    )
    logging.getLogger("somewhere").info("service call", extra={"service_key": "key-1", "nested": {"otp": "123456"}})
    logging.getLogger("somewhere").info("reset with token=tok-9&x=1, otp: 654321")
    text = captured.text()
    assert "[redacted]" in text
    for secret in ("abc.def", "eyJhbGciOi.eyJzdWIi.c2ln", "hunter22", "key-1", "123456", "tok-9", "654321"):
        assert secret not in text


def test_a_traceback_shows_no_local_variables(captured):
    def sign_in(password: str) -> None:
        raise RuntimeError("store down")

    password = "-".join(("Local", "Secret", "55"))
    try:
        sign_in(password)
    except RuntimeError:
        logging.getLogger("somewhere").exception("sign-in failed")
    text = captured.text()
    assert "store down" in text
    assert "Local-Secret-55" not in text


def test_lines_in_a_request_under_a_span_carry_its_trace_and_span_ids(both, captured):
    tracer = TracerProvider().get_tracer(__name__)  # a span as a traced caller's server span would be

    with tracer.start_as_current_span("serving") as span:
        traced = both.post("/internal/products/get_product", json={"product_id": "nope"}, headers=SERVICE_HEADERS)
    untraced = both.post("/internal/products/get_product", json={"product_id": "nope"}, headers=SERVICE_HEADERS)

    ids = (format_trace_id(span.get_span_context().trace_id), format_span_id(span.get_span_context().span_id))
    first, second = [line for line in captured.lines() if "called by" in line["event"]]
    assert (first["trace_id"], first["span_id"]) == ids
    assert (len(first["trace_id"]), len(first["span_id"])) == (32, 16)  # hex digits
    assert (second["trace_id"], second["span_id"]) == (None, None)
    assert traced.status_code == untraced.status_code == 404
