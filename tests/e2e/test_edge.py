"""Debian's nginx with the repository's edge config (deploy/nginx/) in front of TWO gunicorn
instances of the app, as compose runs them: one PostgreSQL, one Redis and one Mongo server
shared, TRUSTED_PROXIES=1. Clients bind their own loopback source address (Linux routes all of
127.0.0.0/8 to lo), so nginx sees each as a different client and appends it to X-Forwarded-For.

Proven: the rate limit is global across the instances, no oversell across them, the login
lockout keys on the client's address behind nginx, and a client trickling its body holds an
nginx connection, not the only sync worker of an instance (which it does hold without nginx).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import TEST_SECRET
from tests.e2e.gunicorn_server import gunicorn
from tests.mongo_server import free_port
from tests.nginx_server import nginx
from tests.redis_server import RedisServer

LIMIT = 20  # THROTTLE_LIMIT per client IP in the window
BUYERS, STOCK = 50, 20
WRONG, PASSWORD = "Wrong-Password-1", "unused-password-1"  # the `token` fixture's users' password
TRICKLE_SECONDS = 4.0
TIMEOUT = 30


class FromAddress(HTTPAdapter):
    """Connections from this local address: another client, as nginx sees it."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_at(address: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", FromAddress(address))
    return session


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A redis-server of this module's own: the instances' shared counters, holds and caches."""
    server = RedisServer(tmp_path_factory.mktemp("edge-redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(autouse=True)
def no_counts_yet(redis_url) -> None:
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture(scope="module")
def instances(mongo_uri, database_url, app, redis_url, tmp_path_factory) -> Iterator[list[tuple[str, Path]]]:
    """(URL, access log) of two gunicorn instances with one sync worker each."""
    directory = tmp_path_factory.mktemp("edge-instances")
    environment = {
        **os.environ,
        "APP_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": TEST_SECRET,
        "TRUSTED_PROXIES": "1",
        "THROTTLE_LIMIT": str(LIMIT),
        "THROTTLE_TTL": "3600",  # one window for the whole test
        "GUEST_RATE_LIMIT": "1000 per minute",
        "CATALOG_CACHE_TTL": "0",
        "LOG_LEVEL": "WARNING",
    }
    logs = [directory / "instance-a.log", directory / "instance-b.log"]
    with gunicorn(environment, logs[0]) as first, gunicorn(environment, logs[1]) as second:
        yield [(first, logs[0]), (second, logs[1])]


@pytest.fixture(scope="module")
def edge(instances, tmp_path_factory) -> Iterator[str]:
    """nginx on a free loopback port, round robin over both instances."""
    port = free_port()
    upstreams = [url.removeprefix("http://") for url, _ in instances]
    with nginx(tmp_path_factory.mktemp("edge-nginx"), port, upstreams):
        yield f"http://127.0.0.1:{port}"


def answered(log: Path, method: str, path: str) -> Counter:
    """Statuses an instance answered for `method path` (its log: `pid status request-line`)."""
    statuses = Counter()
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2:4] == [method, path]:
            statuses[int(parts[1])] += 1
    return statuses


def logged(log: Path, method: str, path: str, expected, timeout: float = 5.0) -> Counter:
    """`answered` once `expected(statuses)` holds (gunicorn logs a request after its answer is
    sent, so the last line may still be on its way), or as it is after `timeout`."""
    deadline = time.monotonic() + timeout
    while not expected(statuses := answered(log, method, path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return statuses


def test_the_rate_limit_is_global_across_instances(edge, instances):
    with client_at("127.0.0.10") as client:
        statuses = [client.get(f"{edge}/v1/products", timeout=TIMEOUT).status_code for _ in range(LIMIT + 2)]
    assert statuses == [200] * LIMIT + [429, 429]
    # nginx alternates: each instance passed some and refused the N+1th or the N+2th
    for _, log in instances:
        counted = logged(log, "GET", "/v1/products", lambda seen: seen[429] == 1)
        assert counted[200] >= 1, counted
        assert counted[429] == 1, counted
    # the limit is the client's, not nginx's: another client behind the same nginx still passes
    with client_at("127.0.0.11") as other:
        assert other.get(f"{edge}/v1/products", timeout=TIMEOUT).status_code == 200


def test_fifty_buyers_through_nginx_and_two_instances_hold_exactly_twenty_units(edge, instances, client, admin_headers):
    product = {"productId": "edge-hot", "sku": "EDGE-HOT", "name": "Hot item", "price": "9.99", "stock": STOCK}
    assert client.post("/v1/products", json=product, headers=admin_headers).status_code == 201
    start = threading.Barrier(BUYERS, timeout=60)

    def buy(number: int) -> tuple[dict[str, str], int]:
        with client_at(f"127.0.1.{number + 1}") as buyer:  # fifty clients, each its own address
            guest = buyer.post(f"{edge}/v1/auth/guest", timeout=TIMEOUT)
            assert guest.status_code in (200, 201), guest.text
            headers = {"Authorization": f"Bearer {guest.json()['accessToken']}"}
            start.wait()
            body = {"productId": "edge-hot", "quantity": 1}
            return headers, buyer.post(
                f"{edge}/v1/cart/products", json=body, headers=headers, timeout=TIMEOUT
            ).status_code

    with ThreadPoolExecutor(max_workers=BUYERS) as pool:
        results = list(pool.map(buy, range(BUYERS)))
    statuses = Counter(status for _, status in results)
    assert statuses == {201: STOCK, 409: BUYERS - STOCK}
    for _, log in instances:  # both instances sold
        assert logged(log, "POST", "/v1/cart/products", lambda seen: seen[201] >= 1)[201] >= 1

    with client_at("127.0.0.12") as reader:
        hot = reader.get(f"{edge}/v1/products/edge-hot", timeout=TIMEOUT).json()
        assert (hot["stock"], hot["reserved"], hot["available"]) == (STOCK, STOCK, 0)

    held = 0
    for number, (headers, status) in enumerate(results):
        with client_at(f"127.0.1.{number + 1}") as buyer:
            cart = buyer.get(f"{edge}/v1/cart", headers=headers, timeout=TIMEOUT)
        assert cart.status_code == 200, cart.text
        units = sum(item["quantity"] for item in cart.json()["items"] if item["productId"] == "edge-hot")
        assert units == (1 if status == 201 else 0)
        held += units
    assert held == STOCK


def test_the_login_lockout_keys_on_the_clients_address_behind_nginx(edge, token):
    token("customer", subject="edge-ada")  # a verified user, password PASSWORD
    login = f"{edge}/v1/auth/login"
    wrong = {"email": "edge-ada@example.test", "password": WRONG}
    right = {"email": "edge-ada@example.test", "password": PASSWORD}
    with client_at("127.0.0.2") as stranger, client_at("127.0.0.3") as owner:
        for _ in range(5):
            failed = stranger.post(login, json=wrong, timeout=TIMEOUT)
            assert (failed.status_code, failed.json()["code"]) == (401, "invalid_credentials")
        locked = stranger.post(login, json=right, timeout=TIMEOUT)
        assert (locked.status_code, locked.json()["code"]) == (429, "login_locked")
        # naming the owner's address in X-Forwarded-For does not help: nginx appends the real one
        spoofed = stranger.post(login, json=right, headers={"X-Forwarded-For": "127.0.0.3"}, timeout=TIMEOUT)
        assert (spoofed.status_code, spoofed.json()["code"]) == (429, "login_locked")

        # the owner, from elsewhere, through the same nginx and instances
        assert owner.post(login, json=right, timeout=TIMEOUT).status_code == 200


def test_nginx_refuses_a_body_over_the_apps_limit_with_the_apps_problem(edge, instances):
    too_large = b'{"email": "' + b"x" * (64 * 1024) + b'"}'
    with client_at("127.0.0.13") as client:
        refused = client.post(
            f"{edge}/v1/auth/login", data=too_large, headers={"Content-Type": "application/json"}, timeout=TIMEOUT
        )
    assert refused.status_code == 413
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["code"] == "payload_too_large"
    assert all(answered(log, "POST", "/v1/auth/login")[413] == 0 for _, log in instances)  # never reached the app


@pytest.mark.parametrize(
    ("request_size", "status", "code"),
    [
        ({"params": {"q": "x" * 9000}}, 414, "uri_too_long"),
        ({"headers": {"X-Filler": "x" * 9000}}, 431, "request_headers_too_large"),
        ({"headers": {f"X-Filler-{n}": "x" * 8000 for n in range(5)}}, 431, "request_headers_too_large"),
    ],
    ids=["request-line", "one-header-line", "header-buffers"],
)
def test_nginx_refuses_a_request_line_or_headers_over_its_buffers_with_the_apps_problem(
    edge, instances, request_size, status, code
):
    """Past nginx's header buffers (8 KiB a line, 32 KiB in all) the app never sees the
    request: nginx answers in the app's error shape, with the status the app gives under its
    own, smaller caps (app/gateway/request_limits.py)."""
    with client_at("127.0.0.14") as client:
        refused = client.get(f"{edge}/v1/products", timeout=TIMEOUT, **request_size)
    assert refused.status_code == status
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert (refused.json()["status"], refused.json()["code"]) == (status, code)
    assert all(answered(log, "GET", "/v1/products")[status] == 0 for _, log in instances)


def trickle(port: int, sent_all: threading.Event) -> bytes:
    """POST /v1/auth/login whose body arrives one byte at a time over TRICKLE_SECONDS; its answer."""
    body = json.dumps({"email": "slow@example.test", "password": WRONG}).encode()
    head = (
        "POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sendall(head.encode())
        for byte in body:
            time.sleep(TRICKLE_SECONDS / len(body))
            connection.sendall(bytes([byte]))
        sent_all.set()
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def race_a_slow_client(port: int) -> tuple[requests.Response, float, bool, bytes]:
    """A slow client on `port`, then a normal request there while it still sends: (the normal
    answer, its duration, whether the slow client had finished sending by then, the slow answer)."""
    sent_all, slow = threading.Event(), {}
    sender = threading.Thread(target=lambda: slow.update(answer=trickle(port, sent_all)))
    sender.start()
    try:
        time.sleep(0.5)  # its headers are in; an instance would be reading its body now
        started = time.monotonic()
        normal = requests.get(f"http://127.0.0.1:{port}/v1/products/none", timeout=TIMEOUT)
        duration, slow_done = time.monotonic() - started, sent_all.is_set()
    finally:
        sender.join(TIMEOUT)
    return normal, duration, slow_done, slow.get("answer", b"")


def test_a_slow_body_does_not_hold_the_only_worker_behind_nginx(instances, tmp_path):
    url, log = instances[0]  # one sync worker
    port = free_port()
    logins_before = answered(log, "POST", "/v1/auth/login")[401]
    with nginx(tmp_path / "nginx", port, [url.removeprefix("http://")]):
        normal, duration, slow_done, slow_answer = race_a_slow_client(port)
    assert normal.status_code == 404  # answered by the app (products/none), not by nginx
    assert normal.json()["code"]
    assert not slow_done, "the normal request waited for the slow client"
    assert duration < 2
    assert slow_answer.startswith(b"HTTP/1.1 401 "), slow_answer[:200]  # its whole body reached the app
    assert logged(log, "POST", "/v1/auth/login", lambda seen: seen[401] > logins_before)[401] == logins_before + 1


def test_without_nginx_a_slow_body_holds_the_only_worker(instances):
    """The contrast: straight to gunicorn, the worker reads the trickling body itself, and the
    normal request waits until the slow client has sent everything."""
    url, _ = instances[0]
    normal, duration, slow_done, slow_answer = race_a_slow_client(int(url.rsplit(":", 1)[1]))
    assert normal.status_code == 404
    assert slow_done, "the normal request was answered while the slow client still held the worker"
    assert duration > TRICKLE_SECONDS - 1.5
    assert slow_answer.startswith(b"HTTP/1.1 401 "), slow_answer[:200]
