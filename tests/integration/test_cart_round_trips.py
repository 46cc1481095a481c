"""What one cart write costs on the wire: at most 5 PostgreSQL round trips all told: BEGIN, the
locking SELECT, the UPDATE of the cart row, the INSERT of its event into the outbox (it must
commit with the change, app/events/outbox.py) and COMMIT.

Counted as bench/cart.py counts them: a psycopg2 connection that tallies what it sends,
psycopg2's own BEGIN, the COMMIT and any ping of the pool included. The app runs as in
production (Redis for the token check, the rate limit and the cart cache), after one warm-up
request of each kind, so that connecting and SQLAlchemy's first-use work are not counted.
This is a count, not a timing: it fails when a change adds a round trip to the hot path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg2.extensions
import pytest
import redis.connection
from pymongo import monitoring
from sqlalchemy import event

from app.cart.cache import KEY_PREFIX
from app.extensions import db
from tests.integration.test_cart_api import add, create

PG_BUDGET = 5


@dataclass
class Tally:
    counting: bool = False
    postgres: int = 0
    sql: list[str] = field(default_factory=list)
    redis_trips: int = 0
    redis_commands: Counter = field(default_factory=Counter)
    cart_cache_commands: int = 0  # those on the cart cache's keys
    mongo: Counter = field(default_factory=Counter)

    def reset(self) -> None:
        self.postgres, self.sql, self.redis_trips, self.cart_cache_commands = 0, [], 0, 0
        self.redis_commands, self.mongo = Counter(), Counter()


TALLY = Tally()


def _sent(connection, what: str, statements: int = 1) -> None:
    if not TALLY.counting:
        return
    if not connection.autocommit and connection.status == psycopg2.extensions.STATUS_READY:
        TALLY.postgres += 1  # psycopg2 opens the transaction with a BEGIN of its own
        TALLY.sql.append("BEGIN")
    TALLY.postgres += statements
    TALLY.sql.append(what)


class CountingCursor(psycopg2.extensions.cursor):
    def execute(self, query, params=None):
        _sent(self.connection, " ".join(str(query).split()[:4]))
        return super().execute(query, params)

    def executemany(self, query, params_seq):
        params_seq = list(params_seq)
        _sent(self.connection, " ".join(str(query).split()[:4]), len(params_seq))
        return super().executemany(query, params_seq)


class CountingConnection(psycopg2.extensions.connection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cursor_factory = CountingCursor

    def _end(self, what: str) -> None:
        if TALLY.counting and not self.autocommit and self.status != psycopg2.extensions.STATUS_READY:
            TALLY.postgres += 1  # nothing is sent when no transaction is open
            TALLY.sql.append(what)

    def commit(self):
        self._end("COMMIT")
        return super().commit()

    def rollback(self):
        self._end("ROLLBACK")
        return super().rollback()


class MongoCommands(monitoring.CommandListener):
    def started(self, event):
        if TALLY.counting:
            TALLY.mongo[event.command_name] += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


monitoring.register(MongoCommands())  # clients created from now on report their commands


def _command(args) -> None:
    words = [arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg) for arg in args]
    TALLY.redis_commands[words[0].split()[0].upper()] += 1
    TALLY.cart_cache_commands += any(word.startswith(KEY_PREFIX) for word in words[1:])


@pytest.fixture
def counted_app(other_app, redis_url, monkeypatch) -> Iterator:
    """An app as in production (Redis on), whose PostgreSQL connections count what they send."""
    send_packed = redis.connection.AbstractConnection.send_packed_command
    send_command = redis.connection.AbstractConnection.send_command
    pack_commands = redis.connection.AbstractConnection.pack_commands

    def counted_send(connection, command, check_health=True):
        if TALLY.counting:
            TALLY.redis_trips += 1  # one send per command, or per pipeline
        return send_packed(connection, command, check_health)

    def counted_command(connection, *args, **kwargs):
        if TALLY.counting:
            _command(args)
        return send_command(connection, *args, **kwargs)

    def counted_pack_many(connection, commands):
        commands = list(commands)
        if TALLY.counting:
            for command in commands:
                _command(command)
        return pack_commands(connection, commands)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted_send)
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_command", counted_command)
    monkeypatch.setattr(redis.connection.AbstractConnection, "pack_commands", counted_pack_many)
    app = other_app(redis_url=redis_url, cart_cache_ttl=60)
    with app.app_context():
        engine = db.engine
    event.listen(engine, "do_connect", lambda _d, _r, _a, params: params.update(connection_factory=CountingConnection))
    engine.dispose()
    TALLY.counting = False
    yield app
    TALLY.counting = False


def count(action: Callable[[], object]) -> Tally:
    TALLY.reset()
    TALLY.counting = True
    try:
        action()
    finally:
        TALLY.counting = False
    return Tally(
        postgres=TALLY.postgres,
        sql=list(TALLY.sql),
        redis_trips=TALLY.redis_trips,
        redis_commands=Counter(TALLY.redis_commands),
        cart_cache_commands=TALLY.cart_cache_commands,
        mongo=Counter(TALLY.mongo),
    )


def expect(response, status: int):
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def cart_of_three_lines(counted_app, client, admin_headers, token, subject: str, quantity: int):
    """A test client of the counted app, and a shopper whose cart has a line of each of mug, pen, cup."""
    for product_id in ("mug", "pen", "cup"):
        create(client, admin_headers, product_id, stock=1000)
    app = counted_app.test_client()
    shopper = {"Authorization": f"Bearer {token('customer', subject=subject)}"}
    for product_id in ("mug", "pen", "cup"):
        expect(add(app, shopper, product_id, quantity), 201)
    return app, shopper


def test_a_cart_write_costs_at_most_five_postgresql_round_trips(counted_app, client, admin_headers, token):
    app, shopper = cart_of_three_lines(counted_app, client, admin_headers, token, "counted", 5)
    # warm-up: one request of each kind
    expect(add(app, shopper, "mug"), 201)
    expect(app.put("/v1/cart/products/mug", json={"quantity": 7}, headers=shopper), 200)
    expect(app.delete("/v1/cart/products/mug", headers=shopper), 200)

    requests = {
        "add one more unit": lambda: expect(add(app, shopper, "pen"), 201),
        "set a quantity": lambda: expect(app.put("/v1/cart/products/pen", json={"quantity": 3}, headers=shopper), 200),
        "remove one unit": lambda: expect(app.delete("/v1/cart/products/pen", headers=shopper), 200),
        "set a larger quantity": lambda: expect(
            app.put("/v1/cart/products/cup", json={"quantity": 9}, headers=shopper), 200
        ),
    }
    costs = {name: count(request) for name, request in requests.items()}
    for name, cost in costs.items():
        print(
            f"{name}: PostgreSQL {cost.postgres} ({', '.join(cost.sql)}); "
            f"Redis {cost.redis_trips} round trips, {sum(cost.redis_commands.values())} commands "
            f"{dict(cost.redis_commands)}, {cost.cart_cache_commands} of them the cart cache's; "
            f"MongoDB {dict(cost.mongo)}"
        )
    over = {name: cost.sql for name, cost in costs.items() if cost.postgres > PG_BUDGET}
    assert not over, f"more than {PG_BUDGET} PostgreSQL round trips: {over}"
    # the cart's own Redis work: one script call after the commit (the other lines' snapshots are cached)
    assert {name: cost.cart_cache_commands for name, cost in costs.items()} == dict.fromkeys(costs, 1)
    # the whole request's Redis work (rate limit, token check, cart cache): at most 3 commands
    over = {name: dict(cost.redis_commands) for name, cost in costs.items() if sum(cost.redis_commands.values()) > 3}
    assert not over, f"more than 3 Redis commands: {over}"
    # a hold change is one MongoDB command when the cart's guess of the hold is right
    assert {name: sum(cost.mongo.values()) for name, cost in costs.items()} == dict.fromkeys(costs, 1)
    cart = expect(app.get("/v1/cart", headers=shopper), 200)
    assert {item["productId"]: item["quantity"] for item in cart["items"]} == {"mug": 6, "pen": 2, "cup": 9}


def test_an_uncached_cart_read_stores_its_entry_in_one_redis_command(counted_app, client, admin_headers, token):
    """A miss: rate limit, token check, the cache's MGET, then one command storing the cart
    entry with the product snapshots it read. The next read is a hit: the MGET alone."""
    app, shopper = cart_of_three_lines(counted_app, client, admin_headers, token, "uncached", 2)
    owner_id = expect(app.get("/v1/cart", headers=shopper), 200)["userId"]  # warm-up
    with counted_app.app_context():
        counted_app.extensions["carts"].cache.changed(owner_id)  # a write elsewhere: the next read misses

    answers = []
    miss = count(lambda: answers.append(expect(app.get("/v1/cart", headers=shopper), 200)))
    hit = count(lambda: answers.append(expect(app.get("/v1/cart", headers=shopper), 200)))
    for name, cost in (("miss", miss), ("hit", hit)):
        print(f"{name}: Redis {sum(cost.redis_commands.values())} commands {dict(cost.redis_commands)}")

    assert sum(miss.redis_commands.values()) <= 4, dict(miss.redis_commands)
    assert miss.cart_cache_commands == 2  # the MGET, and one store of the entry and its snapshots
    assert "SET" not in miss.redis_commands
    assert miss.postgres > 0  # read from the databases
    assert sum(miss.mongo.values()) > 0
    # served from the cache: no database read, the MGET the cache's only command
    assert (hit.postgres, sum(hit.mongo.values()), hit.cart_cache_commands) == (0, 0, 1)
    assert answers[0] == answers[1]
    assert {item["productId"]: item["quantity"] for item in answers[1]["items"]} == {"mug": 2, "pen": 2, "cup": 2}
