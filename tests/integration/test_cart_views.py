"""The cart views answer a memoised hand-written body (app/gateway/cart_schemas.py `cart_json`):
the same JSON, status, headers and OpenAPI description as CartSchema through flask-smorest."""

from __future__ import annotations

import pytest

from app.cart import interface as cart_interface
from app.gateway.cart_schemas import CartSchema
from tests.integration.test_cart_api import add, create

DOCUMENTED = {
    ("/v1/cart", "get", "200"),
    ("/v1/cart", "delete", "200"),
    ("/v1/cart/products", "post", "201"),
    ("/v1/cart/products/{product_id}", "put", "200"),
    ("/v1/cart/products/{product_id}", "delete", "200"),
}


@pytest.fixture
def shopper(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('customer', subject='viewed')}"}


def test_every_cart_view_answers_what_cart_schema_documents(app, client, admin_headers, shopper):
    create(client, admin_headers, "mug", price="4.50")
    create(client, admin_headers, "pen", price="0.00")
    answers = [
        (add(client, shopper, "mug", 2), 201),
        (add(client, shopper, "pen", 3), 201),
        (client.get("/v1/cart", headers=shopper), 200),
        (client.put("/v1/cart/products/mug", json={"quantity": 5}, headers=shopper), 200),
        (client.delete("/v1/cart/products/pen", headers=shopper), 200),
        (client.get("/v1/cart", headers=shopper), 200),
    ]
    last = answers[-1][0].get_json()
    with app.app_context():
        dumped = CartSchema().dump(cart_interface.get_cart(owner_id=last["userId"]))
    answers.append((client.delete("/v1/cart", headers=shopper), 200))

    for response, status in answers:
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["ETag"] == f'"{response.get_json()["version"]}"'
    assert last == dumped
    assert list(last) == list(dumped)
    assert {item["productId"]: item["quantity"] for item in last["items"]} == {"mug": 5, "pen": 2}
    assert answers[-1][0].get_json()["items"] == []


def test_the_cart_views_are_documented_with_cart_schema(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    for path, method, status in DOCUMENTED:
        content = paths[path][method]["responses"][status]["content"]
        assert content == {"application/json": {"schema": {"$ref": "#/components/schemas/Cart"}}}, (path, method)
