"""The micro-cache of anonymous catalog reads (CATALOG_CACHE_TTL)."""

import json
from decimal import Decimal

import pytest

from app import create_app
from app.products import interface as products


@pytest.fixture
def cached_client(settings):
    app = create_app(settings.override(catalog_cache_ttl=30))
    with app.app_context():
        products.create_product(
            draft=products.ProductDraft(product_id="p1", sku="MUG-1", name="Mug", price=Decimal("5.00"), stock=10)
        )
    client = app.test_client()
    client.application = app
    return client


def restock_behind_the_cache(client, delta: int = 5) -> None:
    """A change made by another worker: the store changes, this worker's cache does not know."""
    with client.application.app_context():
        products.adjust_stock(product_id="p1", delta=delta, reason="other worker")


def test_anonymous_reads_are_cached_for_the_ttl(cached_client):
    first = cached_client.get("/v1/products/p1")
    assert first.headers["Cache-Control"] == "public, max-age=30"
    restock_behind_the_cache(cached_client)
    assert cached_client.get("/v1/products/p1").get_json()["stock"] == 10
    assert cached_client.get("/v1/products").get_json()[0]["stock"] == 15  # a different key: read fresh


def test_no_cache_and_authorised_requests_read_the_store(cached_client, admin_headers):
    cached_client.get("/v1/products/p1")
    restock_behind_the_cache(cached_client)
    assert cached_client.get("/v1/products/p1", headers={"Cache-Control": "no-cache"}).get_json()["stock"] == 15
    fresh = cached_client.get("/v1/products/p1", headers=admin_headers)
    assert fresh.get_json()["stock"] == 15
    assert fresh.headers["ETag"] == '"2"'
    assert "no-cache" in fresh.headers["Cache-Control"]


def test_a_write_through_this_worker_clears_the_cache(cached_client, admin_headers):
    cached_client.get("/v1/products/p1")
    response = cached_client.post(
        "/v1/products/p1/stock", json={"delta": 2, "reason": "delivery"}, headers=admin_headers
    )
    assert response.status_code == 200
    assert cached_client.get("/v1/products/p1").get_json()["stock"] == 12


def test_a_failed_write_keeps_the_cache(cached_client, admin_headers):
    cached_client.get("/v1/products/p1")
    restock_behind_the_cache(cached_client)
    refused = cached_client.post("/v1/products/p1/stock", json={"delta": -99, "reason": "x"}, headers=admin_headers)
    assert refused.status_code == 409
    assert cached_client.get("/v1/products/p1").get_json()["stock"] == 10


def test_cached_responses_still_answer_conditional_requests(cached_client):
    etag = cached_client.get("/v1/products/p1").headers["ETag"]
    assert cached_client.get("/v1/products/p1", headers={"If-None-Match": etag}).status_code == 304
    assert cached_client.get("/v1/products/p1", headers={"If-None-Match": f"W/{etag}"}).status_code == 304


def test_errors_are_not_cached(cached_client):
    assert cached_client.get("/v1/products/p2").status_code == 404
    with cached_client.application.app_context():
        draft = products.ProductDraft(product_id="p2", sku="MUG-2", name="Mug", price=Decimal("1.00"))
        products.create_product(draft=draft)
    assert cached_client.get("/v1/products/p2").status_code == 200


def test_a_listing_total_is_counted_once_per_query_for_the_ttl(cached_client, admin_headers):
    """The count behind X-Pagination is kept with the cached pages, one per query: another page
    of the same query (or an authorised read of it) reuses it, another query counts its own."""
    with cached_client.application.app_context():
        for number, category in enumerate(["mugs", "mugs", "cups", "cups", "cups"], start=2):
            draft = products.ProductDraft(
                product_id=f"p{number}", sku=f"MUG-{number}", name="Mug", price=Decimal("5.00"), category=category
            )
            products.create_product(draft=draft)

    def total(headers=None, **params) -> int:
        response = cached_client.get("/v1/products", query_string={"page_size": 1, **params}, headers=headers)
        assert response.status_code == 200
        return json.loads(response.headers["X-Pagination"])["total"]

    assert (total(category="mugs"), total(category="cups")) == (2, 3)
    with cached_client.application.app_context():  # another worker adds one: this one does not know
        draft = products.ProductDraft(product_id="p9", sku="MUG-9", name="Mug", price=Decimal("5.00"), category="cups")
        products.create_product(draft=draft)
    assert total(category="cups", page=2) == 3
    assert total(admin_headers, category="cups") == 3
