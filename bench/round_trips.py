"""Round trips per request, per store, counted in process, and the budgets they must keep.

bench/cart.py and bench/catalog.py import it. A request is run through the Flask test client
of an app built in the benchmark's own process, against the same nx-27017, PostgreSQL database
and Redis database as the served app, and counted on the wire:

- MongoDB commands: a pymongo CommandListener;
- PostgreSQL round trips: a psycopg2 connection class that counts what it sends (the
  statements, psycopg2's own BEGIN, COMMIT/ROLLBACK of an open transaction, the pool's ping),
  and SQL statements (SQLAlchemy's before_cursor_execute) for the detail;
- Redis round trips (each send: one command, or one whole pipeline) and Redis commands (each
  command; a pipeline of 3 is 1 round trip and 3 commands, a Lua EVALSHA 1 command). The
  MULTI/EXEC that wrap a transaction pipeline are named in the detail, not counted.

A count above its budget makes the benchmark exit 1 (see bench/README.md).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness import ROOT, BenchError

# The budgets, per request, all told (authentication, rate limit, idempotency, caches included):
# at most this many MongoDB commands, PostgreSQL round trips and Redis commands (issue 11).
# A request with no row here is counted and printed, not judged.
BUDGETS: dict[str, dict[str, int]] = {
    #  request          MongoDB cmds    PostgreSQL trips   Redis commands
    # A write: BEGIN, locking SELECT, UPDATE cart, INSERT its event into the outbox (issue 14), COMMIT.
    "add": {"mongodb": 1, "postgres": 5, "redis": 3},  # one unit more on a line that exists
    "set": {"mongodb": 1, "postgres": 5, "redis": 3},  # PUT a line's quantity
    "remove-one": {"mongodb": 1, "postgres": 5, "redis": 3},  # DELETE one unit
    "get": {"mongodb": 0, "postgres": 0, "redis": 3},  # GET /v1/cart, from the cart cache
    "get-uncached": {"mongodb": 1, "postgres": 4, "redis": 4},  # GET /v1/cart after a write elsewhere
    # A cart of 3 lines, with an Idempotency-Key. MongoDB: one fresh read of the 3 products, each
    # hold confirmed, then sold (1 + 3 + 3). PostgreSQL: the key's claim (BEGIN, INSERT, COMMIT: it
    # must commit before the work, so that a concurrent request with the key sees it), the
    # checkout's one transaction (BEGIN, locking SELECT, UPDATE cart, INSERT order, INSERT lines,
    # INSERT its two events, COMMIT) and the answer stored under the key (BEGIN, UPDATE, COMMIT):
    # 3 + 7 + 3.
    "checkout": {"mongodb": 7, "postgres": 13, "redis": 4},
    "page-100": {"mongodb": 1, "postgres": 0, "redis": 2},  # GET /v1/products?page_size=100, authorised
}
STORES = {"mongodb": "MongoDB commands", "postgres": "PostgreSQL round trips", "redis": "Redis commands"}
FRAMING = {"MULTI", "EXEC"}  # a transaction pipeline's wrapping: named, not counted as commands


@dataclass
class Tally:
    sql: Counter = field(default_factory=Counter)  # statements SQLAlchemy sent, by first keyword
    postgres: int = 0  # PostgreSQL round trips on the wire
    mongo: Counter = field(default_factory=Counter)  # MongoDB commands, by name
    redis_trips: int = 0  # Redis sends (a pipeline is one)
    redis: Counter = field(default_factory=Counter)  # Redis commands, by name (MULTI/EXEC included)

    def figures(self) -> dict[str, float]:
        return {
            "sql_statements": sum(self.sql.values()),
            "postgres": self.postgres,
            "mongodb": sum(self.mongo.values()),
            "redis_round_trips": self.redis_trips,
            "redis": sum(n for name, n in self.redis.items() if name not in FRAMING),
        }


def summarise(tallies: list[Tally], budget: Mapping[str, int] | None) -> dict[str, object]:
    """Means per request (what is printed and judged), the maxima, the detail and the verdict."""
    n = len(tallies) or 1
    each = [tally.figures() for tally in tallies]
    means = {key: sum(figures[key] for figures in each) / n for key in each[0]} if each else {}
    total = Tally()
    for tally in tallies:
        total.sql.update(tally.sql)
        total.mongo.update(tally.mongo)
        total.redis.update(tally.redis)
    over = [
        f"{STORES[store]} {_number(means[store])} > {limit}"
        for store, limit in (budget or {}).items()
        if means[store] > limit
    ]
    return {
        "requests": len(tallies),
        **means,
        "max": {key: max(figures[key] for figures in each) for key in each[0]} if each else {},
        "sql_by_kind": {kind: count / n for kind, count in total.sql.most_common()},
        "mongodb_by_command": {name: count / n for name, count in total.mongo.most_common()},
        "redis_by_command": {name: count / n for name, count in total.redis.most_common()},
        "budget": dict(budget) if budget is not None else None,
        "over_budget": over,
    }


class Counting:
    """Counting hooks for this process, and an app built after them (so that its clients report).

    Only requests run inside `measure` are counted: connecting, warming up and preparing are not.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        sys.path.insert(0, str(ROOT))
        import psycopg2.extensions
        import redis.connection
        from pymongo import monitoring
        from sqlalchemy import event

        from app import create_app
        from app.config import load_settings
        from app.extensions import db

        self.tally = Tally()
        self.on = False
        counting = self

        class MongoCommands(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                if counting.on:
                    counting.tally.mongo[event.command_name] += 1

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                pass

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                pass

        def sent(connection: psycopg2.extensions.connection, statements: int = 1) -> None:
            if not counting.on:
                return
            if not connection.autocommit and connection.status == psycopg2.extensions.STATUS_READY:
                counting.tally.postgres += 1  # psycopg2 opens the transaction with a BEGIN of its own
            counting.tally.postgres += statements

        class CountingCursor(psycopg2.extensions.cursor):
            def execute(self, query, params=None):
                sent(self.connection)
                return super().execute(query, params)

            def executemany(self, query, params_seq):
                params_seq = list(params_seq)
                sent(self.connection, len(params_seq))  # one statement per parameter set
                return super().executemany(query, params_seq)

        class CountingConnection(psycopg2.extensions.connection):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.cursor_factory = CountingCursor

            def _end(self) -> None:
                if counting.on and not self.autocommit and self.status != psycopg2.extensions.STATUS_READY:
                    counting.tally.postgres += 1  # nothing is sent when no transaction is open

            def commit(self):
                self._end()
                return super().commit()

            def rollback(self):
                self._end()
                return super().rollback()

        def command_name(args: tuple) -> str:
            first = args[0] if args else b"?"
            first = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
            return first.split()[0].upper() if first.split() else "?"

        connection_class = redis.connection.AbstractConnection
        send_packed, send_command = connection_class.send_packed_command, connection_class.send_command
        pack_commands = connection_class.pack_commands

        def counted_send(connection, command, check_health=True):
            if counting.on:
                counting.tally.redis_trips += 1  # one send per command, or per pipeline
            return send_packed(connection, command, check_health)

        def counted_command(connection, *args, **kwargs):
            if counting.on:
                counting.tally.redis[command_name(args)] += 1
            return send_command(connection, *args, **kwargs)

        def counted_pack_many(connection, commands):
            commands = list(commands)
            if counting.on:
                counting.tally.redis.update(command_name(tuple(command)) for command in commands)
            return pack_commands(connection, commands)

        monitoring.register(MongoCommands())  # before create_app: only clients created later report
        connection_class.send_packed_command = counted_send
        connection_class.send_command = counted_command
        connection_class.pack_commands = counted_pack_many

        self.db = db
        self.app = create_app(load_settings(env))
        self.client = self.app.test_client()
        with self.app.app_context():
            self.engine = db.engine
        event.listen(
            self.engine, "do_connect", lambda _d, _r, _a, params: params.update(connection_factory=CountingConnection)
        )
        event.listen(
            self.engine,
            "before_cursor_execute",
            lambda _c, _cur, statement, *_: counting.tally.sql.update([statement.split()[0]]) if counting.on else None,
        )
        self.engine.dispose()  # the connections opened so far were not counting ones

    def send(
        self, method: str, path: str, expect: int, *, token: str | None = None, body: object = None, **headers: str
    ) -> Any:
        """One request through the test client; BenchError for any status but `expect`."""
        if token:
            headers["Authorization"] = f"Bearer {token}"
        answer = self.client.open(path, method=method, headers=headers, json=body)
        if answer.status_code != expect:
            got = answer.get_data(True)[:300]
            raise BenchError(f"in process: {method} {path} answered {answer.status_code}: {got}")
        return answer.get_json()

    def measure(
        self, name: str, action: Callable[[int], object], times: int, before: Callable[[int], object] | None = None
    ) -> dict[str, object]:
        """Run `action(n)` `times` times, each after `before(n)` (not counted), counting each."""
        tallies = []
        for n in range(times):
            if before is not None:
                before(n)
            self.tally, self.on = Tally(), True
            try:
                action(n)
            finally:
                self.on = False
            tallies.append(self.tally)
        return summarise(tallies, BUDGETS.get(name))

    def close(self) -> None:
        with self.app.app_context():
            self.db.session.remove()
        self.engine.dispose()
        import mongoengine

        mongoengine.disconnect_all()


def json_fields(counts: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """What a benchmark's JSON report records about round trips."""
    return {"round_trips": counts, "round_trip_budgets": BUDGETS, "over_budget": over_budget(counts)}


def over_budget(counts: Mapping[str, Mapping[str, object]]) -> list[str]:
    return [f"{name}: {problem}" for name, count in counts.items() for problem in count["over_budget"]]


def table(counts: Mapping[str, Mapping[str, object]], samples: int) -> str:
    lines = [
        f"Round trips per request (in process, Flask test client, mean of {samples} requests of each kind):",
        f"{'request':<14} {'SQL':>4} {'PG trips':>8} {'Mongo':>6} {'Redis trips':>11} {'Redis cmds':>10}  "
        f"{'budget Mongo/PG/Redis':<22} {'verdict':<7}  detail",
    ]
    for name, count in counts.items():
        budget = count["budget"]
        limits = "/".join(str(budget[store]) for store in STORES) if budget else "-"
        verdict = "-" if budget is None else ("OVER" if count["over_budget"] else "ok")
        by_kind = (_names(count[key]) for key in ("sql_by_kind", "mongodb_by_command", "redis_by_command"))
        detail = "SQL: {}; MongoDB: {}; Redis: {}".format(*by_kind)
        sql, pg, mongo, trips, commands = (
            _number(count[key]) for key in ("sql_statements", "postgres", "mongodb", "redis_round_trips", "redis")
        )
        lines.append(
            f"{name:<14} {sql:>4} {pg:>8} {mongo:>6} {trips:>11} {commands:>10}  {limits:<22} {verdict:<7}  {detail}"
        )
    lines.append(
        "PG trips = SQL statements + psycopg2's BEGIN + COMMIT/ROLLBACK + the pool's pre-ping; Redis trips: a"
        " pipeline or script counts once;\nRedis cmds: every command (a pipeline's each, an EVALSHA one; MULTI/EXEC"
        " not counted). Budgets: bench/round_trips.py."
    )
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{round(value, 2):g}"


def _names(counts: Mapping[str, float]) -> str:
    return ", ".join(f"{_number(n)} {what}" for what, n in counts.items()) or "-"


def report(counts: Mapping[str, Mapping[str, object]], samples: int) -> int:
    """Print the table and what is over budget; the exit status (1 when anything is)."""
    print(table(counts, samples))
    over = over_budget(counts)
    if over:
        print("\nOVER BUDGET (exit status 1):\n  " + "\n  ".join(over))
        return 1
    print("\nEvery count is within its budget.")
    return 0
