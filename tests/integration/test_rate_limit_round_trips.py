"""What the rate limit costs on the wire with Redis: one command per request, headers included.

The hit is counted by one script that answers the count and the window's TTL, and the
`RateLimit-*` headers and a 429's Retry-After come from that answer (app/rate_limits.py)
rather than from a GET and a TTL sent afterwards. The count stays in Redis, so two app
instances share it; each instance here has its own storage and connection pool, as two
processes would. The access token is decoded once per request as well.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import jwt
import pytest
import redis
import redis.connection
from limits import RateLimitItemPerMinute
from limits.strategies import FixedWindowRateLimiter

from app.extensions import limiter
from tests.integration.test_auth_api import from_ip, log_in
from tests.integration.test_cart_api import add, create
from tests.problems import expect_problem
from tests.redis_server import RedisServer

LIMIT_KEY_PREFIX = "LIMITS:"


@dataclasses.dataclass
class RedisLog:
    counting: bool = False
    commands: list[tuple[str, ...]] = dataclasses.field(default_factory=list)

    def limiter_commands(self) -> list[str]:
        return [command[0] for command in self.commands if any(w.startswith(LIMIT_KEY_PREFIX) for w in command[1:])]


def _words(args) -> tuple[str, ...]:
    return tuple(arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg) for arg in args)


@pytest.fixture
def redis_log(monkeypatch) -> RedisLog:
    """Every command the app sends to Redis, singly or in a pipeline, while counting."""
    log = RedisLog()
    send_command = redis.connection.AbstractConnection.send_command
    pack_commands = redis.connection.AbstractConnection.pack_commands

    def counted_command(connection, *args, **kwargs):
        if log.counting:
            log.commands.append(_words(args))
        return send_command(connection, *args, **kwargs)

    def counted_pipeline(connection, commands):
        commands = list(commands)
        if log.counting:
            log.commands.extend(_words(command) for command in commands)
        return pack_commands(connection, commands)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_command", counted_command)
    monkeypatch.setattr(redis.connection.AbstractConnection, "pack_commands", counted_pipeline)
    return log


@pytest.fixture
def jwt_decodes(monkeypatch) -> Counter:
    """PyJWT's decodes of a token's claims, verified or not."""
    decodes: Counter = Counter()
    decode = jwt.decode

    def counted(*args, **kwargs):
        verified = (kwargs.get("options") or {}).get("verify_signature", True)
        decodes["verified" if verified else "unverified"] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counted)
    return decodes


def counted(log: RedisLog, decodes: Counter, request):
    log.commands.clear()
    decodes.clear()
    log.counting = True
    try:
        return request()
    finally:
        log.counting = False


@pytest.fixture
def client_address(redis_url) -> Iterator[str]:
    """An address of this test's own, whose counters in the shared Redis database are removed."""
    run = uuid.uuid4()
    address = f"10.77.{run.bytes[0]}.{run.bytes[1]}"
    yield address
    store = redis.Redis.from_url(redis_url)
    for key in store.scan_iter(match=f"{LIMIT_KEY_PREFIX}*{address}*"):
        store.delete(key)
    store.close()


@pytest.fixture
def instances(other_app, redis_url):
    """Build app instances on the Redis database, each with a limiter storage of its own; `serving`
    points the shared limiter at an instance's storage (one process = one instance)."""
    built: dict[object, tuple] = {}

    def build(**changes):
        app = other_app(redis_url=redis_url, **changes)
        built[app] = (limiter._storage, limiter._limiter)
        return app

    @contextmanager
    def serving(app):
        limiter._storage, limiter._limiter = built[app]
        yield app.test_client()

    return build, serving


def rate_limit_headers(response) -> tuple[str, str, int]:
    headers = response.headers
    return headers["RateLimit-Limit"], headers["RateLimit-Remaining"], int(headers["RateLimit-Reset"])


def test_a_limited_request_costs_one_redis_command_for_the_limit(
    client, admin_headers, instances, client_address, redis_log, jwt_decodes, token
):
    create(client, admin_headers, "mug", stock=100)
    build, serving = instances
    app = build()
    shopper = {"Authorization": f"Bearer {token('customer', subject='counted')}"}
    with serving(app) as http:
        http.environ_base["REMOTE_ADDR"] = client_address
        requests = {
            "one product": lambda: http.get("/v1/products/mug"),
            "a page": lambda: http.get("/v1/products"),
            "the cart": lambda: http.get("/v1/cart", headers=shopper),
            "an add": lambda: add(http, shopper, "mug"),
            "a profile": lambda: http.get("/v1/users/me", headers=shopper),
        }
        for request in requests.values():
            request()  # warm-up: connections opened, the script loaded
        costs, totals = {}, {}
        for name, request in requests.items():
            response = counted(redis_log, jwt_decodes, request)
            assert response.status_code < 300, response.get_data(as_text=True)
            assert response.headers["RateLimit-Remaining"]
            costs[name] = (redis_log.limiter_commands(), dict(jwt_decodes))
            totals[name] = len(redis_log.commands)

    assert costs == {
        "one product": (["EVALSHA"], {}),
        "a page": (["EVALSHA"], {}),
        "the cart": (["EVALSHA"], {"verified": 1}),
        "an add": (["EVALSHA"], {"verified": 1}),
        "a profile": (["EVALSHA"], {"verified": 1}),
    }
    assert totals["one product"] == totals["a page"] == 1  # an anonymous read: the limit's command only


