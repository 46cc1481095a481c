"""Concurrent writes to ONE cart lose no update, served by gunicorn with two workers.

Before the fix, 8 threads x 10 adds of one unit with one guest token all answered 201, yet
the line ended at 42 (PostgreSQL: the lines came from the snapshot taken before the cart's
lock wait) or 28 (SQLite: the driver ran the SELECTs outside any transaction). Both stores
are served here: the session's PostgreSQL database and the embedded SQLite default.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import TEST_SECRET
from tests.e2e.gunicorn_server import gunicorn, run_flask

STOCK = 200
TIMEOUT = 30


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server(request, mongo_uri, database_url, app, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, gunicorn log) of wsgi:app with two workers on the store named by the param.

    Module-scoped so each store costs one start-up; every test uses products and a guest of
    its own, and the autouse clean_stores empties Mongo (and PostgreSQL) between tests.
    """
    directory = tmp_path_factory.mktemp(f"lost-update-{request.param}")
    store = database_url if request.param == "postgresql" else f"sqlite:///{directory / 'storefront.db'}"
    environment = {
        **os.environ,
        "APP_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": store,
        "JWT_SECRET": TEST_SECRET,
        "THROTTLE_LIMIT": "100000",
        "GUEST_RATE_LIMIT": "100000 per minute",
        "CATALOG_CACHE_TTL": "0",
        "LOG_LEVEL": "WARNING",
    }
    environment.pop("REDIS_URL", None)  # no cart cache: every answer comes from the stores
    if request.param == "sqlite":
        migrated = run_flask(["db", "upgrade"], environment)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    log = directory / "gunicorn.log"
    with gunicorn(environment, log, workers=2) as url:
        yield url, str(log)


def create_product(client, admin_headers, product_id: str) -> None:
    """Through the in-process app's admin API: it shares the products store (Mongo) with the
    server, and its admin user lives in the session's PostgreSQL, not in the SQLite file."""
    body = {"productId": product_id, "sku": f"SKU-{product_id}", "name": product_id, "price": "3.00", "stock": STOCK}
    response = client.post("/v1/products", json=body, headers=admin_headers)
    assert response.status_code == 201, response.get_data(as_text=True)


def guest_headers(url: str) -> dict[str, str]:
    response = requests.post(f"{url}/v1/auth/guest", timeout=TIMEOUT)
    assert response.status_code in (200, 201), response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


def line_quantity(url: str, headers: dict[str, str], product_id: str) -> int:
    cart = requests.get(f"{url}/v1/cart", headers=headers, timeout=TIMEOUT)
    assert cart.status_code == 200, cart.text
    return sum(item["quantity"] for item in cart.json()["items"] if item["productId"] == product_id)


def figures(url: str, product_id: str) -> tuple[int, int, int]:
    product = requests.get(f"{url}/v1/products/{product_id}", timeout=TIMEOUT).json()
    return product["stock"], product["reserved"], product["available"]


def pids_that_added(log: str) -> set[str]:
    """Workers whose access log shows an add (each line starts with the worker's pid)."""
    with open(log) as lines:
        return {line.split()[0] for line in lines if " POST /v1/cart/products " in line}


def run_threads(threads: int, work) -> list[tuple[str, int, str]]:
    """`work(session)` in each of `threads` threads, each with a requests Session of its own,
    all released at once; every (kind, status, body) answered."""
    start = threading.Barrier(threads)

    def thread(_: int) -> list[tuple[str, int, str]]:
        with requests.Session() as session:
            start.wait()
            return work(session)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [answer for answers in pool.map(thread, range(threads)) for answer in answers]


def odd_answers(answers: list[tuple[str, int, str]], expected: dict[str, int]) -> dict[tuple[str, int, str], int]:
    """The answers that are not the expected status, counted by (kind, status, body)."""
    return dict(Counter((kind, status, body[:300]) for kind, status, body in answers if status != expected[kind]))


