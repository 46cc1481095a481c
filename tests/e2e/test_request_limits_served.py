"""Request size limits as a client meets them through gunicorn: problem+json answers for a body
over MAX_CONTENT_LENGTH (with or without Content-Length), a long URL and large headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gunicorn_server import app_environment, gunicorn
from tests.problems import expect_problem

LIMIT = 4096


@pytest.fixture(scope="module")
def base_url(app, mongo_uri, database_url, tmp_path_factory) -> Iterator[str]:
    environment = app_environment(
        mongo_uri, database_url, MAX_CONTENT_LENGTH=str(LIMIT), AUTH_RATE_LIMIT="1000 per minute"
    )
    with gunicorn(environment, tmp_path_factory.mktemp("gunicorn-limits") / "gunicorn.log") as url:
        yield url


def assert_read(response: requests.Response) -> None:
    """The body was read whole and parsed: its token is refused as too long (at most 512)."""
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_error"
    assert set(response.json()["errors"]) == {"token"}


def token_body(size: int) -> bytes:
    """A JSON body {"token": "xxx..."} of exactly `size` bytes."""
    return b'{"token": "' + b"x" * (size - 13) + b'"}'


def chunks(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """requests sends a generator chunked, without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_body_over_the_limit_is_a_413_problem(base_url):
    response = requests.post(
        f"{base_url}/v1/auth/verify-email",
        data=token_body(LIMIT + 1),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    body = expect_problem(response, 413, "payload_too_large")
    assert body["detail"] == f"The request body is larger than {LIMIT} bytes."


def test_a_body_at_the_limit_is_read(base_url):
    response = requests.post(
        f"{base_url}/v1/auth/verify-email",
        data=token_body(LIMIT),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_read(response)


def test_a_chunked_body_over_the_limit_is_a_413_problem(base_url):
    response = requests.post(
        f"{base_url}/v1/auth/verify-email",
        data=chunks(token_body(LIMIT + 500)),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    expect_problem(response, 413, "payload_too_large")


def test_a_chunked_body_within_the_limit_is_read(base_url):
    response = requests.post(
        f"{base_url}/v1/auth/verify-email",
        data=chunks(token_body(LIMIT - 10)),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert_read(response)


def test_a_url_over_the_apps_limit_is_a_414_problem(base_url):
    response = requests.get(f"{base_url}/v1/products", params={"q": "a" * 2100}, timeout=10)
    body = expect_problem(response, 414, "uri_too_long")
    assert body["detail"] == "The request URL is longer than 2048 bytes."


def test_a_url_at_the_apps_limit_is_served(base_url):
    target = "/v1/products?q=" + "a" * (2048 - len("/v1/products?q="))
    response = requests.get(f"{base_url}{target}", timeout=10)
    assert response.status_code == 400  # q is at most 200 characters: the app read the request
    assert response.json()["code"] == "validation_error"


def test_headers_over_the_apps_limit_are_a_431_problem(base_url):
    # each header line within gunicorn's limit_request_field_size (8190), together over 8192 bytes
    padding = {f"X-Padding-{number}": "p" * 3000 for number in range(3)}
    response = requests.get(f"{base_url}/v1/products", headers=padding, timeout=10)
    body = expect_problem(response, 431, "request_headers_too_large")
    assert body["detail"] == "The request headers are larger than 8192 bytes."


def test_gunicorns_own_limit_stays_the_outer_bound(base_url):
    """Past limit_request_line gunicorn refuses the request before the app sees it."""
    response = requests.get(f"{base_url}/v1/products", params={"q": "a" * 5000}, timeout=10)
    assert response.status_code == 414
