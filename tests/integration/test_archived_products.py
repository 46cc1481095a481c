"""An archived product is the admins' business: anyone else reads 404 product_not_found, as for
an unknown product, and never sees its stock; the listing shows active products only."""

from decimal import Decimal

import pytest

from app.products import interface as products
from tests.integration import test_holds
from tests.problems import PROBLEM

ctx = test_holds.ctx
commands = test_holds.commands  # MongoDB commands counted


@pytest.fixture
def archived(client, admin_headers) -> dict:
    body = {"productId": "old-1", "sku": "OLD-0001", "name": "Retired mug", "price": "7.50", "stock": 12}
    created = client.post("/v1/products", json=body, headers=admin_headers)
    assert created.status_code == 201
    assert client.delete("/v1/products/old-1", headers=admin_headers).status_code == 204
    return created.get_json()


def assert_not_found(response) -> None:
    assert response.status_code == 404
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["code"] == "product_not_found"
    assert body["productId"] == "old-1"
    assert "stock" not in body


@pytest.mark.usefixtures("archived")
def test_anonymous_callers_get_404_for_an_archived_product(client):
    assert_not_found(client.get("/v1/products/old-1"))


@pytest.mark.usefixtures("archived")
def test_customers_get_404_for_an_archived_product(client, customer_headers):
    assert_not_found(client.get("/v1/products/old-1", headers=customer_headers))


@pytest.mark.usefixtures("archived")
def test_a_bad_token_reads_as_anonymous_not_401(client):
    assert_not_found(client.get("/v1/products/old-1", headers={"Authorization": "Bearer not-a-token"}))


def test_a_known_etag_does_not_reveal_an_archived_product(client, archived):
    response = client.get("/v1/products/old-1", headers={"If-None-Match": '"2"'})
    assert_not_found(response)


@pytest.mark.usefixtures("archived")
def test_admins_still_read_an_archived_product_with_its_stock(client, admin_headers):
    response = client.get("/v1/products/old-1", headers=admin_headers)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["stock"]) == ("archived", 12)


@pytest.mark.usefixtures("archived")
def test_the_listing_leaves_archived_products_out_for_everyone(client, admin_headers, customer_headers):
    for headers in (None, customer_headers, admin_headers):
        response = client.get("/v1/products", headers=headers)
        assert response.status_code == 200
        assert [product["productId"] for product in response.get_json()] == []


def test_a_cached_read_does_not_outlive_the_archive(other_app, admin_headers):
    cached = other_app(catalog_cache_ttl=60).test_client()
    body = {"productId": "old-1", "sku": "OLD-0001", "name": "Retired mug", "price": "7.50", "stock": 12}
    assert cached.post("/v1/products", json=body, headers=admin_headers).status_code == 201
    assert cached.get("/v1/products/old-1").status_code == 200  # now in the worker's micro-cache
    assert cached.delete("/v1/products/old-1", headers=admin_headers).status_code == 204
    assert_not_found(cached.get("/v1/products/old-1"))


def test_the_openapi_document_says_who_gets_404(client):
    spec = client.get("/api/openapi.json").get_json()
    described = spec["paths"]["/v1/products/{product_id}"]["get"]["responses"]["404"]["description"]
    assert "archived" in described


def test_archiving_is_one_command_and_archiving_again_one_read_more(commands):
    products.create_product(
        draft=products.ProductDraft(product_id="old-1", sku="OLD-0001", name="Retired mug", price=Decimal("7.50"))
    )

    commands.names.clear()
    archived = products.archive_product(product_id="old-1")
    assert commands.names == ["findAndModify"]  # the answer is the product the update returned
    assert (archived.status, archived.version) == ("archived", 2)

    commands.names.clear()
    assert products.archive_product(product_id="old-1") == archived
    assert commands.names == ["findAndModify", "find"]  # matched nothing: the product is read as it is
