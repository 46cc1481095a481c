"""A user's access token is accepted only for a user that exists, at its current session
generation: a token whose user does not exist, or that lacks the generation claim, is refused
(401 token_revoked), whichever store checks it (PostgreSQL, or Redis in front of it)."""

from __future__ import annotations

import uuid

import pytest
from flask_jwt_extended import create_access_token

from tests.integration.test_auth_api import PASSWORD, auth, login, register_and_verify
from tests.problems import expect_problem


def mint(app, subject: str, **claims) -> str:
    with app.app_context():
        return create_access_token(identity=subject, additional_claims={"roles": ["customer"], **claims})


@pytest.fixture(params=["postgresql", "redis"])
def served(request, app, other_app, redis_url):
    """(app, client) checking tokens in PostgreSQL, or in Redis in front of it."""
    checked_by = app if request.param == "postgresql" else other_app(redis_url=redis_url)
    return checked_by, checked_by.test_client()


@pytest.mark.parametrize("claims", [{}, {"gen": None}], ids=["no-gen-claim", "gen-null"])
def test_a_token_of_a_user_that_does_not_exist_is_refused(served, claims):
    app, client = served
    token = mint(app, str(uuid.uuid4()), **claims)

    for answer in (client.get("/v1/cart", headers=auth(token)), client.get("/v1/users/me", headers=auth(token))):
        expect_problem(answer, 401, "token_revoked")


def test_a_token_without_the_generation_claim_is_refused(served, mail_dir):
    app, client = served
    user = register_and_verify(client, mail_dir, f"gen-{uuid.uuid4().hex[:8]}@example.test")
    assert login(client, user["email"], PASSWORD)["accessToken"]

    expect_problem(client.get("/v1/cart", headers=auth(mint(app, user["userId"]))), 401, "token_revoked")
    # the control: the same token with the user's generation is accepted
    assert client.get("/v1/cart", headers=auth(mint(app, user["userId"], gen=0))).status_code == 200
