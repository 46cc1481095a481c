"""A PostgreSQL outage under a module is its 503 `dependency_unavailable`, never a 500."""

import pytest
from sqlalchemy.exc import OperationalError

from app.accounts.service import Accounts
from app.cart.service import Carts


def database_down(*args, **kwargs):
    raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


@pytest.mark.parametrize(
    ("target", "method", "path"),
    [(Carts, "get", "/v1/cart"), (Accounts, "get_user", "/v1/users/me")],
)
def test_a_database_outage_is_a_503(client, token, monkeypatch, target, method, path):
    headers = {"Authorization": f"Bearer {token('customer', subject='outage')}"}
    monkeypatch.setattr(target, method, database_down)
    response = client.get(path, headers=headers)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "dependency_unavailable"
