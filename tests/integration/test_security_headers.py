"""Cache-Control on private answers, HSTS, the Content-Security-Policy (Swagger UI working
under its own), tokens not kept by Swagger UI, and DOCS_ENABLED."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import replace

import pytest

from app.accounts import passwords
from tests.problems import PROBLEM

NOTHING = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


@pytest.fixture
def production_app(other_app, settings):
    """Build an app in production mode, which hashes passwords at production's floor at least;
    the session's cheap hashing is put back afterwards."""
    floor = replace(settings.auth, password_hash_time_cost=2, password_hash_memory_kib=19 * 1024)
    yield lambda **changes: other_app(env="production", auth=floor, **changes)
    passwords.configure(settings.auth.password_hash_time_cost, settings.auth.password_hash_memory_kib)


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer')}"}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/v1/cart", 200),
        ("delete", "/v1/cart", 200),
        ("get", "/v1/cart/nothing-here", 404),
        ("get", "/v1/orders", 200),
        ("get", "/v1/orders/no-such-order", 404),
    ],
)
def test_carts_and_orders_are_never_stored_by_browsers_or_proxies(client, shopper, method, path, status):
    response = getattr(client, method)(path, headers=shopper)
    assert response.status_code == status
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/v1/cart", "/v1/orders"])
def test_their_errors_are_not_stored_either(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["Cache-Control"] == "no-store"


def test_a_guest_token_answer_is_not_stored(client):
    response = client.post("/v1/auth/guest")
    assert "accessToken" in response.get_json()
    assert response.headers["Cache-Control"] == "no-store"


def test_the_catalog_stays_cacheable(client):
    assert client.get("/v1/products").headers.get("Cache-Control") != "no-store"


def test_no_hsts_over_plain_http_in_development(client):
    assert "Strict-Transport-Security" not in client.get("/v1/products").headers


def test_hsts_over_https(client):
    response = client.get("/v1/products", base_url="https://shop.example.com")
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"


def test_hsts_in_production_whatever_the_scheme(production_app):
    production = production_app().test_client()
    response = production.get("/v1/health")
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"


@pytest.mark.parametrize("path", ["/v1/products", "/v1/health", "/v1/no-such-route", "/api/openapi.json"])
def test_api_answers_allow_nothing_to_load(client, path):
    assert client.get(path).headers["Content-Security-Policy"] == NOTHING


def swagger_page(client) -> tuple[str, dict[str, str]]:
    page = client.get("/api/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    directives = (directive.partition(" ") for directive in page.headers["Content-Security-Policy"].split("; "))
    policy = {name: value for name, _, value in directives}
    return page.get_data(as_text=True), policy


def test_swagger_ui_loads_only_what_its_policy_allows(client):
    html, policy = swagger_page(client)
    inline = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(inline) == 1  # the settings, handed to SwaggerUIBundle
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert policy["script-src"] == f"'self' 'sha256-{digest}'"
    assert policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"  # the style sheet's icons are data: URIs
    assert policy["connect-src"] == "'self'"  # the spec and "Try it out"
    assert (policy["default-src"], policy["frame-ancestors"]) == ("'none'", "'none'")
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert loaded
    for url in loaded:
        assert url.startswith("/api/assets/"), url  # this origin only
        assert client.get(url).status_code == 200, url
    css = client.get("/api/assets/swagger-ui.css").get_data(as_text=True)
    assert set(re.findall(r"url\(\"?([a-z]+):", css)) <= {"data"}


def test_swagger_ui_keeps_no_token_in_local_storage_and_calls_no_validator(client):
    html, _ = swagger_page(client)
    settings = json.loads(re.search(r"var override_config = (\{.*?\});", html).group(1))
    assert settings["persistAuthorization"] is False
    assert settings["validatorUrl"] is None
    assert re.search(r'url: "/api/openapi.json"', html)


def test_docs_are_off_in_production_by_default(production_app):
    production = production_app(docs_enabled=False).test_client()
    for path in ("/api/", "/api/openapi.json", "/api/assets/swagger-ui-bundle.js"):
        response = production.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == PROBLEM
        assert response.get_json()["code"] == "not_found"
    assert production.get("/v1/products").status_code == 200


def test_docs_can_be_turned_on_in_production(production_app):
    production = production_app(docs_enabled=True).test_client()
    assert production.get("/api/openapi.json").status_code == 200
    assert production.get("/api/").status_code == 200
