"""The one check of an error response: RFC 9457 problem+json with the code clients switch on."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

PROBLEM = "application/problem+json"


def expect_problem(
    response, status: int, code: str, exception: str | None = None, *, detail: str | None = None
) -> dict:
    """Assert that `response` (from Flask's test client or from requests) is the problem `code`
    with HTTP `status`, naming the path it answers and, from the internal service API, the
    `exception` raised, and, when given, exactly the human-readable `detail`; returns its body."""
    if isinstance(response, requests.Response):
        text, mimetype, path = response.text, response.headers["Content-Type"], urlsplit(response.url).path
        body = response.json()
    else:
        text, mimetype, path = response.get_data(as_text=True), response.mimetype, response.request.path
        body = response.get_json()
    assert response.status_code == status, text
    assert mimetype == PROBLEM
    assert (body["status"], body["code"], body["instance"]) == (status, code, path)
    if exception is not None:
        assert body["exception"] == exception
    if detail is not None:
        assert body["detail"] == detail
    return body
