"""Events benchmark: how fast the relay publishes the outbox, and how long an event takes from
its change to a consumer.

Run from the repository root:

    .venv/bin/python bench/events.py [--duration 10s] [--events 20000]

1. Relay throughput: EVENTS events of 1,000 carts are written into the outbox at once (one
   INSERT), then `flask events relay` runs until it has published them all to RabbitMQ
   (publisher confirms, a queue bound so that they are routable): events per second, from the
   first event marked published to the last; once with one relay, once with two.
2. End-to-end lag: the app under gunicorn takes add-to-cart and remove requests from CLIENTS
   guests for --duration while one relay runs (its default interval, 1 s, or --relay-interval); a consumer in this
   process, bound to every event type, takes each event's arrival time minus its `occurredAt`
   (the moment the change was made): p50, p99 and max.

Everything runs on 127.0.0.1: the local PostgreSQL (a database of the run's own), nx-27017, and
the local RabbitMQ on a virtual host of the run's own (deleted at the end). Writes
bench/results/events-latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pika
from harness import (
    DROPPED_ENV,
    ROOT,
    BenchError,
    Processes,
    bench_main,
    database,
    gunicorn_args,
    run_flask,
    start_gunicorn,
    start_mongo,
    write_json,
)
from sqlalchemy import create_engine, text

RESULTS = ROOT / "bench" / "results" / "events-latest.json"
DEFAULT_EVENTS = 20_000
CARTS = 1_000
CLIENTS = 4
EXCHANGE = "storefront.events"
APP_ENV = {
    "APP_ENV": "development",
    "LOG_LEVEL": "WARNING",
    "THROTTLE_LIMIT": "1000000000",
    "GUEST_RATE_LIMIT": "100000 per minute",
    "JWT_SECRET": "bench-only-jwt-secret-0123456789-0123456789",
    "METRICS_PORT": "0",
    "LOW_STOCK_THRESHOLD": "0",
}


def rabbitmqctl(*arguments: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *arguments], check=True, capture_output=True, timeout=60)


class VirtualHost:
    """A RabbitMQ virtual host of the run's own, with a queue bound to every event type."""

    def __init__(self) -> None:
        self.name = f"storefront_bench_{os.getpid()}"
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        self.url = f"amqp://guest:guest@127.0.0.1:5672/{self.name}"
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
        channel.queue_declare("bench.all", durable=True)
        channel.queue_bind("bench.all", EXCHANGE, routing_key="#")
        connection.close()

    def purge(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        connection.channel().queue_purge("bench.all")
        connection.close()

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


def fill_outbox(database_url: str, count: int) -> None:
    """`count` cart events of CARTS carts, as the cart module writes them."""
    now = datetime.now(UTC)
    rows = []
    for index in range(count):
        cart = str(uuid.UUID(int=index % CARTS + 1))
        event = {
            "id": str(uuid.uuid4()), "type": "cart.item_changed", "version": 1, "occurredAt": now.isoformat(),
            "aggregateType": "cart", "aggregateId": cart, "actor": "system", "traceparent": None,
            "payload": {"cartId": cart, "ownerId": "bench", "productId": "1", "quantity": 2, "previousQuantity": 1},
        }  # fmt: skip
        rows.append({"event_id": event["id"], "aggregate_id": cart, "body": json.dumps(event), "created_at": now})
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE outbox"))
        connection.execute(
            text(
                "INSERT INTO outbox (event_id, type, aggregate_type, aggregate_id, body, created_at, attempts)"
                " VALUES (:event_id, 'cart.item_changed', 'cart', :aggregate_id, :body, :created_at, 0)"
            ),
            rows,
        )
    engine.dispose()


def relay_throughput(
    processes: Processes, env: dict[str, str], workdir: Path, database_url: str, count: int, relays: int
) -> dict[str, float]:
    fill_outbox(database_url, count)
    engine = create_engine(database_url)
    started = [
        processes.start(f"relay-{relays}-{n}", [sys.executable, "-m", "flask", "--app", "wsgi", "events", "relay",
                        "--interval", "0.2"], env=env, cwd=ROOT, log=workdir / f"relay-{relays}-{n}.log")
        for n in range(relays)
    ]  # fmt: skip
    deadline = time.monotonic() + 600
    with engine.connect() as connection:
        while connection.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar():
            if time.monotonic() > deadline or any(process.poll() is not None for process in started):
                raise BenchError(f"the relay did not drain the outbox: see {workdir}")
            time.sleep(0.2)
            connection.rollback()
        first, last = connection.execute(text("SELECT min(published_at), max(published_at) FROM outbox")).one()
    engine.dispose()
    for process in started:
        process.terminate()
        process.wait(timeout=15)
    seconds = (last - first).total_seconds()
    return {"events": count, "relays": relays, "seconds": round(seconds, 2), "events_per_s": round(count / seconds, 1)}


class LagMeter:
    """Consumes every event from the bench queue; each one's lag after its occurredAt."""

    def __init__(self, url: str) -> None:
        self.lags: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._consume, args=(url,), daemon=True)
        self.thread.start()

    def _consume(self, url: str) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        for _method, _properties, body in channel.consume("bench.all", auto_ack=True, inactivity_timeout=0.2):
            if self.stop.is_set():
                break
            if body is not None:
                occurred = datetime.fromisoformat(json.loads(body)["occurredAt"])
                self.lags.append((datetime.now(UTC) - occurred).total_seconds())
        connection.close()