def test_eight_threads_adding_to_one_guest_cart_lose_no_unit(server, client, admin_headers):
    url, log = server
    create_product(client, admin_headers, "lu-add")
    headers = guest_headers(url)
    body = {"productId": "lu-add", "quantity": 1}

    def ten_adds(session: requests.Session) -> list[tuple[str, int, str]]:
        answers = []
        for _ in range(10):
            response = session.post(f"{url}/v1/cart/products", json=body, headers=headers, timeout=TIMEOUT)
            answers.append(("add", response.status_code, response.text))
        return answers

    answers = run_threads(8, ten_adds)
    statuses = Counter(status for _, status, _ in answers)
    assert statuses[201] == 80, f"statuses {dict(statuses)}; not 201: {odd_answers(answers, {'add': 201})}"
    assert line_quantity(url, headers, "lu-add") == statuses[201] == 80
    assert figures(url, "lu-add") == (STOCK, 80, STOCK - 80)
    assert len(pids_that_added(log)) == 2, "both workers should have served the adds"


def test_mixed_adds_and_removes_on_one_cart_add_up(server, client, admin_headers):
    """4 threads x 10 writes, alternately adding one unit and removing one, from a line of 40."""
    url, _ = server
    create_product(client, admin_headers, "lu-mixed")
    headers = guest_headers(url)
    first = requests.post(
        f"{url}/v1/cart/products", json={"productId": "lu-mixed", "quantity": 40}, headers=headers, timeout=TIMEOUT
    )
    assert first.status_code == 201, first.text

    def ten_writes(session: requests.Session) -> list[tuple[str, int, str]]:
        answers = []
        for number in range(10):
            if number % 2 == 0:
                response = session.post(
                    f"{url}/v1/cart/products",
                    json={"productId": "lu-mixed", "quantity": 1},
                    headers=headers,
                    timeout=TIMEOUT,
                )
                answers.append(("add", response.status_code, response.text))
            else:
                response = session.delete(f"{url}/v1/cart/products/lu-mixed", headers=headers, timeout=TIMEOUT)
                answers.append(("remove", response.status_code, response.text))
        return answers

    answers = run_threads(4, ten_writes)
    adds_ok = sum(1 for kind, status, _ in answers if kind == "add" and status == 201)
    removes_ok = sum(1 for kind, status, _ in answers if kind == "remove" and status == 200)
    odd = odd_answers(answers, {"add": 201, "remove": 200})
    quantity = line_quantity(url, headers, "lu-mixed")
    assert quantity == 40 + adds_ok - removes_ok, f"adds {adds_ok}, removes {removes_ok}; not 201/200: {odd}"
    assert figures(url, "lu-mixed") == (STOCK, quantity, STOCK - quantity)
    assert (adds_ok, removes_ok, odd) == (20, 20, {}), "every write should have succeeded"


def test_one_idempotency_key_sent_by_eight_threads_adds_once(server, client, admin_headers):
    """The same add with one Idempotency-Key, 8 threads x 5 times across both workers: the
    claim lets exactly one request do the work; the others replay its answer, or hear that it
    is still running."""
    url, _ = server
    create_product(client, admin_headers, "lu-key")
    headers = {**guest_headers(url), "Idempotency-Key": "lu-key-once"}
    body = {"productId": "lu-key", "quantity": 1}

    def five_adds(session: requests.Session) -> list[tuple[str, int, str]]:
        answers = []
        for _ in range(5):
            response = session.post(f"{url}/v1/cart/products", json=body, headers=headers, timeout=TIMEOUT)
            replayed = response.headers.get("Idempotent-Replayed") == "true"
            kind = "replayed" if replayed else "first" if response.status_code == 201 else "refused"
            answers.append((kind, response.status_code, response.text))
        return answers

    answers = run_threads(8, five_adds)
    kinds = Counter(kind for kind, _, _ in answers)
    odd = odd_answers(answers, {"first": 201, "replayed": 201, "refused": 409})
    assert kinds["first"] == 1, f"answers {dict(kinds)}; unexpected: {odd}"
    assert not odd, f"answers {dict(kinds)}; unexpected: {odd}"
    assert all('"idempotency_key_in_use"' in text for kind, _, text in answers if kind == "refused")
    assert line_quantity(url, headers, "lu-key") == 1
    assert figures(url, "lu-key") == (STOCK, 1, STOCK - 1)
