"""Request size limits answered as problem+json, and described in the OpenAPI document.
(tests/e2e/test_request_limits_served.py meets them through gunicorn, chunked bodies too.)"""

import pytest

from app.gateway.request_limits import INTERNAL_MAX_CONTENT_LENGTH
from tests.problems import PROBLEM, expect_problem


def test_a_body_over_max_content_length_is_a_413_problem(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == 64 * 1024
    body = '{"token": "' + "x" * limit + '"}'
    response = client.post("/v1/auth/verify-email", data=body, content_type="application/json")
    problem = expect_problem(response, 413, "payload_too_large")
    assert problem["detail"] == f"The request body is larger than {limit} bytes."


def test_a_body_over_the_limit_is_refused_even_where_no_view_reads_it(client):
    response = client.delete("/v1/cart", data="x" * (64 * 1024 + 1), content_type="application/json")
    expect_problem(response, 413, "payload_too_large")


def test_a_long_url_is_a_414_problem(client):
    response = client.get("/v1/products", query_string={"q": "a" * 2100})
    expect_problem(response, 414, "uri_too_long")


def test_large_headers_are_a_431_problem(client):
    response = client.get("/v1/products", headers={"X-Padding": "p" * 8200})
    expect_problem(response, 431, "request_headers_too_large")


def test_the_internal_api_takes_larger_batches(other_app):
    """A seed's batch of products is larger than a public body may be: the internal API
    (behind its service key) has a cap of its own."""
    body = '{"drafts": [' + ",".join(['{"sku": "X"}'] * 10_000) + "]}"
    assert 64 * 1024 < len(body) < INTERNAL_MAX_CONTENT_LENGTH
    service = other_app(modules=("products", "cart", "accounts")).test_client()
    response = service.post("/internal/products/import_products", data=body, content_type="application/json")
    assert response.status_code == 401  # no service key: refused for that, not for the size
    oversized = "x" * (INTERNAL_MAX_CONTENT_LENGTH + 1)
    response = service.post("/internal/products/import_products", data=oversized, content_type="application/json")
    expect_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize(("path", "method"), [("/v1/products", "post"), ("/v1/cart/products", "post")])
def test_the_openapi_document_describes_the_size_limits(other_app, path, method):
    spec = other_app().test_client().get("/api/openapi.json").get_json()
    responses = spec["paths"][path][method]["responses"]
    assert {"413", "414", "431"} <= set(responses)
    listing = spec["paths"]["/v1/products"]["get"]["responses"]
    assert {"414", "431"} <= set(listing)
    assert "413" not in listing
    for name in ("REQUEST_ENTITY_TOO_LARGE", "REQUEST_URI_TOO_LONG", "REQUEST_HEADER_FIELDS_TOO_LARGE"):
        assert list(spec["components"]["responses"][name]["content"]) == [PROBLEM]
