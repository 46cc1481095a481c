"""Tokens signed with RS256 keys instead of the shared HS256 secret (JWT_ALGORITHM=RS256)."""

from __future__ import annotations

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app import create_app
from app.accounts import interface as accounts
from app.config import ConfigError, load_settings
from tests.conftest import TEST_SECRET

PASSWORD = "Correct-Horse-Battery-9"


def write_key_pair(directory) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "private.pem"
    public = directory / "public.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(private), str(public)


@pytest.fixture
def rs256_client(settings, tmp_path):
    private, public = write_key_pair(tmp_path)
    rs256 = load_settings(
        {"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY_FILE": private, "JWT_PUBLIC_KEY_FILE": public}
    ).auth
    app = create_app(settings.override(auth=rs256))
    with app.app_context():
        accounts.create_admin(email="ops@example.test", password=PASSWORD)
    return app.test_client()


def test_login_issues_rs256_tokens_that_the_api_accepts(rs256_client):
    session = rs256_client.post("/v1/auth/login", json={"email": "ops@example.test", "password": PASSWORD}).get_json()
    assert pyjwt.get_unverified_header(session["accessToken"])["alg"] == "RS256"
    me = rs256_client.get("/v1/users/me", headers={"Authorization": f"Bearer {session['accessToken']}"})
    assert me.status_code == 200
    assert me.get_json()["roles"] == ["admin", "customer"]


def test_an_hs256_token_is_refused_when_rs256_is_configured(rs256_client):
    session = rs256_client.post("/v1/auth/login", json={"email": "ops@example.test", "password": PASSWORD}).get_json()
    claims = pyjwt.decode(session["accessToken"], options={"verify_signature": False})
    forged = pyjwt.encode(claims, TEST_SECRET, algorithm="HS256")
    response = rs256_client.get("/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.get_json()["code"] == "token_invalid"


def test_rs256_needs_readable_key_files(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_settings({"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY_FILE": str(tmp_path / "missing.pem")})
    assert raised.value.variable == "JWT_PRIVATE_KEY_FILE"


def test_production_with_rs256_needs_no_shared_secret(tmp_path):
    private, public = write_key_pair(tmp_path)
    settings = load_settings(
        {
            "APP_ENV": "production",
            "DB_HOST": "db",
            "MAIL_BACKEND": "smtp",
            "JWT_ALGORITHM": "RS256",
            "JWT_PRIVATE_KEY_FILE": private,
            "JWT_PUBLIC_KEY_FILE": public,
        }
    )
    assert settings.auth.algorithm == "RS256"
