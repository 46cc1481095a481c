"""GET /v1/health for anyone: the original's shape without internal URLs, answered from a
report at most MAX_AGE_SECONDS old (so requests cannot hammer the stores), rate-limited."""

from __future__ import annotations

import threading
import time

import pytest

from app.gateway import health
from app.products import interface as products
from tests.mongo_server import free_port

PROBLEM = "application/problem+json"


class Probes:
    """Stands in for the products store's probe: counts calls; `up = False` fails the next."""

    def __init__(self):
        self.calls = 0
        self.up = True

    def __call__(self) -> bool:
        self.calls += 1
        time.sleep(0.05)
        return self.up


@pytest.fixture
def probes(monkeypatch) -> Probes:
    probe = Probes()
    monkeypatch.setattr(products, "is_available", probe)
    return probe


def test_a_split_gateway_shows_each_service_status_but_no_url(other_app):
    unreachable = f"http://127.0.0.1:{free_port()}"
    gateway = other_app(
        modules=("gateway", "accounts"), products_service_url=unreachable, cart_service_url=unreachable
    ).test_client()
    response = gateway.get("/v1/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["dependencies"]["productsService"] == {"status": "down"}
    assert body["dependencies"]["cartService"] == {"status": "down"}
    assert body["dependencies"]["accountsService"] == {"status": "ok", "store": "postgresql"}
    assert unreachable.removeprefix("http://") not in response.get_data(as_text=True)


def test_requests_within_a_second_share_one_probe(other_app, probes):
    client = other_app().test_client()
    answers = [client.get("/v1/health") for _ in range(5)]
    assert probes.calls == 1
    assert {answer.get_json()["timestamp"] for answer in answers} == {answers[0].get_json()["timestamp"]}


def test_an_outage_shows_once_the_report_has_aged(other_app, probes, monkeypatch):
    monkeypatch.setattr(health, "MAX_AGE_SECONDS", 0.3)
    client = other_app().test_client()
    assert client.get("/v1/health").status_code == 200
    probes.up = False
    assert client.get("/v1/health").status_code == 200  # the report of a moment ago
    time.sleep(0.3)
    response = client.get("/v1/health")
    assert response.status_code == 503
    assert response.get_json()["dependencies"]["productsService"]["status"] == "down"
    assert probes.calls == 2


def test_concurrent_requests_wait_for_one_probe(other_app, probes):
    app = other_app()
    statuses: list[int] = []

    def ask() -> None:
        statuses.append(app.test_client().get("/v1/health").status_code)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert probes.calls == 1


def test_health_is_rate_limited_per_client(other_app):
    client = other_app(health_rate_limit="3 per minute").test_client()
    stranger = {"REMOTE_ADDR": "203.0.113.9"}
    assert [client.get("/v1/health", environ_base=stranger).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/v1/health", environ_base=stranger)
    assert refused.status_code == 429
    assert refused.mimetype == PROBLEM
    assert refused.get_json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0
    another = client.get("/v1/health", environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert another.status_code == 200


def test_the_containers_own_check_on_loopback_is_never_refused(other_app):
    client = other_app(health_rate_limit="3 per minute").test_client()
    for address in ("127.0.0.1", "::1"):
        statuses = {client.get("/v1/health", environ_base={"REMOTE_ADDR": address}).status_code for _ in range(5)}
        assert statuses == {200}


def test_the_openapi_document_describes_the_health_answers(client):
    spec = client.get("/api/openapi.json").get_json()
    responses = spec["paths"]["/v1/health"]["get"]["responses"]
    assert {"200", "503", "429"} <= set(responses)
    assert list(responses["429"]["content"]) == [PROBLEM]
    assert set(spec["components"]["schemas"]["Dependency"]["properties"]) == {"status", "store"}
