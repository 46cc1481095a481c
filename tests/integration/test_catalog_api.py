"""The public catalog API end to end: HTTP in, real Mongo wire-protocol server behind.

Only what a client sees is asserted: status, headers, the problem+json `code` and `errors`.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token, create_refresh_token

from app.products import catalog
from app.products import interface as products
from tests.integration import test_holds
from tests.problems import expect_problem

ctx = test_holds.ctx
commands = test_holds.commands  # MongoDB commands counted

OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256-987654321"
MISSING = object()
_skus = itertools.count(1)


# --- helpers -------------------------------------------------------------------------------


def product_body(**overrides) -> dict:
    """A valid create body with a fresh SKU; an override of MISSING drops that field."""
    body = {"sku": f"SKU-{next(_skus):05d}", "name": "Trail running shoe", "price": "19.99", "stock": 5}
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not MISSING}


def create(client, headers, **overrides) -> dict:
    response = client.post("/v1/products", json=product_body(**overrides), headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def fetch(client, product_id: str, headers=None) -> dict:
    response = client.get(f"/v1/products/{product_id}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def patch(client, headers, product: dict, **changes):
    if_match = {"If-Match": f'"{product["version"]}"'}
    return client.patch(f"/v1/products/{product['productId']}", json=changes, headers={**headers, **if_match})


def adjust_stock(client, headers, product_id: str, **body):
    return client.post(f"/v1/products/{product_id}/stock", json=body, headers=headers)


def listing(client, **params):
    response = client.get("/v1/products", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def listed_ids(client, **params) -> list[str]:
    return [item["productId"] for item in listing(client, **params).get_json()]


def pagination(response) -> dict:
    return json.loads(response.headers["X-Pagination"])


def assert_recent(timestamp: str) -> None:
    moment = datetime.fromisoformat(timestamp)
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


def reserve_units(app, product_id: str, quantity: int, reservation_id: str = "cart-1") -> None:
    with app.app_context():
        products.reserve_stock(
            product_id=product_id,
            quantity=quantity,
            reservation_id=reservation_id,
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
        )


# --- POST /v1/products ---------------------------------------------------------------------


def test_create_answers_201_with_location_etag_and_the_product(client, admin_headers):
    sent = product_body(productId="shoe-1", sku="run-shoe-42", price="19.99", stock=7, category="Shoes")
    response = client.post("/v1/products", json=sent, headers=admin_headers)

    assert response.status_code == 201
    assert response.headers["Location"].endswith("/v1/products/shoe-1")
    assert response.headers["ETag"] == '"1"'
    body = response.get_json()
    assert set(body) == {
        *("productId", "sku", "name", "description", "category", "tags", "price", "currency"),
        *("stock", "reserved", "available", "status", "createdAt", "updatedAt", "version"),
    }
    assert body["productId"] == "shoe-1"
    assert body["sku"] == "RUN-SHOE-42"
    assert body["price"] == "19.99"
    assert body["currency"] == "USD"
    assert (body["stock"], body["reserved"], body["available"]) == (7, 0, 7)
    assert (body["status"], body["version"]) == ("active", 1)
    assert body["category"] == "shoes"
    assert_recent(body["createdAt"])
    assert_recent(body["updatedAt"])
    assert fetch(client, "shoe-1")["sku"] == "RUN-SHOE-42"


def test_create_generates_a_product_id_when_omitted(client, admin_headers):
    first = create(client, admin_headers)
    second = create(client, admin_headers)

    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", first["productId"])
    assert first["productId"] != second["productId"]
    assert fetch(client, first["productId"])["productId"] == first["productId"]


def test_create_location_header_leads_to_the_product(client, admin_headers):
    response = client.post("/v1/products", json=product_body(), headers=admin_headers)
    followed = client.get(response.headers["Location"])

    assert followed.status_code == 200
    assert followed.get_json()["productId"] == response.get_json()["productId"]


def test_create_accepts_json_with_a_charset(client, admin_headers):
    response = client.post(
        "/v1/products",
        data=json.dumps(product_body()),
        headers={**admin_headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


def test_created_product_reads_back_exactly_as_created(client, admin_headers):
    created = [create(client, admin_headers) for _ in range(3)]
    assert [fetch(client, product["productId"]) for product in created] == created


@pytest.fixture
def forged_tokens(app, token) -> dict[str, str]:
    """Tokens that must all be refused; each differs from a valid admin token in one way."""
    valid = token("admin", subject="admin-1")
    claims = pyjwt.decode(valid, options={"verify_signature": False})
    unsigned_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    with app.app_context():
        expired = create_access_token(
            identity="admin-1", additional_claims={"roles": ["admin"]}, expires_delta=timedelta(seconds=-1)
        )
        refresh = create_refresh_token(identity="admin-1", additional_claims={"roles": ["admin"]})
    return {
        "other_secret": pyjwt.encode(claims, OTHER_SECRET, algorithm="HS256"),
        "alg_none": f"{unsigned_header}.{valid.split('.')[1]}.",
        "expired": expired,
        "refresh": refresh,
    }


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        pytest.param(None, "token_missing", id="no-header"),
        pytest.param("Basic YWRtaW46YWRtaW4=", "token_missing", id="basic-auth"),
        pytest.param("Bearer not-a-jwt", "token_invalid", id="garbage"),
        pytest.param("Bearer {other_secret}", "token_invalid", id="signed-with-another-secret"),
        pytest.param("Bearer {alg_none}", "token_invalid", id="alg-none"),
        pytest.param("Bearer {refresh}", "token_invalid", id="refresh-token"),
        pytest.param("Bearer {expired}", "token_expired", id="expired"),
    ],
)
def test_create_refuses_a_missing_or_bad_token(client, forged_tokens, authorization, code):
    headers = {"Authorization": authorization.format(**forged_tokens)} if authorization else {}
    response = client.post("/v1/products", json=product_body(), headers=headers)

    expect_problem(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert listed_ids(client) == []


def test_create_refuses_a_customer(client, customer_headers):
    expect_problem(client.post("/v1/products", json=product_body(), headers=customer_headers), 403, "forbidden")
    assert listed_ids(client) == []


def test_create_refuses_a_taken_sku_whatever_its_case(client, admin_headers):
    create(client, admin_headers, sku="ABC-1")
    response = client.post("/v1/products", json=product_body(sku="abc-1"), headers=admin_headers)

    expect_problem(response, 409, "sku_taken")
    assert len(listed_ids(client)) == 1


def test_create_refuses_a_taken_product_id(client, admin_headers):
    create(client, admin_headers, productId="p-1", name="First")
    response = client.post("/v1/products", json=product_body(productId="p-1", name="Second"), headers=admin_headers)

    expect_problem(response, 409, "product_id_taken")
    assert fetch(client, "p-1")["name"] == "First"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"price": "-1.00"}, "price", id="negative-price"),
        pytest.param({"price": "1.234"}, "price", id="three-decimals"),
        pytest.param({"price": 19.99}, "price", id="price-as-json-number"),
        pytest.param({"price": "abc"}, "price", id="price-not-a-number"),
        pytest.param({"price": "100000000.00"}, "price", id="price-too-large"),
        pytest.param({"price": MISSING}, "price", id="price-missing"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "   "}, "name", id="blank-name"),
        pytest.param({"name": "x" * 201}, "name", id="name-too-long"),
        pytest.param({"name": MISSING}, "name", id="name-missing"),
        pytest.param({"foo": 1}, "foo", id="unknown-field"),
        pytest.param({"sku": "AB C!"}, "sku", id="sku-bad-chars"),
        pytest.param({"sku": "AB"}, "sku", id="sku-too-short"),
        pytest.param({"sku": MISSING}, "sku", id="sku-missing"),
        pytest.param({"currency": "usd1"}, "currency", id="currency-four-chars"),
        pytest.param({"stock": -1}, "stock", id="negative-stock"),
        pytest.param({"stock": "5"}, "stock", id="stock-as-string"),
        pytest.param({"stock": 1.5}, "stock", id="fractional-stock"),
        pytest.param({"stock": True}, "stock", id="stock-as-boolean"),
        pytest.param({"tags": [f"tag{i}" for i in range(21)]}, "tags", id="too-many-tags"),
        pytest.param({"tags": "shoes"}, "tags", id="tags-not-a-list"),
        pytest.param({"productId": "has space"}, "productId", id="product-id-bad-chars"),
        pytest.param({"productId": "x" * 65}, "productId", id="product-id-too-long"),
    ],
)
def test_create_rejects_invalid_fields_by_name(client, admin_headers, overrides, field):
    response = client.post("/v1/products", json=product_body(**overrides), headers=admin_headers)

    body = expect_problem(response, 400, "validation_error")
    assert set(body["errors"]) == {field}
    assert listed_ids(client) == []


def test_create_normalises_currency_and_tags(client, admin_headers):
    product = create(client, admin_headers, currency=" eur ", tags=["Running", "running ", "Trail"])
    assert product["currency"] == "EUR"
    assert product["tags"] == ["running", "trail"]


def test_create_rejects_malformed_json(client, admin_headers):
    response = client.post("/v1/products", data='{"sku": ', content_type="application/json", headers=admin_headers)
    expect_problem(response, 400, "malformed_json")


def test_create_rejects_a_body_that_is_not_json(client, admin_headers):
    response = client.post("/v1/products", data="sku=ABC-1", content_type="text/plain", headers=admin_headers)
    expect_problem(response, 415, "unsupported_media_type")


def test_create_rejects_a_json_array(client, admin_headers):
    response = client.post("/v1/products", json=[product_body()], headers=admin_headers)
    expect_problem(response, 400, "validation_error")
    assert listed_ids(client) == []


# --- GET /v1/products ----------------------------------------------------------------------


def test_list_returns_a_json_array_of_products_with_string_ids_and_prices(client, admin_headers):
    create(client, admin_headers, productId="a", price="5.00")
    create(client, admin_headers, productId="b", price="19.99")

    response = listing(client)
    items = response.get_json()
    assert isinstance(items, list)
    assert {item["productId"]: item["price"] for item in items} == {"a": "5.00", "b": "19.99"}
    assert pagination(response)["total"] == 2


def test_list_leaves_out_archived_products(client, admin_headers):
    create(client, admin_headers, productId="kept")
    create(client, admin_headers, productId="gone")
    assert client.delete("/v1/products/gone", headers=admin_headers).status_code == 204

    response = listing(client)
    assert [item["productId"] for item in response.get_json()] == ["kept"]
    assert pagination(response)["total"] == 1


def test_list_of_an_empty_catalog(client):
    response = listing(client)
    assert response.get_json() == []
    assert pagination(response) == {"total": 0, "total_pages": 0}


def test_list_pages_with_the_x_pagination_header(client, admin_headers):
    for product_id in ("p1", "p2", "p3"):
        create(client, admin_headers, productId=product_id)

    first = listing(client, page_size=2)
    second = listing(client, page_size=2, page=2)

    assert len(first.get_json()) == 2
    assert pagination(first) == {
        "total": 3,
        "total_pages": 2,
        "first_page": 1,
        "last_page": 2,
        "page": 1,
        "next_page": 2,
    }
    assert len(second.get_json()) == 1
    assert pagination(second)["page"] == 2
    assert pagination(second)["previous_page"] == 1
    every_id = [item["productId"] for item in first.get_json() + second.get_json()]
    assert sorted(every_id) == ["p1", "p2", "p3"]


@pytest.mark.parametrize(
    ("params", "total", "commands_sent"),
    [
        pytest.param({"page_size": 3}, 3, ["find"], id="one-full-page"),
        pytest.param({"page_size": 2}, 3, ["find", "aggregate"], id="a-next-page-counted"),
        pytest.param({"page_size": 2, "page": 2}, 3, ["find"], id="the-last-page"),
        pytest.param({"page_size": 2, "page": 3}, 3, ["find", "aggregate"], id="past-the-end-counted"),
        pytest.param({"category": "garden"}, 0, ["find"], id="nothing-matches"),
    ],
)
def test_list_counts_the_total_only_when_its_page_cannot_tell_it(
    client, admin_headers, commands, params, total, commands_sent
):
    for product_id in ("p1", "p2", "p3"):
        create(client, admin_headers, productId=product_id)

    commands.names.clear()
    response = listing(client, **params)

    assert pagination(response)["total"] == total
    assert commands.names == commands_sent


def test_list_default_page_size_is_20(client, admin_headers):
    for number in range(21):
        create(client, admin_headers, productId=f"p{number:02d}")

    response = listing(client)
    assert len(response.get_json()) == 20
    assert pagination(response)["total"] == 21
    assert pagination(response)["total_pages"] == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"page_size": 101}, "page_size", id="page-size-101"),
        pytest.param({"page_size": 100000}, "page_size", id="page-size-huge"),
        pytest.param({"page_size": 0}, "page_size", id="page-size-0"),
        pytest.param({"page": 0}, "page", id="page-0"),
        pytest.param({"page": "first"}, "page", id="page-not-a-number"),
        pytest.param({"min_price": "cheap"}, "min_price", id="min-price-not-a-number"),
        pytest.param({"max_price": "-1"}, "max_price", id="negative-max-price"),
        pytest.param({"min_price": "20.00", "max_price": "10.00"}, "min_price", id="min-above-max"),
        pytest.param({"in_stock": "maybe"}, "in_stock", id="in-stock-not-a-boolean"),
        pytest.param({"sort": "stock"}, "sort", id="unknown-sort-key"),
        pytest.param({"q": "   "}, "q", id="blank-q"),
    ],
)
def test_list_rejects_invalid_query_parameters(client, params, field):
    response = client.get("/v1/products", query_string=params)
    body = expect_problem(response, 400, "validation_error")
    assert set(body["errors"]) == {field}


def test_list_accepts_the_largest_page_size(client, admin_headers):
    create(client, admin_headers)
    assert len(listing(client, page_size=100).get_json()) == 1


def test_list_with_an_absurd_page_number_is_not_a_server_error(client, admin_headers):
    create(client, admin_headers)
    response = client.get("/v1/products", query_string={"page": 10**18})
    assert response.status_code in (200, 400), response.get_data(as_text=True)


def test_list_ignores_unknown_query_parameters(client, admin_headers):
    create(client, admin_headers, productId="cheap", price="1.00")
    create(client, admin_headers, productId="dear", price="9.00")

    assert listed_ids(client, sort="price", foo="bar", page_size=10, limit=1) == ["cheap", "dear"]


@pytest.fixture
def searchable(client, admin_headers) -> None:
    create(client, admin_headers, productId="trail", name="Trail Running Shoe", description="Light and fast.")
    create(client, admin_headers, productId="road", name="Road running shoe", description="Cushioned.")
    create(client, admin_headers, productId="mug", name="Café mug", description="Ceramic, 300 ml.")


@pytest.mark.usefixtures("searchable")
@pytest.mark.parametrize(
    ("q", "expected"),
    [
        pytest.param("running", {"trail", "road"}, id="one-word"),
        pytest.param("running trail", {"trail"}, id="every-word-must-appear"),
        pytest.param("SHOE  Road", {"road"}, id="case-insensitive"),
        pytest.param("cafe", {"mug"}, id="accent-insensitive"),
        pytest.param("CAFÉ ceramic", {"mug"}, id="name-and-description"),
        pytest.param("fast", {"trail"}, id="description-only"),
        pytest.param("running mug", set(), id="words-from-different-products"),
        pytest.param("boot", set(), id="no-match"),
        pytest.param("-- !?", set(), id="no-words-no-match"),
    ],
)
def test_list_searches_names_and_descriptions(client, q, expected):
    assert set(listed_ids(client, q=q)) == expected


def test_list_filters_by_category(client, admin_headers):
    create(client, admin_headers, productId="shoe", category="Shoes")
    create(client, admin_headers, productId="mug", category="Kitchen")

    assert listed_ids(client, category="shoes") == ["shoe"]
    assert listed_ids(client, category="SHOES") == ["shoe"]
    assert listed_ids(client, category="garden") == []


def test_list_filters_by_tag(client, admin_headers):
    create(client, admin_headers, productId="shoe", category="Shoes", tags=["Running", "trail"])
    create(client, admin_headers, productId="mug", category="Kitchen", tags=["ceramic"])

    assert listed_ids(client, tag="running") == ["shoe"]
    assert listed_ids(client, tag="Ceramic") == ["mug"]
    assert listed_ids(client, category="kitchen", tag="running") == []


def test_list_filters_by_an_inclusive_price_range(client, admin_headers):
    for product_id, price in (("five", "5.00"), ("ten", "10.00"), ("fifteen", "15.00"), ("twenty", "20.01")):
        create(client, admin_headers, productId=product_id, price=price)

    assert listed_ids(client, min_price="10.00", max_price="15.00", sort="price") == ["ten", "fifteen"]
    assert listed_ids(client, min_price="10", sort="price") == ["ten", "fifteen", "twenty"]
    assert listed_ids(client, max_price="5.00") == ["five"]
    assert listed_ids(client, min_price="20.00", max_price="20.00") == []


def test_list_filters_by_availability(client, admin_headers, app):
    create(client, admin_headers, productId="stocked", stock=3)
    create(client, admin_headers, productId="empty", stock=0)
    create(client, admin_headers, productId="all-reserved", stock=2)
    reserve_units(app, "all-reserved", 2)

    assert listed_ids(client, in_stock="true") == ["stocked"]
    assert sorted(listed_ids(client, in_stock="false")) == ["all-reserved", "empty"]
    assert len(listed_ids(client)) == 3


@pytest.fixture
def fruit(client, admin_headers) -> None:
    """Every sort gives a different order, none of them the productId order; created a few ms apart."""
    for product_id, name, price in (("x", "Cherry", "10.00"), ("y", "Apple", "5.00"), ("z", "Banana", "15.00")):
        create(client, admin_headers, productId=product_id, name=name, price=price)
        time.sleep(0.01)


@pytest.mark.usefixtures("fruit")
@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        pytest.param("price", ["y", "x", "z"], id="price"),
        pytest.param("-price", ["z", "x", "y"], id="-price"),
        pytest.param("name", ["y", "z", "x"], id="name"),
        pytest.param("-createdAt", ["z", "y", "x"], id="-createdAt"),
        pytest.param("createdAt", ["x", "y", "z"], id="createdAt"),
    ],
)
def test_list_sorts(client, sort, expected):
    assert listed_ids(client, sort=sort) == expected


@pytest.mark.usefixtures("fruit")
def test_list_oldest_first_by_default_like_the_original(client):
    assert listed_ids(client) == ["x", "y", "z"]


# --- GET /v1/products/<id> -----------------------------------------------------------------


def test_get_answers_with_an_etag_and_304_when_it_still_matches(client, admin_headers):
    create(client, admin_headers, productId="p1")

    response = client.get("/v1/products/p1")
    assert response.headers["ETag"] == '"1"'

    cached = client.get("/v1/products/p1", headers={"If-None-Match": response.headers["ETag"]})
    assert cached.status_code == 304
    assert cached.headers["ETag"] == '"1"'
    assert cached.get_data() == b""

    stale = client.get("/v1/products/p1", headers={"If-None-Match": '"0"'})
    assert stale.status_code == 200
    assert stale.get_json()["productId"] == "p1"


def test_get_answers_304_to_a_weak_validator(client, admin_headers):
    create(client, admin_headers, productId="p1")
    assert client.get("/v1/products/p1", headers={"If-None-Match": 'W/"1"'}).status_code == 304


def test_get_unknown_product_is_a_404_problem(client):
    body = expect_problem(client.get("/v1/products/nope"), 404, "product_not_found")
    assert body["instance"] == "/v1/products/nope"


@pytest.mark.parametrize(
    "path_id",
    [
        pytest.param("507f1f77bcf86cd799439011", id="object-id"),
        pytest.param("%24where", id="operator-like"),
        pytest.param("%7B%22%24ne%22%3A%22%22%7D", id="json-operator"),
        pytest.param("x" * 300, id="300-chars"),
        pytest.param("a%20b", id="with-space"),
        pytest.param("%00", id="nul"),
        pytest.param("%E2%98%83", id="non-ascii"),
    ],
)
def test_get_odd_ids_are_404_not_500(client, admin_headers, path_id):
    create(client, admin_headers, productId="existing")
    expect_problem(client.get(f"/v1/products/{path_id}"), 404, "product_not_found")


# --- PATCH /v1/products/<id> ---------------------------------------------------------------


def test_patch_without_if_match_is_428(client, admin_headers):
    create(client, admin_headers, productId="p1", name="Original")
    response = client.patch("/v1/products/p1", json={"name": "Renamed"}, headers=admin_headers)

    expect_problem(response, 428, "precondition_required")
    assert fetch(client, "p1")["name"] == "Original"


def test_patch_with_a_stale_etag_is_412(client, admin_headers):
    product = create(client, admin_headers, productId="p1")
    assert patch(client, admin_headers, product, name="First rename").status_code == 200

    response = patch(client, admin_headers, product, name="Second rename")
    expect_problem(response, 412, "precondition_failed")
    assert fetch(client, "p1")["name"] == "First rename"


def test_patch_losing_to_a_change_made_after_its_version_check_is_412(client, admin_headers, app, monkeypatch):
    """A stock delivery lands between the If-Match check and the write: the write does not
    apply, and the answer names the version there is now."""
    product = create(client, admin_headers, productId="p1", name="Original", stock=5)
    write = catalog.find_one_and_update_raising_on_duplicate

    def a_delivery_lands_first(*args, **kwargs):
        products.adjust_stock(product_id="p1", delta=4, reason="delivery")
        return write(*args, **kwargs)

    monkeypatch.setattr(catalog, "find_one_and_update_raising_on_duplicate", a_delivery_lands_first)
    response = patch(client, admin_headers, product, name="Renamed")

    body = expect_problem(
        response, 412, "precondition_failed", detail="Product 'p1' has changed (now version 2); fetch it again."
    )
    assert body["currentVersion"] == 2
    assert (fetch(client, "p1")["name"], fetch(client, "p1")["stock"]) == ("Original", 9)


@pytest.mark.parametrize(
    "if_match",
    [
        pytest.param("garbage", id="unquoted-word"),
        pytest.param('"abc"', id="not-a-version"),
        pytest.param('W/"1"', id="weak"),
        pytest.param('"1", "2"', id="two-etags"),
        pytest.param('"-1"', id="negative"),
    ],
)
def test_patch_with_an_unusable_if_match_is_412(client, admin_headers, if_match):
    create(client, admin_headers, productId="p1", name="Original")
    response = client.patch(
        "/v1/products/p1", json={"name": "Renamed"}, headers={**admin_headers, "If-Match": if_match}
    )

    expect_problem(response, 412, "precondition_failed")
    assert fetch(client, "p1")["name"] == "Original"


def test_patch_with_a_superscript_digit_if_match_is_412_not_500(client, admin_headers):
    create(client, admin_headers, productId="p1")
    response = client.patch("/v1/products/p1", json={"name": "Renamed"}, headers={**admin_headers, "If-Match": '"²"'})
    expect_problem(response, 412, "precondition_failed")


def test_patch_applies_changes_and_bumps_the_version(client, admin_headers):
    product = create(client, admin_headers, productId="p1", name="Trail running shoe", price="19.99")

    response = patch(client, admin_headers, product, name="Waterproof hiking boot", price="24.50")

    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    body = response.get_json()
    assert (body["name"], body["price"], body["version"]) == ("Waterproof hiking boot", "24.50", 2)
    assert body["sku"] == product["sku"]
    assert fetch(client, "p1")["price"] == "24.50"
    assert client.get("/v1/products/p1", headers={"If-None-Match": '"1"'}).status_code == 200


def test_patch_updates_what_search_finds(client, admin_headers):
    product = create(client, admin_headers, productId="p1", name="Trail running shoe", description="Light and fast.")
    renamed = patch(client, admin_headers, product, name="Waterproof hiking boot")
    assert renamed.status_code == 200

    assert listed_ids(client, q="hiking boot") == ["p1"]
    assert listed_ids(client, q="trail") == []
    assert listed_ids(client, q="boot fast") == ["p1"]  # the description's words stay searchable

    described = patch(client, admin_headers, renamed.get_json(), description="Warm and dry.")
    assert described.status_code == 200
    assert listed_ids(client, q="hiking dry") == ["p1"]
    assert listed_ids(client, q="fast") == []


def test_patch_normalises_the_category_as_create_does(client, admin_headers):
    product = create(client, admin_headers, productId="p1", category="Shoes")

    same = patch(client, admin_headers, product, category=" SHOES ")
    assert (same.status_code, same.headers["ETag"], same.get_json()["category"]) == (200, '"1"', "shoes")

    moved = patch(client, admin_headers, product, category=" Trail Shoes")
    assert (moved.status_code, moved.headers["ETag"]) == (200, '"2"')
    assert moved.get_json()["category"] == fetch(client, "p1")["category"] == "trail shoes"
    assert listed_ids(client, category="Trail Shoes") == ["p1"]
    assert listed_ids(client, category="shoes") == []


def test_patch_that_changes_nothing_keeps_the_version(client, admin_headers):
    product = create(client, admin_headers, productId="p1", name="Mug")
    response = patch(client, admin_headers, product, name="Mug")

    assert response.status_code == 200
    assert response.headers["ETag"] == '"1"'


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({}, "_schema", id="empty-body"),
        pytest.param({"foo": 1}, "foo", id="unknown-field"),
        pytest.param({"price": 5}, "price", id="price-as-number"),
        pytest.param({"price": None}, "price", id="null-price"),
        pytest.param({"name": "  "}, "name", id="blank-name"),
        pytest.param({"status": "deleted"}, "status", id="unknown-status"),
        pytest.param({"stock": 10}, "stock", id="stock-goes-through-the-stock-endpoint"),
    ],
)
def test_patch_rejects_invalid_changes(client, admin_headers, changes, field):
    product = create(client, admin_headers, productId="p1")
    body = expect_problem(patch(client, admin_headers, product, **changes), 400, "validation_error")

    assert set(body["errors"]) == {field}
    assert fetch(client, "p1")["version"] == 1


def test_patch_to_a_taken_sku_is_409(client, admin_headers):
    create(client, admin_headers, productId="p1", sku="TAKEN-1")
    product = create(client, admin_headers, productId="p2", sku="MINE-2")

    body = expect_problem(
        patch(client, admin_headers, product, sku="taken-1"), 409, "sku_taken", detail="SKU 'TAKEN-1' is already taken."
    )
    assert body["sku"] == "TAKEN-1"
    assert fetch(client, "p2")["sku"] == "MINE-2"


def test_patch_unknown_product_is_404(client, admin_headers):
    response = client.patch("/v1/products/nope", json={"name": "X"}, headers={**admin_headers, "If-Match": '"1"'})
    expect_problem(response, 404, "product_not_found")


def test_patch_status_active_restores_an_archived_product(client, admin_headers):
    create(client, admin_headers, productId="p1")
    assert client.delete("/v1/products/p1", headers=admin_headers).status_code == 204
    archived = fetch(client, "p1", admin_headers)
    assert listed_ids(client) == []

    response = patch(client, admin_headers, archived, status="active")

    assert response.status_code == 200
    assert response.get_json()["status"] == "active"
    assert listed_ids(client) == ["p1"]


# --- DELETE /v1/products/<id> --------------------------------------------------------------


def test_delete_archives_without_losing_the_product(client, admin_headers):
    create(client, admin_headers, productId="p1", name="Mug", price="7.50", stock=4)
    before = fetch(client, "p1")

    response = client.delete("/v1/products/p1", headers=admin_headers)

    assert response.status_code == 204
    assert response.get_data() == b""
    assert listed_ids(client) == []
    after = fetch(client, "p1", admin_headers)
    assert (after["status"], after["version"]) == ("archived", 2)
    kept = ("productId", "sku", "name", "price", "stock", "createdAt")
    assert {key: after[key] for key in kept} == {key: before[key] for key in kept}


def test_delete_twice_is_still_204_and_changes_nothing_more(client, admin_headers):
    create(client, admin_headers, productId="p1")

    assert client.delete("/v1/products/p1", headers=admin_headers).status_code == 204
    assert client.delete("/v1/products/p1", headers=admin_headers).status_code == 204
    assert fetch(client, "p1", admin_headers)["version"] == 2


def test_delete_unknown_product_is_404(client, admin_headers):
    expect_problem(client.delete("/v1/products/nope", headers=admin_headers), 404, "product_not_found")


# --- POST /v1/products/<id>/stock ----------------------------------------------------------


def test_stock_adjustment_changes_stock_and_bumps_the_version(client, admin_headers):
    create(client, admin_headers, productId="p1", stock=5)

    response = adjust_stock(client, admin_headers, "p1", delta=5, reason="restock")

    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    body = response.get_json()
    assert (body["stock"], body["available"], body["version"]) == (10, 10, 2)
    assert adjust_stock(client, admin_headers, "p1", delta=-3, reason="damaged").get_json()["stock"] == 7
    assert fetch(client, "p1")["stock"] == 7


@pytest.mark.parametrize(
    ("adjustment", "field"),
    [
        pytest.param({"delta": 0, "reason": "nothing"}, "delta", id="zero"),
        pytest.param({"delta": "5", "reason": "restock"}, "delta", id="delta-as-string"),
        pytest.param({"delta": 1.5, "reason": "restock"}, "delta", id="fractional-delta"),
        pytest.param({"reason": "restock"}, "delta", id="delta-missing"),
        pytest.param({"delta": 5}, "reason", id="reason-missing"),
        pytest.param({"delta": 5, "reason": "   "}, "reason", id="blank-reason"),
    ],
)
def test_stock_adjustment_rejects_invalid_bodies(client, admin_headers, adjustment, field):
    create(client, admin_headers, productId="p1", stock=5)
    body = expect_problem(adjust_stock(client, admin_headers, "p1", **adjustment), 400, "validation_error")

    assert set(body["errors"]) == {field}
    assert fetch(client, "p1")["stock"] == 5


def test_stock_cannot_drop_below_zero(client, admin_headers):
    create(client, admin_headers, productId="p1", stock=2)

    expect_problem(adjust_stock(client, admin_headers, "p1", delta=-3, reason="lost"), 409, "stock_below_reserved")
    assert fetch(client, "p1")["stock"] == 2


def test_stock_cannot_drop_below_the_reserved_units(client, admin_headers, app):
    create(client, admin_headers, productId="p1", stock=5)
    reserve_units(app, "p1", 3)

    refused = adjust_stock(client, admin_headers, "p1", delta=-3, reason="lost")
    body = expect_problem(refused, 409, "stock_below_reserved", detail="Stock cannot drop by 3: 5 on hand, 3 reserved.")
    assert (body["stock"], body["reserved"]) == (5, 3)

    allowed = adjust_stock(client, admin_headers, "p1", delta=-2, reason="lost")
    assert allowed.status_code == 200
    assert (allowed.get_json()["stock"], allowed.get_json()["available"]) == (3, 0)


def test_stock_adjustment_of_unknown_product_is_404(client, admin_headers):
    response = adjust_stock(client, admin_headers, "nope", delta=1, reason="restock")
    expect_problem(response, 404, "product_not_found")


# --- every admin operation needs an admin --------------------------------------------------

ADMIN_OPERATIONS = [
    pytest.param("post", "/v1/products", product_body(sku="NEW-1"), id="create"),
    pytest.param("patch", "/v1/products/p1", {"name": "Renamed"}, id="patch"),
    pytest.param("delete", "/v1/products/p1", None, id="delete"),
    pytest.param("post", "/v1/products/p1/stock", {"delta": 1, "reason": "restock"}, id="stock"),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_OPERATIONS)
@pytest.mark.parametrize(
    ("who", "status", "code"), [("anonymous", 401, "token_missing"), ("customer", 403, "forbidden")]
)
def test_admin_operations_refuse_others(client, admin_headers, customer_headers, method, path, body, who, status, code):
    create(client, admin_headers, productId="p1")
    headers = {"If-Match": '"1"', **(customer_headers if who == "customer" else {})}

    response = getattr(client, method)(path, json=body, headers=headers)

    expect_problem(response, status, code)
    assert listed_ids(client) == ["p1"]
    assert fetch(client, "p1")["version"] == 1


# --- errors outside the resources ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/nope", "/v1/products/p1/nope"])
def test_unknown_route_is_a_404_problem(client, path):
    body = expect_problem(client.get(path), 404, "not_found")
    assert body["instance"] == path


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/v1/products", {"GET", "POST"}),
        ("put", "/v1/products/p1", {"GET", "PATCH", "DELETE"}),
        ("get", "/v1/products/p1/stock", {"POST"}),
        ("post", "/v1/health", {"GET"}),
    ],
)
def test_wrong_method_is_a_405_problem_with_allow(client, method, path, allowed):
    response = getattr(client, method)(path)

    expect_problem(response, 405, "method_not_allowed")
    assert allowed <= {verb.strip() for verb in response.headers["Allow"].split(",")}


# --- health and docs -----------------------------------------------------------------------


def test_health_reports_ok(client):
    response = client.get("/v1/health")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["service"] == "api-gateway"
    assert body["dependencies"]["productsService"]["status"] == "ok"
    assert_recent(body["timestamp"])


def test_swagger_ui_and_its_assets_are_served_locally(client):
    page = client.get("/api/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"

    assets = set(re.findall(r'(?:src|href)="(/api/assets/[^"]+)"', page.get_data(as_text=True)))
    assert {"/api/assets/swagger-ui-bundle.js", "/api/assets/swagger-ui.css"} <= assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.get_data()) > 1000, asset
        response.close()


def test_openapi_document_describes_the_catalog_and_its_security(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()

    paths = spec["paths"]
    assert {"/v1/products", "/v1/products/{product_id}", "/v1/products/{product_id}/stock", "/v1/health"} <= set(paths)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    admin_operations = [
        paths["/v1/products"]["post"],
        paths["/v1/products/{product_id}"]["patch"],
        paths["/v1/products/{product_id}"]["delete"],
        paths["/v1/products/{product_id}/stock"]["post"],
    ]
    assert all(operation.get("security") == [{"bearerAuth": []}] for operation in admin_operations)
    assert "security" not in paths["/v1/products"]["get"]
    assert "security" not in paths["/v1/products/{product_id}"]["get"]


def test_openapi_document_describes_the_internal_service_api(service_app):
    spec = service_app.test_client().get("/api/openapi.json").get_json()  # the service's own document

    reserve = spec["paths"]["/internal/products/reserve_stock"]["post"]
    assert reserve["security"] == [{"serviceKey": []}]
    body = reserve["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["product_id", "quantity", "reservation_id", "expires_at"]
    assert "Idempotent" in reserve["description"]
    assert "Idempotent" not in spec["paths"]["/internal/cart/add_item"]["post"]["description"]
    assert "/internal/accounts/log_in" in spec["paths"]


@pytest.mark.parametrize("path", ["/v1/products", "/v1/users", "/v1/orders", "/v1/admin/audit"])
@pytest.mark.parametrize("page", ["10001", "2147483648", "131564076378785906688"])
def test_a_page_past_the_deepest_of_any_listing_is_a_400_problem(client, admin_headers, path, page):
    """Found by the API fuzzing run: a page number past what PostgreSQL's offsets hold was a 500."""
    body = expect_problem(client.get(f"{path}?page={page}&page_size=5", headers=admin_headers), 400, "validation_error")
    assert body["errors"] == {"page": ["Must be at most 10000; narrow the listing instead."]}


@pytest.mark.parametrize("path", ["/v1/products", "/v1/users", "/v1/orders", "/v1/admin/audit"])
def test_the_deepest_page_of_any_listing_is_an_empty_page(client, admin_headers, path):
    answer = client.get(f"{path}?page=10000&page_size=100", headers=admin_headers)
    assert (answer.status_code, answer.get_json()) == (200, [])
