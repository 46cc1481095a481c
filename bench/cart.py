"""Cart throughput benchmark: the cart API, with shoppers' tokens, against a hello-world Flask app.

Run from the repository root:

    .venv/bin/python bench/cart.py [--duration 10s] [--round-trips-only]

It starts an in-memory nx-27017 (MongoDB wire protocol) and seeds PRODUCTS products, creates a
PostgreSQL database of its own (storefront_bench_<pid>, migrated by `flask db upgrade`, dropped
at the end), serves the Storefront app and bench/hello_app.py under the same gunicorn settings on
127.0.0.1, creates an administrator (`flask create-admin`) and shoppers (register, verify-email
and login through the API), gives each shopper a cart of LINES lines, counts the round trips
each kind of request costs per store (in process, Flask test client: bench/round_trips.py),
loads each endpoint with wrk, prints a table with PASS/MISS against the targets and writes
bench/results/cart-latest.json. A missed target is reported, never an exit status; the exit
status is 1 when a round trip count is over its budget or when the benchmark itself could not
run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import math
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import round_trips
from harness import (
    BENCH,
    DROPPED_ENV,
    PRODUCTS,
    REDIS,
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

RESULTS = BENCH / "results" / "cart-latest.json"
ROUND_TRIPS_RESULTS = BENCH / "results" / "cart-round-trips-latest.json"  # --round-trips-only
# The local Redis, in a database number of the benchmark's own (the tests use 15): production
# always has Redis (rate limits, revoked tokens, the cart cache), so the benchmark does too.
# Flushed when the run starts and when it ends; no other database is touched.

LINES = 3  # lines in every shopper's cart (issue 11: "GET /v1/cart, 3 lines, many shoppers")
LINE_QUANTITY = 2  # units each line starts with (add+remove then never empties a line)
MAX_LINE_QUANTITY = 100  # the cart's cap per line (409 quantity_limit_exceeded above it)
STOCK_DELTA = 1_000_000  # added to the stock of every product a cart uses: stock never runs out
# Pure add-to-cart grows lines until they hit the cap, so the shoppers must have room for every
# add of the warm-up and the run: enough of them for ADD_RATE_CEILING req/s (above the target's
# 9 % of hello's ~7 000 req/s), and at least two per connection so that no two requests in flight
# lock the same cart.
ADD_RATE_CEILING = 1000
MIN_SHOPPERS = 2 * WRK_CONNECTIONS
GET_CART_SHOPPERS = 32  # get-cart reads these shoppers' carts in turn (issue 11)
ROUND_TRIP_SAMPLES = 10  # requests of each kind measured in process
PROBES = 3  # shoppers of the round trip counts' own: the probe, the spare (new lines), the buyer
ADMIN_EMAIL = "bench-admin@example.test"

APP_ENV = {
    "APP_ENV": "development",
    "LOG_LEVEL": "WARNING",
    "THROTTLE_LIMIT": "1000000000",  # rate limiting must not interfere (it still runs)
    "THROTTLE_TTL": "60",
    "AUTH_RATE_LIMIT": "100000 per minute",  # registering and logging in the shoppers
    "CATALOG_CACHE_TTL": "2",  # the default (not used by the cart)
    "CART_CACHE_TTL": "2",  # the default: product figures in a cart at most 2 s old
    "JWT_SECRET": "bench-only-jwt-secret-0123456789-0123456789",
    "MAIL_BACKEND": "file",  # the verification links are read from the files
}


@dataclass(frozen=True)
class Endpoint:
    name: str
    server: str  # "hello" or "app"
    label: str  # method and path, for the table
    mode: str | None = None  # the Lua script's mode: "get", "add" or "add+remove"; None: a plain GET
    min_ratio: float | None = None  # of hello's req/s
    max_p99_ms: float | None = None


ENDPOINTS = (
    Endpoint("hello", "hello", "GET /"),
    Endpoint("get-cart", "app", f"GET /v1/cart ({GET_CART_SHOPPERS} carts)", "get", min_ratio=0.33, max_p99_ms=50.0),
    # One unit added then removed again, on the same line: the cart's state never drifts (no target).
    Endpoint("add+remove", "app", "POST+DELETE /v1/cart/products/<id>", "add+remove"),
    Endpoint("add-to-cart", "app", "POST /v1/cart/products", "add", min_ratio=0.09, max_p99_ms=100.0),
)


@dataclass
class Shopper:
    email: str
    products: list[str]  # the product ids of the cart's lines
    token: str = ""


# --- the API ---------------------------------------------------------------------------------


def call(
    base: str, method: str, path: str, *, token: str | None = None, body: object = None, expect: tuple[int, ...]
) -> object:
    """One request to the app: the decoded JSON answer, or BenchError for any other status."""
    request = urllib.request.Request(base + path, method=method)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    except OSError as error:
        raise BenchError(f"{method} {path} failed: {error}") from error
    if status not in expect:
        raise BenchError(f"{method} {path} answered {status}, not {expect}: {payload[:300].decode(errors='replace')}")
    return json.loads(payload) if payload else None


def log_in(base: str, address: str, password: str) -> str:
    session = call(base, "POST", "/v1/auth/login", body={"email": address, "password": password}, expect=(200,))
    return session["accessToken"]


def verification_tokens(mail_dir: Path) -> dict[str, str]:
    """The token of each verification email written by MAIL_BACKEND=file, by recipient."""
    tokens = {}
    for path in mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        match = re.search(r"POST /v1/auth/verify-email:\s*(\S+)", message.get_body(("plain",)).get_content())
        if match:
            tokens[str(message["To"])] = match.group(1)
    return tokens


def parallel(function: Callable[[Shopper], object], shoppers: list[Shopper]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in pool.map(function, shoppers):  # re-raises the first failure
            pass


def prepare_shoppers(base: str, env: dict[str, str], workdir: Path, count: int) -> list[Shopper]:
    """An administrator (CLI) who raises the stock of the products used, then `count` shoppers
    (API: register, verify-email, login), each with a cart of LINES lines of LINE_QUANTITY units.
    """
    password = secrets.token_urlsafe(18)
    run_flask(
        ["create-admin", "--email", ADMIN_EMAIL, "--password-stdin"], env, workdir,
        what="flask create-admin", log_name="create-admin", stdin=password + "\n",
    )  # fmt: skip
    admin = log_in(base, ADMIN_EMAIL, password)
    shoppers = [
        Shopper(f"shopper-{n}@example.test", [str((LINES * n + line) % PRODUCTS + 1) for line in range(LINES)])
        for n in range(count)
    ]
    used = sorted({product for shopper in shoppers for product in shopper.products}, key=int)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in pool.map(
            lambda product: call(
                base, "POST", f"/v1/products/{product}/stock", token=admin,
                body={"delta": STOCK_DELTA, "reason": "bench/cart.py"}, expect=(200,),
            ),
            used,
        ):  # fmt: skip
            pass

    parallel(
        lambda shopper: call(
            base, "POST", "/v1/auth/register", body={"email": shopper.email, "password": password}, expect=(201,)
        ),
        shoppers,
    )
    links = verification_tokens(Path(env["MAIL_FILE_DIR"]))
    missing = [shopper.email for shopper in shoppers if shopper.email not in links]
    if missing:
        raise BenchError(f"no verification email for {missing[:3]} (and {max(len(missing) - 3, 0)} more)")

    def sign_in_and_fill(shopper: Shopper) -> None:
        call(base, "POST", "/v1/auth/verify-email", body={"token": links[shopper.email]}, expect=(200,))
        shopper.token = log_in(base, shopper.email, password)
        for product in shopper.products:
            body = {"productId": product, "quantity": LINE_QUANTITY}
            call(base, "POST", "/v1/cart/products", token=shopper.token, body=body, expect=(201,))

    parallel(sign_in_and_fill, shoppers)
    return shoppers


def shoppers_needed(seconds: int) -> int:
    """Enough shoppers for ADD_RATE_CEILING adds per second through the check, warm-up and run."""
    room = LINES * (MAX_LINE_QUANTITY - LINE_QUANTITY - 2)  # 2 units of slack for add+remove
    return max(MIN_SHOPPERS, math.ceil(ADD_RATE_CEILING * (seconds + WARMUP_SECONDS + 2) / room))


# --- round trips per request (in process) ----------------------------------------------------


def count_round_trips(
    env: dict[str, str], probe: Shopper, spare: Shopper, buyer: Shopper
) -> dict[str, dict[str, object]]:
    """Each kind of request through the Flask test client, against the same databases and Redis,
    counted per store (bench/round_trips.py). `probe` has a cart of LINES lines; `spare`'s
    products are new lines for it; `buyer` has a cart of LINES lines too, checked out again and
    again (refilled, uncounted, before each checkout)."""
    counting = round_trips.Counting(env)
    send = counting.send

    def add(shopper: Shopper, product: str, quantity: int = 1) -> None:
        send("POST", "/v1/cart/products", 201, token=shopper.token, body={"productId": product, "quantity": quantity})

    def set_quantity(n: int) -> None:
        # each line to LINE_QUANTITY + 1, then back: every request changes the line (grows, then shrinks)
        quantity = LINE_QUANTITY + 1 if (n // LINES) % 2 == 0 else LINE_QUANTITY
        path = f"/v1/cart/products/{probe.products[n % LINES]}"
        send("PUT", path, 200, token=probe.token, body={"quantity": quantity})

    def remove(product: str, whole_line: bool = False) -> None:
        send("DELETE", f"/v1/cart/products/{product}{'?all=true' if whole_line else ''}", 200, token=probe.token)

    def get(_: int = 0) -> object:
        return send("GET", "/v1/cart", 200, token=probe.token)

    def fill_cache(n: int) -> None:
        """A write's next read is a miss (that is get-uncached): one read first fills the cache again."""
        if n == 0:
            get()

    def forget_cart(_: int) -> None:
        """What a write elsewhere (another worker, another tab) does to the cached cart."""
        with counting.app.app_context():
            counting.app.extensions["carts"].cache.changed(owner_id)

    def refill(_: int) -> None:
        for product in buyer.products:
            add(buyer, product, LINE_QUANTITY)

    def check_out(_: int) -> None:
        send("POST", "/v1/cart/checkout", 201, token=buyer.token, **{"Idempotency-Key": str(uuid.uuid4())})

    try:
        # First requests open the connections and fill SQLAlchemy's caches: not counted.
        owner_id = get()["userId"]
        set_quantity(0)  # LINE_QUANTITY + 1
        set_quantity(LINES)  # back to LINE_QUANTITY
        add(probe, probe.products[0])
        remove(probe.products[0])
        get()
        check_out(0)
        samples = ROUND_TRIP_SAMPLES
        counts = {
            "add": counting.measure("add", lambda n: add(probe, probe.products[n % LINES]), samples),
            # the adds' units again, one by one: the lines are back to LINE_QUANTITY
            "remove-one": counting.measure("remove-one", lambda n: remove(probe.products[n % LINES]), samples),
            "set": counting.measure("set", set_quantity, samples),
            "get": counting.measure("get", get, samples, before=fill_cache),
            "get-uncached": counting.measure("get-uncached", get, samples, before=forget_cart),
            "checkout": counting.measure("checkout", check_out, samples, before=refill),
            "add-new-line": counting.measure(
                "add-new-line", lambda n: add(probe, spare.products[n]), len(spare.products)
            ),
        }
        for product in spare.products:
            remove(product, whole_line=True)
        return counts
    finally:
        counting.close()


