"""The internal service API, `POST /internal/<module>/<function>`, through the test client.

What another service sees is asserted: status, the problem+json `code`, `exception` and
extensions, the `{"result": ...}` document, and the effect on the catalog's public view.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from werkzeug.test import Client

from tests.conftest import CART_KEY, GATEWAY_KEY
from tests.problems import expect_problem

SERVICE_HEADERS = {"X-Service-Key": GATEWAY_KEY, "X-Service-Caller": "gateway"}
CART_SERVICE = {"X-Service-Key": CART_KEY, "X-Service-Caller": "cart"}


@pytest.fixture
def client(app, service_app) -> Client:
    """/internal/* goes to the service app (the only kind of process serving it), the public
    /v1 API to the monolith; both share the stores, so a call's effect shows in the catalog."""

    def dispatch(environ, start_response):
        target = service_app if environ["PATH_INFO"].startswith("/internal/") else app
        return target.wsgi_app(environ, start_response)

    return Client(dispatch, app.response_class, use_cookies=False)


# --- helpers -------------------------------------------------------------------------------


def call(client, module: str, function: str, headers=SERVICE_HEADERS, **arguments):
    return client.post(f"/internal/{module}/{function}", json=arguments, headers=headers)


def result(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()["result"]


def in_fifteen_minutes() -> str:
    return (datetime.now(UTC) + timedelta(minutes=15)).replace(microsecond=0).isoformat()


def create(client, product_id: str = "p1", stock: int = 5, **fields) -> dict:
    draft = {"sku": f"SKU-{product_id.upper()}", "name": "Trail shoe", "price": "19.99", "stock": stock, **fields}
    return result(call(client, "products", "create_product", draft={"product_id": product_id, **draft}))


def reserve(client, reservation_id: str = "r1", product_id: str = "p1", quantity: int = 2, expires_at=None):
    return call(
        client,
        "products",
        "reserve_stock",
        product_id=product_id,
        quantity=quantity,
        reservation_id=reservation_id,
        expires_at=expires_at or in_fifteen_minutes(),
    )


def public(client, product_id: str = "p1") -> dict:
    response = client.get(f"/v1/products/{product_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def counters(client, product_id: str = "p1") -> tuple[int, int, int]:
    product = public(client, product_id)
    return product["stock"], product["reserved"], product["available"]


# --- service credentials -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "service_key_invalid"),
        ({"X-Service-Caller": "gateway"}, "service_key_invalid"),
        ({"X-Service-Key": "wrong-key", "X-Service-Caller": "gateway"}, "service_key_invalid"),
        ({"X-Service-Key": GATEWAY_KEY + "-but-longer", "X-Service-Caller": "gateway"}, "service_key_invalid"),
        ({"X-Service-Key": CART_KEY, "X-Service-Caller": "gateway"}, "service_key_invalid"),
        ({"X-Service-Key": GATEWAY_KEY}, "service_caller_missing"),
        ({"X-Service-Key": GATEWAY_KEY, "X-Service-Caller": "  "}, "service_caller_missing"),
    ],
    ids=["nothing", "no-key", "wrong-key", "longer-key", "another-callers-key", "no-caller", "blank-caller"],
)
@pytest.mark.parametrize(
    ("module", "function", "arguments"),
    [
        ("products", "reserve_stock", {"product_id": "p1", "quantity": 1, "reservation_id": "r1"}),
        ("products", "adjust_stock", {"product_id": "p1", "delta": -5, "reason": "theft"}),
        ("products", "get_product", {"product_id": "p1"}),
        ("products", "no_such_function", {}),
        ("cart", "add_item", {"owner_id": "guest:1", "product_id": "p1", "quantity": 1}),
        ("accounts", "start_guest_session", {}),
    ],
    ids=["reserve_stock", "adjust_stock", "get_product", "unknown", "cart.add_item", "accounts"],
)
def test_internal_calls_need_a_service_key_and_a_caller(client, headers, code, module, function, arguments):
    create(client, stock=5)
    if "reservation_id" in arguments:
        arguments = {**arguments, "expires_at": in_fifteen_minutes()}

    body = expect_problem(call(client, module, function, headers=headers, **arguments), 401, code)

    assert "exception" not in body
    assert "result" not in body
    assert counters(client) == (5, 0, 5)
    cart = result(call(client, "cart", "get_cart", owner_id="guest:1"))
    assert cart["items"] == []


@pytest.mark.parametrize(
    ("module", "function", "arguments"),
    [
        ("accounts", "create_admin", {"email": "evil@example.test", "password": "correct horse battery 9"}),
        ("products", "adjust_stock", {"product_id": "p1", "delta": 100, "reason": "free stock"}),
        ("products", "delete_all_products", {}),
        ("cart", "get_cart", {"owner_id": "guest:1"}),
    ],
    ids=["accounts.create_admin", "products.adjust_stock", "products.delete_all_products", "cart.get_cart"],
)
def test_the_cart_services_key_calls_only_what_a_cart_needs(client, module, function, arguments):
    create(client, stock=5)

    body = expect_problem(
        call(client, module, function, headers=CART_SERVICE, **arguments), 403, "service_scope_denied"
    )

    assert "result" not in body
    assert counters(client) == (5, 0, 5)
    assert result(call(client, "accounts", "list_users"))["total"] == 0  # no admin was made


def test_the_cart_services_key_holds_reads_and_sells_stock(client):
    create(client, stock=5)
    assert result(call(client, "products", "get_product", headers=CART_SERVICE, product_id="p1"))["stock"] == 5
    held = call(
        client,
        "products",
        "reserve_stock",
        headers=CART_SERVICE,
        product_id="p1",
        quantity=2,
        reservation_id="r1",
        expires_at=in_fifteen_minutes(),
    )
    assert result(held)["quantity"] == 2
    result(call(client, "products", "commit_reservation", headers=CART_SERVICE, product_id="p1", reservation_id="r1"))
    assert counters(client) == (3, 0, 3)


def test_the_public_listener_serves_no_internal_route_and_documents_none(app, service_app):
    public = app.test_client()
    assert (
        public.post("/internal/products/get_product", json={"product_id": "p1"}, headers=SERVICE_HEADERS).status_code
        == 404
    )
    assert not [path for path in public.get("/api/openapi.json").get_json()["paths"] if path.startswith("/internal")]
    internal_paths = service_app.test_client().get("/api/openapi.json").get_json()["paths"]
    assert "/internal/products/reserve_stock" in internal_paths
    assert not [path for path in internal_paths if path.startswith("/v1/") and path != "/v1/health"]


def test_an_internal_route_answers_no_other_method(client):
    response = client.get("/internal/products/get_product", headers=SERVICE_HEADERS)

    expect_problem(response, 405, "method_not_allowed")


def test_an_unknown_function_is_404(client):
    body = expect_problem(call(client, "products", "drop_database"), 404, "not_found")
    assert "drop_database" in body["detail"]
    expect_problem(call(client, "gateway", "get_product", product_id="p1"), 404, "not_found")


# --- argument validation -------------------------------------------------------------------


def test_unknown_and_missing_arguments_are_400_naming_each(client):
    response = call(client, "products", "reserve_stock", product_id="p1", quantity=1, colour="red")

    body = expect_problem(response, 400, "validation_error")
    assert body["errors"] == {
        "colour": ["Unknown argument."],
        "reservation_id": ["Missing argument."],
        "expires_at": ["Missing argument."],
    }


def test_a_body_that_is_not_an_object_is_400(client):
    response = client.post("/internal/products/get_product", json=["p1"], headers=SERVICE_HEADERS)

    expect_problem(response, 400, "validation_error")


def test_an_expiry_without_a_utc_offset_is_refused(client):
    create(client, stock=2)
    naive = (datetime.now(UTC) + timedelta(minutes=15)).replace(tzinfo=None).isoformat()

    body = expect_problem(reserve(client, quantity=1, expires_at=naive), 400, "validation_error")

    assert set(body["errors"]) == {"expires_at"}
    assert counters(client) == (2, 0, 2)


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:00:00-05:00", "tomorrow", 1700000000])
def test_an_expiry_out_of_range_or_not_a_date_is_refused(client, expires_at):
    create(client, stock=5)

    body = expect_problem(reserve(client, quantity=3, expires_at=expires_at), 400, "validation_error")

    assert set(body["errors"]) == {"expires_at"}
    assert counters(client) == (5, 0, 5)


@pytest.mark.parametrize("price", ["nineteen", "19.99.1", ""])
def test_a_price_that_is_not_a_decimal_is_refused(client, price):
    draft = {"product_id": "p1", "sku": "SKU-1", "name": "Shoe", "price": price}

    body = expect_problem(call(client, "products", "create_product", draft=draft), 400, "validation_error")

    assert set(body["errors"]) == {"draft"}
    assert client.get("/v1/products/p1").status_code == 404


@pytest.mark.parametrize("quantity", ["lots", "2", 1.5, True])
def test_a_quantity_that_is_not_a_whole_number_is_refused_not_coerced(client, quantity):
    create(client, stock=5)

    body = expect_problem(reserve(client, quantity=quantity), 400, "validation_error")

    assert set(body["errors"]) == {"quantity"}
    assert counters(client) == (5, 0, 5)


# --- products ------------------------------------------------------------------------------


def test_get_product_returns_the_product_archived_ones_included(client):
    create(client, price="19.99", tags=["run", "trail"])
    archived = result(call(client, "products", "archive_product", product_id="p1"))
    assert archived["status"] == "archived"

    product = result(call(client, "products", "get_product", product_id="p1"))

    assert (product["product_id"], product["price"], product["status"]) == ("p1", "19.99", "archived")
    assert product["tags"] == ["run", "trail"]
    assert datetime.fromisoformat(product["created_at"]).utcoffset() == timedelta(0)
    body = expect_problem(
        call(client, "products", "get_product", product_id="nope"),
        404,
        "product_not_found",
        "app.products.errors.ProductNotFound",
    )
    assert body["productId"] == "nope"


def test_reserve_is_idempotent_and_visible_in_the_catalog(client):
    create(client, stock=5)
    expires_at = (datetime.now(UTC) + timedelta(minutes=15)).replace(microsecond=0)
    sent = expires_at.astimezone(timezone(timedelta(hours=2))).isoformat()

    first = result(reserve(client, "r1", "p1", 3, expires_at=sent))
    again = result(reserve(client, "r1", "p1", 3, expires_at=sent))

    assert {key: first[key] for key in ("reservation_id", "product_id", "quantity", "status")} == {
        "reservation_id": "r1",
        "product_id": "p1",
        "quantity": 3,
        "status": "active",
    }
    assert datetime.fromisoformat(first["expires_at"]) == expires_at
    assert again == first
    assert counters(client) == (5, 3, 2)


def test_reserving_more_than_available_is_409_with_the_exception_and_available(client):
    create(client, stock=2)

    body = expect_problem(
        reserve(client, "r1", "p1", 3), 409, "insufficient_stock", "app.products.errors.InsufficientStock"
    )

    assert body["available"] == 2
    assert body["productId"] == "p1"
    assert counters(client) == (2, 0, 2)


def test_a_reservation_id_that_is_no_field_name_is_400(client):
    create(client, stock=5)

    body = expect_problem(
        reserve(client, "a.b", "p1", 1), 400, "reservation_id_invalid", "app.products.errors.ReservationIdInvalid"
    )

    assert body["reservationId"] == "a.b"
    assert counters(client) == (5, 0, 5)


def test_reserving_an_unknown_product_is_404(client):
    expect_problem(reserve(client, "r1", "nope", 1), 404, "product_not_found", "app.products.errors.ProductNotFound")


@pytest.mark.parametrize(
    ("function", "final_status", "stock_after"),
    [("release_reservation", "released", 5), ("commit_reservation", "committed", 3)],
)
def test_release_and_commit_apply_once(client, function, final_status, stock_after):
    create(client, stock=5)
    result(reserve(client, "r1", "p1", 2))
    assert counters(client) == (5, 2, 3)

    for _ in range(2):
        reservation = result(call(client, "products", function, product_id="p1", reservation_id="r1"))
        assert (reservation["reservation_id"], reservation["status"]) == ("r1", final_status)
        assert counters(client) == (stock_after, 0, stock_after)


def test_release_after_commit_is_a_reservation_conflict(client):
    create(client, stock=5)
    result(reserve(client, "r1", "p1", 2))
    result(call(client, "products", "commit_reservation", product_id="p1", reservation_id="r1"))

    expect_problem(
        call(client, "products", "release_reservation", product_id="p1", reservation_id="r1"),
        409,
        "reservation_conflict",
        "app.products.errors.ReservationConflict",
    )
    assert counters(client) == (3, 0, 3)


def test_an_unknown_hold_releases_as_nothing_and_cannot_be_sold(client):
    create(client, stock=5)

    released = result(call(client, "products", "release_reservation", product_id="p1", reservation_id="nope"))
    body = expect_problem(
        call(client, "products", "commit_reservation", product_id="p1", reservation_id="nope"),
        404,
        "reservation_not_found",
        "app.products.errors.ReservationNotFound",
    )

    assert (released["status"], released["quantity"]) == ("released", 0)
    assert body["reservationId"] == "nope"
    assert counters(client) == (5, 0, 5)


def test_stock_cannot_drop_below_the_reserved_units(client):
    create(client, stock=5)
    result(reserve(client, "r1", "p1", 4))

    expect_problem(
        call(client, "products", "adjust_stock", product_id="p1", delta=-2, reason="count"),
        409,
        "stock_below_reserved",
        "app.products.errors.StockBelowReserved",
    )
    assert counters(client) == (5, 4, 1)


# --- cart and accounts ---------------------------------------------------------------------


def test_cart_functions_answer_the_cart(client):
    create(client, stock=5, price="2.50")

    empty = result(call(client, "cart", "get_cart", owner_id="guest:1"))
    added = result(call(client, "cart", "add_item", owner_id="guest:1", product_id="p1", quantity=2))

    assert (empty["user_id"], empty["items"], empty["total_price"]) == ("guest:1", [], "0.00")
    assert [(item["product_id"], item["quantity"], item["line_total"]) for item in added["items"]] == [
        ("p1", 2, "5.00")
    ]
    assert added["total_price"] == "5.00"
    assert counters(client) == (5, 2, 3)


def test_adding_an_unknown_product_to_a_cart_is_the_products_modules_404(client):
    body = expect_problem(
        call(client, "cart", "add_item", owner_id="guest:1", product_id="nope", quantity=1),
        404,
        "product_not_found",
        "app.products.errors.ProductNotFound",
    )
    assert body["productId"] == "nope"
    assert result(call(client, "cart", "get_cart", owner_id="guest:1"))["items"] == []


def test_a_cart_write_with_a_stale_version_is_412(client):
    create(client, stock=5)
    cart = result(call(client, "cart", "get_cart", owner_id="guest:1"))

    response = call(
        client,
        "cart",
        "add_item",
        owner_id="guest:1",
        product_id="p1",
        quantity=1,
        expected_version=cart["version"] + 1,
    )

    expect_problem(response, 412, "precondition_failed", "app.cart.errors.CartChanged")
    assert counters(client) == (5, 0, 5)


def test_accounts_functions_answer_and_raise_their_errors(client):
    guest = result(call(client, "accounts", "start_guest_session"))
    assert guest["access_token"]
    assert guest["refresh_token"] is None

    body = expect_problem(
        call(client, "accounts", "get_user", user_id="00000000-0000-0000-0000-000000000000"),
        404,
        "user_not_found",
        "app.accounts.errors.UserNotFound",
    )
    assert body["userId"] == "00000000-0000-0000-0000-000000000000"