def shop(url: str, until: float, token: str) -> int:
    """Add a unit and take it out again until `until`: two cart events and two holds each."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    done = 0
    while time.monotonic() < until:
        for method, path, body in (
            ("POST", "/v1/cart/products", b'{"productId": "1", "quantity": 1}'),
            ("DELETE", "/v1/cart/products/1", None),
        ):
            request = urllib.request.Request(url + path, data=body, headers=headers, method=method)
            with urllib.request.urlopen(request, timeout=30):
                done += 1
    return done


def end_to_end_lag(
    processes: Processes, env: dict[str, str], workdir: Path, options: argparse.Namespace, broker: VirtualHost
) -> dict[str, float]:
    url = start_gunicorn(processes, "app", "wsgi:app", ROOT, gunicorn_args(options), env, workdir)
    processes.start(
        "relay-lag", [sys.executable, "-m", "flask", "--app", "wsgi", "events", "relay", "--interval",
                      options.relay_interval], env=env, cwd=ROOT,
        log=workdir / "relay-lag.log",
    )  # fmt: skip
    tokens = []
    for _ in range(CLIENTS):
        request = urllib.request.Request(
            url + "/v1/auth/guest", data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            tokens.append(json.loads(answer.read())["accessToken"])
    time.sleep(3)  # the relay drains the seed's product events first
    broker.purge()
    meter = LagMeter(broker.url)
    until = time.monotonic() + options.seconds
    counts: list[int] = []
    threads = [threading.Thread(target=lambda t=token: counts.append(shop(url, until, t))) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(3)  # the relay's interval, and the last events on their way
    meter.stop.set()
    meter.thread.join(timeout=10)
    if not meter.lags:
        raise BenchError(f"no event reached the consumer: see {workdir}")
    lags = sorted(meter.lags)
    return {
        "requests": sum(counts),
        "requests_per_s": round(sum(counts) / options.seconds, 1),
        "events": len(lags),
        "lag_p50_ms": round(statistics.median(lags) * 1000, 1),
        "lag_p99_ms": round(lags[int(0.99 * (len(lags) - 1))] * 1000, 1),
        "lag_max_ms": round(lags[-1] * 1000, 1),
    }


def run(
    options: argparse.Namespace, _busy: float | None, processes: Processes, workdir: Path, database_url: str
) -> int:
    database_url = database_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    broker = VirtualHost()
    try:
        mongo_uri = start_mongo(processes, workdir)
        env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
        env.update(APP_ENV, MONGODB_URI=mongo_uri, DATABASE_URL=database_url, RABBITMQ_URL=broker.url)
        env.update(options.observability_env)
        run_flask(["db", "upgrade"], env, workdir, what="flask db upgrade", log_name="db-upgrade")
        run_flask(["seed", "--count", "10"], env, workdir, what="seeding", log_name="seed")
        throughput = []
        for relays in (1, 2):
            print(f"Relay throughput: {options.events} events of {CARTS} carts, {relays} relay(s)...")
            throughput.append(relay_throughput(processes, env, workdir, database_url, options.events, relays))
            print(f"  {throughput[-1]}")
        broker.purge()
        print(f"End-to-end lag: {CLIENTS} guests adding and removing for {options.seconds} s, one relay...")
        lag = end_to_end_lag(processes, env, workdir, options, broker)
        print(f"  {lag}")
    finally:
        processes.stop_all()
        broker.delete()
    write_json(
        RESULTS,
        "events",
        [],
        {
            "gunicorn": gunicorn_args(options),
            "relay_interval_s": {"throughput": 0.2, "lag": float(options.relay_interval)},
            "clients": CLIENTS,
        },
        relay_throughput=throughput,
        end_to_end_lag=lag,
    )
    print(f"\nWrote {RESULTS.relative_to(ROOT)}")
    return 0


def events_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        help=f"events in the outbox for the throughput runs [{DEFAULT_EVENTS}]",
    )
    parser.add_argument(
        "--relay-interval", default="1.0", help="the lag run's relay: its wait once the outbox is drained [1.0 s]"
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(__doc__, "events", run, argv, stores=(database,), more=events_options, needs_wrk=False)


if __name__ == "__main__":
    sys.exit(main())