# --- wrk -------------------------------------------------------------------------------------

LUA = """\
-- Generated by bench/cart.py for one run (the tokens expire with it). Mode: {mode}
local mode = "{mode}"
local thread_count = {threads}
local tokens = {{ {tokens} }}
local products = {{ {products} }}  -- each shopper's cart lines, in the order of tokens

local threads_set_up = 0
function setup(thread)
  thread:set("thread_index", threads_set_up)
  threads_set_up = threads_set_up + 1
end

-- Each thread drives its own shoppers (every thread_count-th one): two requests in flight never
-- lock the same cart. Requests visit the shoppers in turn, then the next line of each cart.
local plan, added, turn = {{}}, {{}}, 0

function init(args)
  for line = 1, #products[1] do
    for shopper = thread_index + 1, #tokens, thread_count do
      local auth = {{ ["Authorization"] = "Bearer " .. tokens[shopper] }}
      if mode == "get" then
        if line == 1 then plan[#plan + 1] = {{ wrk.format("GET", "/v1/cart", auth) }} end
      else
        local product = products[shopper][line]
        local json = {{ ["Authorization"] = auth["Authorization"], ["Content-Type"] = "application/json" }}
        local body = '{{"productId":"' .. product .. '","quantity":1}}'
        plan[#plan + 1] = {{
          wrk.format("POST", "/v1/cart/products", json, body),
          wrk.format("DELETE", "/v1/cart/products/" .. product, auth),
        }}
      end
    end
  end
end

function request()
  turn = turn % #plan + 1
  if mode == "add+remove" then
    added[turn] = not added[turn]  -- add, then remove the unit added, on each line in turn
    return added[turn] and plan[turn][1] or plan[turn][2]
  end
  return plan[turn][1]
end
"""


