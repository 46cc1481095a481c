"""Catalog throughput benchmark: the public catalog endpoints against a hello-world Flask app.

Run from the repository root:

    .venv/bin/python bench/catalog.py [--duration 10s]

It starts an in-memory nx-27017 (MongoDB wire protocol), seeds PRODUCTS products, serves the
Storefront app and bench/hello_app.py under the same gunicorn settings on 127.0.0.1, loads each
endpoint with wrk, prints a table with PASS/MISS against the targets and writes
bench/results/catalog-latest.json. A missed target is reported, never an exit status: the exit
status is non-zero only when the benchmark itself could not run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness import (
    BENCH,
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
    gunicorn_args,
    judge,
    parse_wrk,
    run_wrk,
    seed,
    start_gunicorn,
    start_mongo,
    table,
    write_json,
)

RESULTS = BENCH / "results" / "catalog-latest.json"

APP_ENV = {
    "APP_ENV": "development",
    "LOG_LEVEL": "WARNING",
    "THROTTLE_LIMIT": "1000000000",  # rate limiting must not interfere
    "THROTTLE_TTL": "60",
    "CATALOG_CACHE_TTL": "2",  # the default: anonymous reads micro-cached per worker
    "JWT_SECRET": "bench-only-jwt-secret-not-used-by-these-endpoints",
}


@dataclass(frozen=True)
class Endpoint:
    name: str
    server: str  # "hello", "catalog", or "uncached" (the catalog with CATALOG_CACHE_TTL=0)
    path: str
    min_ratio: float | None = None  # of hello's req/s
    max_p99_ms: float | None = None


ENDPOINTS = (
    Endpoint("hello", "hello", "/"),
    Endpoint("listing", "catalog", "/v1/products?page_size=20", min_ratio=0.15, max_p99_ms=50.0),
    Endpoint("detail", "catalog", "/v1/products/500", min_ratio=0.30, max_p99_ms=50.0),
    # The same reads with the micro-cache off: every request queries the store (no targets).
    Endpoint("listing-uncached", "uncached", "/v1/products?page_size=20"),
    Endpoint("detail-uncached", "uncached", "/v1/products/500"),
)


def check(endpoint: Endpoint, url: str) -> None:
    """One request first: a benchmark of error responses would be meaningless."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
    except OSError as error:
        raise BenchError(f"{endpoint.name}: GET {url} failed: {error}") from error
    if endpoint.name == "listing" and (count := len(json.loads(body))) != 20:
        raise BenchError(f"listing: expected 20 products from {url}, got {count}")


def benchmark(endpoint: Endpoint, url: str, seconds: int) -> Result:
    check(endpoint, url)
    run_wrk(url, WARMUP_SECONDS)
    return Result(endpoint=endpoint.name, url=url, **parse_wrk(run_wrk(url, seconds)))


def run(options: argparse.Namespace, busy: float | None, processes: Processes, workdir: Path) -> None:
    settings = gunicorn_args(options)
    print(f"Starting nx-27017 and seeding {PRODUCTS} products...")
    mongo_uri = start_mongo(processes, workdir)
    env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
    env.update(APP_ENV, MONGODB_URI=mongo_uri)
    seed(env, workdir)
    print(f"Starting gunicorn ({' '.join(settings)}) for the catalog and the hello app...")
    servers = {
        "catalog": start_gunicorn(processes, "catalog", "wsgi:app", ROOT, settings, env, workdir),
        "hello": start_gunicorn(processes, "hello", "hello_app:app", BENCH, settings, env, workdir),
        "uncached": start_gunicorn(
            processes, "uncached", "wsgi:app", ROOT, settings, {**env, "CATALOG_CACHE_TTL": "0"}, workdir
        ),
    }
    results = []
    for endpoint in ENDPOINTS:
        url = servers[endpoint.server] + endpoint.path
        print(f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{options.seconds}s --latency {url}")
        results.append(benchmark(endpoint, url, options.seconds))
    judge(results, ENDPOINTS)
    print()
    print(table(results))
    write_json(
        RESULTS,
        "catalog",
        results,
        {
            "gunicorn": settings,
            "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS, "duration_s": options.seconds},
            "warmup_s": WARMUP_SECONDS,
            "products": PRODUCTS,
            "store": "nx-27017 --db memory",
            "cpu_busy_before": None if busy is None else round(busy, 3),
            "app_env": APP_ENV,
        },
    )
    print(f"\nWrote {RESULTS.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, "catalog", run, argv)


if __name__ == "__main__":
    sys.exit(main())
