"""Mutual TLS on a service's internal listener, served by gunicorn as in production (the TLS
settings come from app/service_tls.py): only a client certificate signed by the service CA
gets a TCP connection as far as HTTP; the service key is still checked behind it."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.gunicorn_server import REPO, ClientTls, app_environment, gunicorn
from tests.tls import CertificateAuthority

KEY = "mtls-test-gateway-key-0123456789"
CALL = "/internal/products/get_product"


@pytest.fixture(scope="module")
def service_ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("service-ca"))


@pytest.fixture(scope="module")
def products_service(service_ca, mongo_uri, database_url, app, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(https URL, access log) of a products service requiring client certificates."""
    environment = products_service_environment(mongo_uri, database_url, service_ca.environment("products-service"))
    log = tmp_path_factory.mktemp("mtls") / "products.log"
    with gunicorn(environment, log, client_tls=service_ca.issue("health-checker")) as url:
        yield url, str(log)


def products_service_environment(mongo_uri: str, database_url: str, tls: dict[str, str]) -> dict[str, str]:
    """A products service (the gateway its only caller) with these SERVICE_TLS_* files."""
    environment = app_environment(
        mongo_uri, database_url, APP_MODULES="products", SERVICE_CALLER_KEYS=f"gateway={KEY}", **tls
    )
    environment.pop("REDIS_URL", None)
    return environment


def call(url: str, client: ClientTls | None, ca: str) -> requests.Response:
    return requests.post(
        f"{url}{CALL}",
        json={"product_id": "none"},
        headers={"X-Service-Key": KEY, "X-Service-Caller": "gateway"},
        cert=(client.cert, client.key) if client else None,
        verify=ca,
        timeout=10,
    )


def calls_logged(log: str) -> int:
    with open(log) as lines:
        return sum(f"POST {CALL}" in line for line in lines)


def test_a_caller_with_a_certificate_of_the_service_ca_gets_through(products_service, service_ca):
    url, _ = products_service
    answer = call(url, service_ca.issue("gateway"), service_ca.ca_file)
    assert (answer.status_code, answer.json()["code"]) == (404, "product_not_found")  # through TLS and the key


def test_the_service_key_is_still_checked_behind_mutual_tls(products_service, service_ca):
    url, _ = products_service
    client = service_ca.issue("gateway")
    answer = requests.post(
        f"{url}{CALL}",
        json={"product_id": "none"},
        headers={"X-Service-Key": "wrong", "X-Service-Caller": "gateway"},
        cert=(client.cert, client.key),
        verify=service_ca.ca_file,
        timeout=10,
    )
    assert (answer.status_code, answer.json()["code"]) == (401, "service_key_invalid")


@pytest.mark.parametrize("client", ["none", "another CA", "expired"])
def test_a_caller_without_a_valid_certificate_is_refused_at_the_handshake(
    products_service, service_ca, tmp_path, client
):
    url, log = products_service
    certificate = {
        "none": lambda: None,
        "another CA": lambda: CertificateAuthority(tmp_path).issue("gateway"),
        "expired": lambda: service_ca.issue("gateway-expired", expired=True),
    }[client]()
    before = calls_logged(log)

    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        call(url, certificate, service_ca.ca_file)

    assert calls_logged(log) == before  # refused before any HTTP request was read


def test_the_caller_checks_the_services_certificate_too(products_service, service_ca, tmp_path):
    url, _ = products_service
    stranger = CertificateAuthority(tmp_path)  # the caller trusts another CA only
    with pytest.raises(requests.exceptions.SSLError):
        call(url, service_ca.issue("gateway"), stranger.ca_file)


def test_the_certificates_the_script_makes_serve_mutual_tls(mongo_uri, database_url, app, tmp_path):
    """scripts/make_service_certs.py, as an operator runs it for docker-compose.yml."""
    out = tmp_path / "certs"
    made = subprocess.run(
        [sys.executable, "scripts/make_service_certs.py", "--out", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((out / "gateway-key.pem").stat().st_mode) == 0o600
    again = subprocess.run(
        [sys.executable, "scripts/make_service_certs.py", "--out", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr
    tls = {
        "SERVICE_TLS_CERT": str(out / "products-service.pem"),
        "SERVICE_TLS_KEY": str(out / "products-service-key.pem"),
        "SERVICE_TLS_CA": str(out / "ca.pem"),
    }
    environment = products_service_environment(mongo_uri, database_url, tls)
    gateway = ClientTls(cert=str(out / "gateway.pem"), key=str(out / "gateway-key.pem"), ca=str(out / "ca.pem"))
    with gunicorn(environment, tmp_path / "products.log", client_tls=gateway) as url:
        answer = call(url, gateway, gateway.ca)
    assert (answer.status_code, answer.json()["code"]) == (404, "product_not_found")
