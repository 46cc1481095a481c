"""What the benchmarks share: the processes they start, wrk, and the report.

bench/catalog.py, bench/cart.py and bench/split.py import it (they run as scripts from the repository root, so
bench/ is on sys.path). Every server listens on 127.0.0.1 only; every process is started in its
own session and stopped, bounded in time, whatever happens. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from pymongo import MongoClient
from pymongo.errors import PyMongoError

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HOST = "127.0.0.1"  # every server and every request stays on loopback
PRODUCTS = 1000
WRK_THREADS = 2
WRK_CONNECTIONS = 16
WARMUP_SECONDS = 2
STOP_TIMEOUT = 8.0  # seconds a process gets between SIGTERM and SIGKILL
BUSY_WARNING = 0.25  # warn when the machine is this busy before the benchmark starts


# The one gunicorn configuration used for BOTH apps, chosen by measuring on the 2-core
# machine (see bench/README.md): 4 sync workers let the catalog overlap its MongoDB round
# trips and cost the hello app nothing. Everything is on the command line: gunicorn gets an
# empty config file so that the repository's gunicorn.conf.py (access log on stdout, workers
# sized from the CPU count...) does not leak in, and GUNICORN_CMD_ARGS is removed.
DEFAULT_WORKERS = 4
DEFAULT_WORKER_CLASS = "sync"
DEFAULT_THREADS = 1

# Removed from the environment the apps get: gunicorn options, and stores the numbers must not
# depend on (with REDIS_URL the rate limiter and the token revocation list would move to Redis).
DROPPED_ENV = ("GUNICORN_CMD_ARGS", "REDIS_URL", "SERVICE_API_KEY")


@dataclass
class Result:
    endpoint: str
    url: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: int
    ratio_to_hello: float | None = None
    ratio_target: float | None = None
    ratio_pass: bool | None = None
    p99_target_ms: float | None = None
    p99_pass: bool | None = None
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)  # by process (cpu_seconds)


class BenchError(Exception):
    """The benchmark could not run (a server did not start, wrk failed...)."""


# --- processes -------------------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts, each in its own session so that its children
    (gunicorn's workers) can be ended with it; stopped in reverse order, bounded in time."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
        with log.open("ab") as out:
            process = subprocess.Popen(
                args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.started.append((name, process))
        return process

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in reversed(self.started):
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} (pid {process.pid}) ignored SIGTERM; killing it", file=sys.stderr)
            # Also whatever it left behind in its session (a worker that outlived its master).
            _signal_group(process, signal.SIGKILL)
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                print(f"{name} (pid {process.pid}) did not die", file=sys.stderr)
        self.started.clear()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the process group that `start_new_session` made for this process (its pgid is its pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The fraction of the machine's CPU time that was busy over `seconds` (None off Linux)."""

    def sample() -> tuple[int, int]:
        values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    try:
        idle_before, total_before = sample()
        time.sleep(seconds)
        idle_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_after - total_before
    return 1 - (idle_after - idle_before) / elapsed if elapsed else None


# Servers the benchmark did not start, found by their command name.
SERVER_COMMANDS = {"postgres": "postgres", "redis-server": "redis"}


def cpu_seconds(processes: Processes) -> dict[str, float]:
    """CPU time (user + system) used so far, by process: each process the benchmark started
    together with its children (its session: gunicorn's workers with their master), and the
    PostgreSQL servers' processes, Redis and wrk. Empty off Linux. A process that has exited
    no longer counts, so take the difference over a span in which none does."""
    sessions = {process.pid: name for name, process in processes.started}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used: dict[str, float] = defaultdict(float)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        command, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        name = sessions.get(int(fields[3])) or SERVER_COMMANDS.get(command)  # fields[3]: the session id
        if name:
            used[name] += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return dict(used)


