"""GET /v1/health for anyone: the original's shape without internal URLs, answered from a
report at most MAX_AGE_SECONDS old (so requests cannot hammer the stores), rate-limited; and
the orchestrator's probes, /health/live and /health/ready."""

from __future__ import annotations

import os
import threading
import time

import pytest
from flask_migrate import downgrade, upgrade

from app.extensions import db
from app.gateway import health
from app.products import interface as products
from app.resilience import is_refusing_calls, new_breaker
from tests.conftest import scratch_database
from tests.mongo_server import free_port
from tests.problems import PROBLEM


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


@pytest.mark.parametrize("path", ["/v1/health", "/health/live", "/health/ready"])
def test_health_is_rate_limited_per_client(other_app, path):
    client = other_app(health_rate_limit="3 per minute").test_client()
    stranger = {"REMOTE_ADDR": "203.0.113.9"}
    assert [client.get(path, environ_base=stranger).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get(path, environ_base=stranger)
    assert refused.status_code == 429
    assert refused.mimetype == PROBLEM
    assert refused.get_json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0
    another = client.get(path, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert another.status_code == 200


@pytest.mark.parametrize("path", ["/v1/health", "/health/live", "/health/ready"])
def test_the_containers_own_check_on_loopback_is_never_refused(other_app, path):
    client = other_app(health_rate_limit="3 per minute").test_client()
    for address in ("127.0.0.1", "::1"):
        statuses = {client.get(path, environ_base={"REMOTE_ADDR": address}).status_code for _ in range(5)}
        assert statuses == {200}


def test_the_openapi_document_describes_the_health_answers(client):
    spec = client.get("/api/openapi.json").get_json()
    responses = spec["paths"]["/v1/health"]["get"]["responses"]
    assert {"200", "503", "429"} <= set(responses)
    assert list(responses["429"]["content"]) == [PROBLEM]
    assert set(spec["components"]["schemas"]["Dependency"]["properties"]) == {"status", "store"}
    assert {"200", "429"} <= set(spec["paths"]["/health/live"]["get"]["responses"])
    ready = spec["paths"]["/health/ready"]["get"]["responses"]
    assert {"200", "503", "429"} <= set(ready)
    assert list(ready["503"]["content"]) == [PROBLEM]
    assert "failed" in spec["components"]["schemas"]["NotReadyProblem"]["properties"]


# --- /health/live and /health/ready ---------------------------------------------------------


def assert_not_ready(response) -> list[dict]:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    assert response.get_json()["code"] == "not_ready"
    return response.get_json()["failed"]


def test_ready_and_live_when_all_is_well(other_app):
    client = other_app().test_client()
    assert client.get("/health/live").get_json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok"}


def test_live_answers_without_asking_a_store_while_mongodb_is_down_and_ready_names_it(other_app, probes):
    probes.up = False
    client = other_app().test_client()
    live = client.get("/health/live")
    assert (live.status_code, live.get_json()) == (200, {"status": "ok"})
    assert probes.calls == 0
    assert assert_not_ready(client.get("/health/ready")) == [{"check": "store", "name": "mongodb"}]
    assert client.get("/health/live").status_code == 200


def test_ready_names_a_service_that_does_not_answer(other_app):
    unreachable = f"http://127.0.0.1:{free_port()}"
    gateway = other_app(modules=("gateway", "accounts"), products_service_url=unreachable, cart_service_url=unreachable)
    failed = assert_not_ready(gateway.test_client().get("/health/ready"))
    assert failed == [{"check": "service", "name": "products-service"}, {"check": "service", "name": "cart-service"}]
    assert unreachable.removeprefix("http://") not in str(failed)


def test_ready_is_503_while_a_breaker_is_open(other_app, monkeypatch):
    monkeypatch.setattr(health, "MAX_AGE_SECONDS", 0)
    app = other_app()
    client = app.test_client()
    assert client.get("/v1/products/x").status_code == 404  # creates the store breakers
    app.extensions["breakers"]["mongodb"].open()
    assert assert_not_ready(client.get("/health/ready")) == [{"check": "breaker", "name": "mongodb"}]
    assert client.get("/health/live").status_code == 200
    app.extensions["breakers"]["mongodb"].close()
    assert client.get("/health/ready").status_code == 200


def test_a_service_breaker_counts_too(other_app):
    app = other_app(modules=("gateway", "accounts", "cart"), products_service_url=f"http://127.0.0.1:{free_port()}")
    # The stores' are made when their module registers, so that their state is a metric from the start.
    assert set(health.dependency_breakers(app)) == {"postgresql", "products-service"}


def test_an_open_breaker_whose_pause_has_elapsed_no_longer_counts(advance_clock):
    breaker = new_breaker("x", failures=1, reset_seconds=1, counts=(RuntimeError,))
    assert not is_refusing_calls(breaker)
    breaker.open()
    assert is_refusing_calls(breaker)
    advance_clock(1.1)  # the next call would be let through as a probe
    assert not is_refusing_calls(breaker)


@pytest.fixture(params=["postgresql", "sqlite"])
def own_database(request, tmp_path) -> str:
    """An empty database of this test's own, of each kind the app runs on."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'storefront.db'}"
        return
    with scratch_database(f"storefront_ready_{os.getpid()}") as name:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def test_ready_is_503_until_the_database_is_at_the_migrations_head(other_app, own_database, monkeypatch):
    monkeypatch.setattr(health, "MAX_AGE_SECONDS", 0)
    app = other_app(database_url=own_database)
    client = app.test_client()
    store = "sqlite" if own_database.startswith("sqlite") else "postgresql"
    assert assert_not_ready(client.get("/health/ready")) == [{"check": "migrations", "name": store}]  # never migrated
    with app.app_context():
        upgrade()
    assert client.get("/health/ready").status_code == 200
    with app.app_context():
        downgrade()  # one revision behind
    assert assert_not_ready(client.get("/health/ready")) == [{"check": "migrations", "name": store}]
    assert client.get("/health/live").status_code == 200
    with app.app_context():
        upgrade()
        db.session.remove()
    assert client.get("/health/ready").status_code == 200


def test_each_service_process_serves_the_probes_and_checks_only_what_it_uses(other_app):
    products_service = other_app(modules=("products",))
    assert "migration_heads" not in products_service.extensions  # it uses no SQL database
    client = products_service.test_client()
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").get_json() == {"status": "ok"}
    cart_service = other_app(modules=("cart",), products_service_url=f"http://127.0.0.1:{free_port()}")
    assert cart_service.extensions["migration_heads"]
    failed = assert_not_ready(cart_service.test_client().get("/health/ready"))
    assert failed == [{"check": "service", "name": "products-service"}]