def lua_script(path: Path, mode: str, shoppers: list[Shopper]) -> Path:
    def strings(values: list[str]) -> str:
        return ", ".join(json.dumps(value) for value in values)  # a JSON string of these is a Lua string

    path.write_text(
        LUA.format(
            mode=mode,
            threads=WRK_THREADS,
            tokens=strings([shopper.token for shopper in shoppers]),
            products=", ".join("{ " + strings(shopper.products) + " }" for shopper in shoppers),
        )
    )
    return path


def check(endpoint: Endpoint, base: str, shopper: Shopper) -> None:
    """One request of each kind first: a benchmark of error responses would be meaningless."""
    if endpoint.mode is None:
        with urllib.request.urlopen(base + "/", timeout=5):
            return
    if endpoint.mode == "get":
        got = call(base, "GET", "/v1/cart", token=shopper.token, expect=(200,))
        if len(got["items"]) != LINES:
            raise BenchError(f"get-cart: expected {LINES} lines, got {len(got['items'])}")
        return
    product = shopper.products[0]
    body = {"productId": product, "quantity": 1}
    call(base, "POST", "/v1/cart/products", token=shopper.token, body=body, expect=(201,))
    if endpoint.mode == "add+remove":
        call(base, "DELETE", f"/v1/cart/products/{product}", token=shopper.token, expect=(200,))