def _children_cpu_seconds() -> float:
    """CPU time of this process's children that have ended (each wrk run, once it returned)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    return {name: round(1000 * used / requests, 3) for name, used in spent.items() if used > 0 and requests}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_mongo(processes: Processes, workdir: Path) -> str:
    executable = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")
    if not executable:
        raise BenchError("nx-27017 not found next to this Python nor on PATH")
    port = free_port()
    log = workdir / "nx-27017.log"
    args = [executable, "--db", "memory", "--host", HOST, "--port", str(port)]
    args += ["--log-file", str(log), "--pid-file", str(workdir / "nx-27017.pid")]
    process = processes.start("nx-27017", args, env=dict(os.environ), cwd=workdir, log=workdir / "nx-27017.out")
    uri = f"mongodb://{HOST}:{port}/bench"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"nx-27017 exited with {process.returncode}:\n{tail(log)}")
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=300) as client:
                client.admin.command("ping")
            return uri
        except PyMongoError:
            time.sleep(0.1)
    raise BenchError(f"nx-27017 did not answer on port {port} within 15 s:\n{tail(log)}")


def run_flask(
    args: list[str], env: dict[str, str], workdir: Path, *, what: str, log_name: str, stdin: str | None = None
) -> str:
    """`flask --app wsgi ARGS` from the repository root, logged to `log_name`.log; returns its last line."""
    log = workdir / f"{log_name}.log"
    command = [sys.executable, "-m", "flask", "--app", "wsgi", *args]
    with log.open("wb") as out:
        try:
            completed = subprocess.run(
                command, cwd=ROOT, env=env, input=None if stdin is None else stdin.encode(),
                stdin=subprocess.DEVNULL if stdin is None else None, stdout=out, stderr=subprocess.STDOUT,
                timeout=180, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as error:
            raise BenchError(f"{what} did not finish within 180 s:\n{tail(log)}") from error
    if completed.returncode != 0:
        raise BenchError(f"{what} failed ({completed.returncode}):\n{tail(log)}")
    return tail(log, 1)


def seed(env: dict[str, str], workdir: Path, count: int = PRODUCTS) -> None:
    print(f"  {run_flask(['seed', '--count', str(count)], env, workdir, what='seeding', log_name='seed')}")


def gunicorn_args(options: argparse.Namespace) -> list[str]:
    """The settings both apps run with (bind, app and log file are added per app)."""
    args = ["--workers", str(options.workers), "--worker-class", options.worker_class]
    if options.worker_class == "gthread":
        args += ["--threads", str(options.threads)]
    return [*args, "--log-level", "warning", "--graceful-timeout", "3", "--no-control-socket"]


def start_gunicorn(
    processes: Processes, name: str, app: str, chdir: Path, settings: list[str], env: dict[str, str], workdir: Path
) -> str:
    port = free_port()
    empty_config = workdir / "gunicorn.empty.conf.py"
    empty_config.write_text("# bench/harness.py passes every setting on the command line\n")
    log = workdir / f"{name}.log"
    args = [sys.executable, "-m", "gunicorn", "--config", str(empty_config), "--chdir", str(chdir)]
    args += [*settings, "--bind", f"{HOST}:{port}", "--error-logfile", str(log), app]
    process = processes.start(name, args, env=env, cwd=chdir, log=workdir / f"{name}.out")
    base = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode}:\n{tail(log)}\n{tail(workdir / f'{name}.out')}")
        try:
            with urllib.request.urlopen(base + "/", timeout=1):
                return base
        except urllib.error.HTTPError:
            return base  # it answers (the Storefront app has no "/" route)
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{name} did not answer on port {port} within 30 s:\n{tail(log)}")


# --- wrk -------------------------------------------------------------------------------------

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * UNIT_MS[match.group(2)]


def parse_wrk(output: str) -> dict[str, float | int]:
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    total = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    if not (rate and total and {"50", "99"} <= percentiles.keys()):
        raise BenchError(f"could not parse wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests_per_sec": float(rate.group(1)),
        "p50_ms": to_ms(percentiles["50"]),
        "p99_ms": to_ms(percentiles["99"]),
        "requests": int(total.group(1)),
        "non_2xx_3xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def wrk_command(url: str, seconds: int, script: Path | None = None, headers: Iterable[str] = ()) -> list[str]:
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency"]
    command += [argument for header in headers for argument in ("-H", header)]
    return [*command, *(["-s", str(script)] if script else []), url]


def measure(
    processes: Processes, name: str, url: str, seconds: int, script: Path | None = None, headers: Iterable[str] = ()
) -> Result:
    """One endpoint under wrk, after a warm-up: its numbers and the CPU each process spent per request."""
    run_wrk(url, WARMUP_SECONDS, script, headers)
    before = {**cpu_seconds(processes), "wrk": _children_cpu_seconds()}
    numbers = parse_wrk(run_wrk(url, seconds, script, headers))
    after = {**cpu_seconds(processes), "wrk": _children_cpu_seconds()}  # wrk has exited: its usage is ours
    used = cpu_ms_per_request(before, after, int(numbers["requests"]))
    return Result(endpoint=name, url=url, **numbers, cpu_ms_per_request=used)


def run_wrk(url: str, seconds: int, script: Path | None = None, headers: Iterable[str] = ()) -> str:
    command = wrk_command(url, seconds, script, headers)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"wrk did not finish: {' '.join(command)}") from error
    if completed.returncode != 0:
        raise BenchError(f"wrk failed ({completed.returncode}): {completed.stderr or completed.stdout}")
    return completed.stdout


class Targets(Protocol):
    """An endpoint's name and targets (either may be None: no target)."""

    @property
    def name(self) -> str: ...

    @property
    def min_ratio(self) -> float | None: ...  # of hello's req/s

    @property
    def max_p99_ms(self) -> float | None: ...