def test_the_remaining_count_goes_down_across_instances_and_429_comes_at_the_limit(
    instances, client_address, redis_log, redis_url
):
    build, serving = instances
    first, second = build(guest_rate_limit="3 per minute"), build(guest_rate_limit="3 per minute")
    answers = []
    for app in (first, second, first, second):
        with serving(app) as http:
            answers.append(
                counted(redis_log, Counter(), lambda: http.post("/v1/auth/guest", **from_ip(client_address)))
            )
            assert redis_log.limiter_commands() == ["EVALSHA"]

    assert [response.status_code for response in answers] == [201, 201, 201, 429]
    headers = [rate_limit_headers(response) for response in answers]
    assert [(limit, remaining) for limit, remaining, _ in headers] == [("3", "2"), ("3", "1"), ("3", "0"), ("3", "0")]
    resets = {reset for _, _, reset in headers}
    assert max(resets) - min(resets) <= 1  # one window, whichever instance answers
    store = redis.Redis.from_url(redis_url)
    (key,) = store.scan_iter(match=f"{LIMIT_KEY_PREFIX}*{client_address}*")
    ttl = store.ttl(key)
    assert abs(min(resets) - (time.time() + ttl)) <= 2

    limited = answers[-1]
    expect_problem(limited, 429, "rate_limited")
    assert 55 <= int(limited.headers["Retry-After"]) <= 60
    assert abs(int(limited.headers["Retry-After"]) - (headers[-1][2] - time.time())) <= 2
    assert "X-RateLimit-Limit" not in limited.headers
    with serving(first) as http:  # another address has a count of its own
        assert http.post("/v1/auth/guest", **from_ip("10.78.0.1")).status_code == 201


def test_the_window_the_script_answers_is_the_one_redis_holds(other_app, redis_url, client_address):
    """What the headers say after a hit is what asking Redis again (GET and TTL) would say."""
    app = other_app(redis_url=redis_url)
    strategy, asking_redis = limiter.limiter, FixedWindowRateLimiter(limiter.storage)
    limit = RateLimitItemPerMinute(2)
    for expected_remaining, allowed in ((1, True), (0, True), (0, False)):
        with app.test_request_context():
            assert strategy.hit(limit, client_address, "window") is allowed
            remembered = strategy.get_window_stats(limit, client_address, "window")
        asked = asking_redis.get_window_stats(limit, client_address, "window")
        assert remembered.remaining == asked.remaining == expected_remaining
        assert abs(remembered.reset_time - asked.reset_time) <= 1
    assert strategy.test(limit, client_address, "window") is False
    with app.test_request_context():
        strategy.clear(limit, client_address, "window")
        assert strategy.get_window_stats(limit, client_address, "window").remaining == 2


def test_the_login_lock_still_works_with_redis(instances, settings, client_address):
    build, serving = instances
    app = build(auth=dataclasses.replace(settings.auth, login_max_failures=2, login_lock_seconds=30))
    address = f"lock-{client_address}@example.test"
    with serving(app) as http:
        failures = [log_in(http, address, "Wrong-Password-1", **from_ip(client_address)) for _ in range(2)]
        locked = log_in(http, address, "Wrong-Password-1", **from_ip(client_address))
    for failure in failures:
        expect_problem(failure, 401, "invalid_credentials")
    expect_problem(locked, 429, "login_locked")
    assert 25 <= int(locked.headers["Retry-After"]) <= 30


def test_with_redis_down_the_limit_counts_in_memory_and_keeps_its_headers(other_app, settings, tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        resilience = dataclasses.replace(settings.resilience, redis_timeout=0.3)
        http = other_app(redis_url=server.url, resilience=resilience, guest_rate_limit="2 per minute").test_client()
        assert http.post("/v1/auth/guest").headers["RateLimit-Remaining"] == "1"
        server.stop()
        answers = [http.post("/v1/auth/guest") for _ in range(3)]  # counted per worker in memory
    finally:
        server.stop()
        limiter._storage_dead = False  # the shared limiter: later tests start with their storage alive
    assert [response.status_code for response in answers] == [201, 201, 429]
    assert [rate_limit_headers(response)[:2] for response in answers] == [("2", "1"), ("2", "0"), ("2", "0")]
    expect_problem(answers[-1], 429, "rate_limited")
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 60