def benchmark(
    processes: Processes, endpoint: Endpoint, base: str, script: Path | None, seconds: int, shopper: Shopper
) -> Result:
    url = base + ("/" if endpoint.mode is None else "/v1/cart" if endpoint.mode == "get" else "/v1/cart/products")
    print(" ".join(wrk_command(url, seconds, script)))
    check(endpoint, base, shopper)
    return measure(processes, endpoint.name, url, seconds, script)


# --- main ------------------------------------------------------------------------------------


def run(
    options: argparse.Namespace,
    busy: float | None,
    processes: Processes,
    workdir: Path,
    database_url: str,
    redis_url: str,
) -> int:
    print(f"Starting nx-27017 and seeding {PRODUCTS} products...")
    settings = gunicorn_args(options)
    shopper_count = 0 if options.round_trips_only else shoppers_needed(options.seconds)
    # Tokens issued before the runs must outlive them all (minimum: 15 minutes).
    access_ttl = max(900, 120 + len(ENDPOINTS) * (options.seconds + WARMUP_SECONDS + 30))
    mongo_uri = start_mongo(processes, workdir)
    env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
    env.update(
        APP_ENV, MONGODB_URI=mongo_uri, DATABASE_URL=database_url, MAIL_FILE_DIR=str(workdir / "mail"),
        JWT_ACCESS_TTL=str(access_ttl), REDIS_URL=redis_url,
    )  # fmt: skip
    env.update(options.observability_env)  # metrics as in production; traces with --tracing
    seed(env, workdir)
    run_flask(["db", "upgrade"], env, workdir, what="flask db upgrade", log_name="db-upgrade")
    serving = "the app" if options.round_trips_only else "the app and the hello app"
    print(f"Starting gunicorn ({' '.join(settings)}) for {serving}...")
    servers = {"app": start_gunicorn(processes, "app", "wsgi:app", ROOT, settings, env, workdir)}
    # As in every deployment, a relay drains the events the writes record (the product documents'
    # too, which would otherwise grow with every hold); without RABBITMQ_URL it hands them to the
    # consumers in process (the audit trail, the order status and mails), whose CPU counts here.
    relay = [sys.executable, "-m", "flask", "--app", "wsgi", "events", "relay"]
    processes.start("relay", relay, env={**env, "METRICS_PORT": "0"}, cwd=ROOT, log=workdir / "relay.log")
    if not options.round_trips_only:
        servers["hello"] = start_gunicorn(processes, "hello", "hello_app:app", BENCH, settings, env, workdir)
    print(f"Creating an administrator and {shopper_count} shoppers (+{PROBES} for the round trips), filling carts...")
    everyone = prepare_shoppers(servers["app"], env, workdir, shopper_count + PROBES)
    shoppers, probes = everyone[:shopper_count], everyone[shopper_count:]
    print("Counting round trips per request, in process...")
    counts = count_round_trips(env, *probes)
    results = []
    if not options.round_trips_only:
        for endpoint in ENDPOINTS:
            script = None
            if endpoint.mode:
                driven = shoppers[:GET_CART_SHOPPERS] if endpoint.mode == "get" else shoppers
                script = lua_script(workdir / f"{endpoint.mode.replace('+', '-')}.lua", endpoint.mode, driven)
            server = servers[endpoint.server]
            results.append(benchmark(processes, endpoint, server, script, options.seconds, shoppers[0]))
        judge(results, ENDPOINTS)
        labels = {endpoint.name: f"{endpoint.name} {endpoint.label}" for endpoint in ENDPOINTS}
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
        "cart",
        results,
        {
            "gunicorn": settings,
            "wrk": None if options.round_trips_only else wrk_settings,
            "warmup_s": WARMUP_SECONDS,
            "products": PRODUCTS,
            "shoppers": shopper_count,
            "get_cart_shoppers": min(GET_CART_SHOPPERS, shopper_count),
            "lines_per_cart": LINES,
            "line_quantity_at_start": LINE_QUANTITY,
            "stock_added_per_product": STOCK_DELTA,
            "store": "nx-27017 --db memory",
            "database": "the local PostgreSQL, a database of the run's own",
            "redis": f"{REDIS}, flushed before and after",
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
    return bench_main(__doc__, "cart", run, argv, stores=(database, redis_database), round_trips=True)


if __name__ == "__main__":
    sys.exit(main())
