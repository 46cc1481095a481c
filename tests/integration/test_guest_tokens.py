"""A guest token sent to be merged (X-Guest-Token, or guestToken) meets the revocation list as
every bearer token does: once the guest has logged out, its cart is not merged, neither by
POST /v1/cart/merge nor by a login; merging a live guest token again stays a no-op."""

from __future__ import annotations

import pytest

from tests.integration.test_auth_api import PASSWORD, register_and_verify
from tests.integration.test_cart_api import add, create, reserved
from tests.problems import expect_problem


@pytest.fixture
def logged_out_guest(client, admin_headers) -> str:
    """The token of a guest who put 2 mugs in a cart, then logged out."""
    create(client, admin_headers, "mug", stock=10)
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    assert add(client, {"Authorization": f"Bearer {guest_token}"}, "mug", 2).status_code == 201
    assert client.post("/v1/auth/logout", headers={"Authorization": f"Bearer {guest_token}"}).status_code == 204
    return guest_token


@pytest.mark.parametrize("sent_as", ["header", "body"])
def test_a_logged_out_guest_token_does_not_merge(client, customer_headers, logged_out_guest, sent_as):
    request = (
        {"headers": {**customer_headers, "X-Guest-Token": logged_out_guest}, "json": {}}
        if sent_as == "header"
        else {"headers": customer_headers, "json": {"guestToken": logged_out_guest}}
    )

    problem = expect_problem(client.post("/v1/cart/merge", **request), 400, "guest_token_invalid")

    assert "revoked" in problem["detail"]
    assert client.get("/v1/cart", headers=customer_headers).get_json()["items"] == []
    assert reserved(client, "mug") == 2  # still the guest's hold, not moved


def test_a_login_with_a_logged_out_guest_token_is_refused(client, mail_dir, logged_out_guest):
    register_and_verify(client, mail_dir, "buyer@example.test")

    response = client.post(
        "/v1/auth/login",
        json={"email": "buyer@example.test", "password": PASSWORD},
        headers={"X-Guest-Token": logged_out_guest},
    )

    expect_problem(response, 400, "guest_token_invalid")


def test_a_live_guest_token_merges_once_and_again_changes_nothing(client, admin_headers, customer_headers):
    create(client, admin_headers, "pen", stock=10)
    guest_token = client.post("/v1/auth/guest").get_json()["accessToken"]
    add(client, {"Authorization": f"Bearer {guest_token}"}, "pen", 3)
    merge = {"headers": customer_headers, "json": {"guestToken": guest_token}}

    first, again = client.post("/v1/cart/merge", **merge), client.post("/v1/cart/merge", **merge)

    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.get_json()["mergedLines"], again.get_json()["mergedLines"]) == (1, 0)
    assert again.get_json()["cart"]["items"] == first.get_json()["cart"]["items"]
    assert reserved(client, "pen") == 3
