"""Catalog throughput benchmark: the public catalog endpoints against a hello-world Flask app.

Run from the repository root:

    .venv/bin/python bench/catalog.py [--duration 10s] [--round-trips-only]

It starts an in-memory nx-27017 (MongoDB wire protocol), seeds PRODUCTS products, creates a
PostgreSQL database of its own (for the administrator whose token the authorised page is read
with) and uses a Redis database of its own, serves the Storefront app and bench/hello_app.py
under the same gunicorn settings on 127.0.0.1, counts the round trips of an authorised page of
100 in process (bench/round_trips.py), loads each endpoint with wrk, prints a table with
PASS/MISS against the targets and writes bench/results/catalog-latest.json. A missed target is
reported, never an exit status; the exit status is 1 when a round trip count is over its budget
or when the benchmark itself could not run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import round_trips
from harness import (
    BENCH,
    CATALOG_REDIS,
    DROPPED_ENV,
    PRODUCTS,
    ROOT,
    WARMUP_SECONDS,
    WRK_CONNECTIONS,
    WRK_THREADS,
    BenchError,
    Processes,
    Result,
    bench_main,
    cpu_table,
    database,
    gunicorn_args,
    judge,
    measure,
    redis_database,
    run_flask,
    seed,
    start_gunicorn,
    start_mongo,
    table,
    write_json,
    wrk_command,
)

RESULTS = BENCH / "results" / "catalog-latest.json"
ROUND_TRIPS_RESULTS = BENCH / "results" / "catalog-round-trips-latest.json"  # --round-trips-only
ROUND_TRIP_SAMPLES = 10  # requests measured in process
ADMIN_EMAIL = "bench-admin@example.test"
PAGE = "/v1/products?page_size=100"

APP_ENV = {
    "APP_ENV": "development",
    "LOG_LEVEL": "WARNING",
    "THROTTLE_LIMIT": "1000000000",  # rate limiting must not interfere
    "THROTTLE_TTL": "60",
    "CATALOG_CACHE_TTL": "2",  # the default: anonymous reads micro-cached per worker
    "JWT_SECRET": "bench-only-jwt-secret-0123456789-0123456789",
}


@dataclass(frozen=True)
class Endpoint:
    name: str
    server: str  # "hello", "catalog", or "uncached" (the catalog with CATALOG_CACHE_TTL=0)
    path: str
    min_ratio: float | None = None  # of hello's req/s
    max_p99_ms: float | None = None
    authorised: bool = False  # sent with the administrator's bearer token


ENDPOINTS = (
    Endpoint("hello", "hello", "/"),
    Endpoint("listing", "catalog", "/v1/products?page_size=20", min_ratio=0.15, max_p99_ms=50.0),
    Endpoint("detail", "catalog", "/v1/products/500", min_ratio=0.30, max_p99_ms=50.0),
    # A page of 100 with a valid bearer token: an authorised read skips the micro-cache, so every
    # request reads the store, on the same (cached) instance as listing and detail.
    Endpoint("page-100-authorised", "catalog", PAGE, min_ratio=0.14, authorised=True),
    # The same reads with the micro-cache off: every request queries the store (no targets).
    Endpoint("listing-uncached", "uncached", "/v1/products?page_size=20"),
    Endpoint("detail-uncached", "uncached", "/v1/products/500"),
)


def check(endpoint: Endpoint, url: str, token: str) -> None:
    """One request first: a benchmark of error responses would be meaningless."""
    request = urllib.request.Request(url)
    if endpoint.authorised:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body, cache_control = response.read(), response.headers.get("Cache-Control", "")
    except OSError as error:
        raise BenchError(f"{endpoint.name}: GET {url} failed: {error}") from error
    expected = {"listing": 20, "page-100-authorised": 100}.get(endpoint.name)
    if expected is not None and (count := len(json.loads(body))) != expected:
        raise BenchError(f"{endpoint.name}: expected {expected} products from {url}, got {count}")
    if endpoint.authorised and "no-cache" not in cache_control:
        raise BenchError(f"{endpoint.name}: an authorised read answered Cache-Control {cache_control!r}, not no-cache")


def benchmark(processes: Processes, endpoint: Endpoint, url: str, seconds: int, token: str) -> Result:
    headers = [f"Authorization: Bearer {token}"] if endpoint.authorised else []
    shown = ["Authorization: Bearer <admin token>"] if endpoint.authorised else []
    print(shlex.join(wrk_command(url, seconds, headers=shown)))
    check(endpoint, url, token)
    return measure(processes, endpoint.name, url, seconds, headers=headers)


def admin_token(base: str, env: dict[str, str], workdir: Path) -> str:
    """An administrator made by `flask create-admin`, logged in through the API: their access token."""
    password = secrets.token_urlsafe(18)
    run_flask(
        ["create-admin", "--email", ADMIN_EMAIL, "--password-stdin"], env, workdir,
        what="flask create-admin", log_name="create-admin", stdin=password + "\n",
    )  # fmt: skip
    request = urllib.request.Request(
        base + "/v1/auth/login", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"email": ADMIN_EMAIL, "password": password}).encode(),
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["accessToken"]
    except (OSError, KeyError, ValueError) as error:
        detail = error.read()[:300] if isinstance(error, urllib.error.HTTPError) else error
        raise BenchError(f"the administrator could not log in: {detail}") from error


def count_round_trips(env: dict[str, str], token: str) -> dict[str, dict[str, object]]:
    """The authorised page of 100, through the Flask test client (bench/round_trips.py)."""
    counting = round_trips.Counting(env)
    try:
        for _ in range(2):  # opening the connections and first-use work are not counted
            counting.send("GET", PAGE, 200, token=token)
        read = lambda _: counting.send("GET", PAGE, 200, token=token)  # noqa: E731
        return {"page-100": counting.measure("page-100", read, ROUND_TRIP_SAMPLES)}
    finally:
        counting.close()


def run(
    options: argparse.Namespace, busy: float | None, processes: Processes, workdir: Path, database_url: str,
    redis_url: str,
) -> int:  # fmt: skip
    settings = gunicorn_args(options)
    print(f"Starting nx-27017 and seeding {PRODUCTS} products...")
    mongo_uri = start_mongo(processes, workdir)
    # Tokens issued before the runs must outlive them all (minimum: 15 minutes).
    access_ttl = max(900, 120 + len(ENDPOINTS) * (options.seconds + WARMUP_SECONDS + 30))
    env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
    env.update(
        APP_ENV, MONGODB_URI=mongo_uri, DATABASE_URL=database_url, REDIS_URL=redis_url,
        JWT_ACCESS_TTL=str(access_ttl),
    )  # fmt: skip
    env.update(options.observability_env)  # metrics as in production; traces with --tracing
    seed(env, workdir)
    run_flask(["db", "upgrade"], env, workdir, what="flask db upgrade", log_name="db-upgrade")
    serving = "the catalog" if options.round_trips_only else "the catalog (twice) and the hello app"
    print(f"Starting gunicorn ({' '.join(settings)}) for {serving}...")
    servers = {"catalog": start_gunicorn(processes, "catalog", "wsgi:app", ROOT, settings, env, workdir)}
    if not options.round_trips_only:
        servers["hello"] = start_gunicorn(processes, "hello", "hello_app:app", BENCH, settings, env, workdir)
        servers["uncached"] = start_gunicorn(
            processes, "uncached", "wsgi:app", ROOT, settings, {**env, "CATALOG_CACHE_TTL": "0"}, workdir
        )
    print("Creating an administrator (flask create-admin) and logging in...")
    token = admin_token(servers["catalog"], env, workdir)
    print("Counting round trips per request, in process...")
    counts = count_round_trips(env, token)
    results = []
    if not options.round_trips_only:
        for endpoint in ENDPOINTS:
            url = servers[endpoint.server] + endpoint.path
            results.append(benchmark(processes, endpoint, url, options.seconds, token))
        judge(results, ENDPOINTS)
        labels = {e.name: f"{e.name} GET {e.path}{' (Bearer)' if e.authorised else ''}" for e in ENDPOINTS}
        print()
        print(table(results, lambda result: labels[result.endpoint]))
        print()
        print(cpu_table(results, lambda result: labels[result.endpoint]))
    print()
    status = round_trips.report(counts, ROUND_TRIP_SAMPLES)
    path = ROUND_TRIPS_RESULTS if options.round_trips_only else RESULTS
    wrk_settings = {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS, "duration_s": options.seconds}
    write_json(
        path,
        "catalog",
        results,
        {
            "gunicorn": settings,
            "wrk": None if options.round_trips_only else wrk_settings,
            "warmup_s": WARMUP_SECONDS,
            "products": PRODUCTS,
            "store": "nx-27017 --db memory",
            "database": "the local PostgreSQL, a database of the run's own (the administrator)",
            "redis": f"{redis_url}, flushed before and after",
            "cpu_busy_before": None if busy is None else round(busy, 3),
            "app_env": {**APP_ENV, "JWT_ACCESS_TTL": str(access_ttl)},
            "tracing": options.tracing,  # 100 % sampling to a counting sink when true
            "metrics": "prometheus multiprocess mode (PROMETHEUS_MULTIPROC_DIR)",
        },
        **round_trips.json_fields(counts),
    )
    print(f"\nWrote {path.relative_to(ROOT)}")
    return status


def main(argv: list[str] | None = None) -> int:
    stores = (database, lambda: redis_database(CATALOG_REDIS))
    return bench_main(__doc__, "catalog", run, argv, stores=stores, round_trips=True)


if __name__ == "__main__":
    sys.exit(main())