def judge(results: list[Result], endpoints: Iterable[Targets]) -> None:
    """Fill in each result's ratio to the "hello" result and its PASS/MISS against its endpoint's targets."""
    hello = next(result for result in results if result.endpoint == "hello")
    targets = {endpoint.name: endpoint for endpoint in endpoints}
    for result in results:
        result.ratio_to_hello = result.requests_per_sec / hello.requests_per_sec if hello.requests_per_sec else None
        endpoint = targets[result.endpoint]
        if endpoint.min_ratio is not None and result.ratio_to_hello is not None:
            result.ratio_target, result.ratio_pass = endpoint.min_ratio, result.ratio_to_hello >= endpoint.min_ratio
        if endpoint.max_p99_ms is not None:
            result.p99_target_ms, result.p99_pass = endpoint.max_p99_ms, result.p99_ms <= endpoint.max_p99_ms


# --- report ----------------------------------------------------------------------------------


def verdict(passed: bool | None, target: str) -> str:
    return "" if passed is None else f"{'PASS' if passed else 'MISS'} ({target})"


def get_label(result: Result) -> str:
    path = result.url.split("/", 3)[3]
    return f"{result.endpoint} GET /{path}"


def table(results: list[Result], label: Callable[[Result], str] = get_label) -> str:
    names = [label(result) for result in results]
    width = max([48, *map(len, names)])
    header = f"{'endpoint':<{width}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs hello':>9}  targets"
    lines = [header, "-" * (len(header) + 50)]
    for name, result in zip(names, results, strict=True):
        ratio = f"{result.ratio_to_hello:.1%}" if result.ratio_to_hello is not None else "-"
        marks = []
        if result.ratio_target is not None:
            marks.append(verdict(result.ratio_pass, f">= {result.ratio_target:.0%} of hello"))
        if result.p99_target_ms is not None:
            marks.append(verdict(result.p99_pass, f"p99 <= {result.p99_target_ms:g} ms"))
        if result.non_2xx_3xx or result.socket_errors:
            marks.append(f"!! {result.non_2xx_3xx} non-2xx, {result.socket_errors} socket errors")
        row = f"{name:<{width}} {result.requests_per_sec:>9.1f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} {ratio:>9}"
        lines.append("  ".join([row, *marks]))
    return "\n".join(lines)


def cpu_table(results: list[Result], label: Callable[[Result], str] = get_label) -> str:
    """CPU milliseconds per request, by process, for every endpoint (from /proc, same run)."""
    names = sorted({name for result in results for name in result.cpu_ms_per_request})
    if not names:
        return "CPU per request: not measured (no /proc)"
    width = max([48, *(len(label(result)) for result in results)])
    lines = ["CPU ms per request, by process (user + system, /proc; the 2 cores are shared by all of them):"]
    lines.append(f"{'endpoint':<{width}} " + " ".join(f"{name:>9}" for name in names) + f" {'all':>9}")
    for result in results:
        used = result.cpu_ms_per_request
        cells = " ".join(f"{used[name]:>9.3f}" if name in used else f"{'-':>9}" for name in names)
        lines.append(f"{label(result):<{width}} {cells} {sum(used.values()):>9.3f}")
    return "\n".join(lines)


def code_version() -> dict[str, object]:
    """The commit measured, and whether the app's files had uncommitted changes."""

    def git(*args: str) -> str | None:
        try:
            completed = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return completed.stdout.strip() if completed.returncode == 0 else None

    status = git("status", "--porcelain", "--", "app", "wsgi.py", "seed.py")
    return {"commit": git("rev-parse", "HEAD"), "app_modified": None if status is None else bool(status)}


def write_json(path: Path, benchmark: str, results: list[Result], settings: dict[str, object], **extra: object) -> None:
    """Write the report atomically: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code_version(),
        "machine": {
            "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": settings,
        "results": [asdict(result) for result in results],
        **extra,
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(temporary, path)


# --- stores of the run's own -----------------------------------------------------------------

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"  # the local server, trust auth
REDIS = "redis://127.0.0.1:6379/13"  # a database number of the benchmarks' own (cart.py, split.py)
CATALOG_REDIS = "redis://127.0.0.1:6379/12"  # catalog.py's, so that it may run alongside cart.py
DATABASE = f"storefront_bench_{os.getpid()}"


@contextmanager
def database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped on the way out whatever happens."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    server = create_engine(
        POSTGRES, isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5, "options": "-c statement_timeout=60000"},
    )  # fmt: skip
    drop = text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    created = False
    try:
        try:
            with server.connect() as connection:
                version = connection.execute(text("SHOW server_version")).scalar()
                connection.execute(drop)
                created = True  # from here on, it is dropped on the way out
                connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
        except SQLAlchemyError as error:
            raise BenchError(f"cannot create database {DATABASE} on {POSTGRES}: {error}") from error
        print(f"  database {DATABASE} on PostgreSQL {version}")
        yield f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
    finally:
        if created:
            try:
                with server.connect() as connection:
                    connection.execute(drop)
            except SQLAlchemyError as error:
                print(f"could not drop database {DATABASE}: {error}; drop it by hand", file=sys.stderr)
        server.dispose()


@contextmanager
def redis_database(url: str = REDIS) -> Iterator[str]:
    """A Redis database of the benchmark's own (REDIS unless told), emptied before and after the run."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as error:
        raise BenchError(f"cannot use Redis at {url}: {error}") from error
    try:
        yield url
    finally:
        try:
            client.flushdb()
        except redis.RedisError as error:
            print(f"could not flush {url}: {error}", file=sys.stderr)
        client.close()


# --- metrics and traces ----------------------------------------------------------------------


class OtlpSink:
    """Accepts OTLP/HTTP exports and only counts them: a collector that costs the machine as
    little as possible, so that what tracing costs is the app's own work."""

    def __init__(self) -> None:
        self.exports = self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.bytes += len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                sink.exports += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        print(f"Tracing: {self.exports} OTLP exports received, {self.bytes / 1e6:.1f} MB")


def observability(options: argparse.Namespace, workdir: Path, stack: ExitStack) -> dict[str, str]:
    """The environment the app runs with: metrics in prometheus multiprocess mode, as under the
    repository's gunicorn.conf.py (each worker writes its own file); with --tracing, every
    request traced and exported to an OtlpSink."""
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    if options.tracing:
        sink = OtlpSink()
        stack.callback(sink.close)
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_TRACES_SAMPLER": "always_on"}
    return env


# --- command line ----------------------------------------------------------------------------


def parse_args(
    description: str,
    argv: list[str] | None = None,
    *,
    round_trips: bool = False,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if more is not None:
        more(parser)
    if round_trips:
        parser.add_argument(
            "--round-trips-only", action="store_true",
            help="count round trips per request and judge the budgets only: no wrk, no hello app (fast)",
        )  # fmt: skip
    parser.add_argument("--duration", default="10s", help="wrk duration per endpoint: 10s, 1m or seconds [10s]")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help=f"gunicorn workers [{DEFAULT_WORKERS}]")
    parser.add_argument(
        "--worker-class", default=DEFAULT_WORKER_CLASS, choices=("sync", "gthread"),
        help=f"gunicorn worker class [{DEFAULT_WORKER_CLASS}]",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"threads per gthread worker [{DEFAULT_THREADS}]"
    )
    parser.add_argument(
        "--tracing", action="store_true",
        help="trace every request (100 %% sampling) and export the spans over OTLP/HTTP to a sink on loopback",
    )  # fmt: skip
    options = parser.parse_args(argv)
    options.round_trips_only = getattr(options, "round_trips_only", False)
    match = re.fullmatch(r"(\d+)([sm]?)", options.duration.strip())
    if not match or int(match.group(1)) < 1:
        parser.error("--duration must look like 10s, 1m or 10")
    options.seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1)
    if options.workers < 1 or options.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    return options


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def prepare() -> float | None:
    """Common start: SIGTERM and SIGHUP unwind like Ctrl-C does; returns how busy the CPU was
    (after warning when it was busy enough to spoil the numbers)."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    busy = cpu_busy()
    if busy is not None and busy > BUSY_WARNING:
        print(f"warning: the CPU was {busy:.0%} busy before the benchmark started; expect lower, noisier numbers")
    return busy


def ignore_signals() -> None:
    """While cleaning up: a second Ctrl-C or SIGTERM must not leave servers or a database behind."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


def bench_main(
    doc: str,
    name: str,
    run: Callable[..., int | None],
    argv: list[str] | None = None,
    stores: tuple[Callable[[], AbstractContextManager[str]], ...] = (),
    *,
    round_trips: bool = False,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
    needs_wrk: bool = True,
) -> int:
    """A benchmark's `main`: its options (`--round-trips-only` too when `round_trips`), a work
    folder, the stores of the run's own (what each yields is passed to `run` after the options),
    and a cleanup that stops every server before the stores go, whatever happens. Exit status:
    what `run` returns (1 when a round trip count is over budget), else 0; 1 when the benchmark
    could not run."""
    options = parse_args(doc.split("\n\n")[0], argv, round_trips=round_trips, more=more)
    if needs_wrk and not options.round_trips_only and not have_wrk():
        return 2
    busy = prepare()
    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    keep_logs = True  # for a failure, to investigate
    status = 0
    try:
        with ExitStack() as stack:
            resources = [stack.enter_context(store()) for store in stores]
            options.observability_env = observability(options, workdir, stack)
            stack.callback(processes.stop_all)  # callbacks run last-in first-out: before the stores go
            stack.callback(ignore_signals)
            status = run(options, busy, processes, workdir, *resources) or 0
        keep_logs = False
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        keep_logs = False
        return 130
    finally:
        ignore_signals()
        processes.stop_all()
        if keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


def have_wrk() -> bool:
    if shutil.which("wrk"):
        return True
    print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
    return False
