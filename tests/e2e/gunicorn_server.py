"""Runs wsgi:app under gunicorn on a free loopback port for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.conftest import CHEAP_HASHING, TEST_SECRET
from tests.mongo_server import free_port

REPO = Path(__file__).resolve().parents[2]
TEST_CONFIG = "python:tests.e2e.no_config"
REPOSITORY_CONFIG = "gunicorn.conf.py"  # its JSON access lines name no pid: no wait for each worker


@dataclass(frozen=True)
class ClientTls:
    """PEM files: a client certificate with its key, and the CA that signs the server's."""

    cert: str
    key: str
    ca: str


def app_environment(mongo_uri: str, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of an app served in development mode against the test session's stores."""
    return {
        **os.environ,
        "APP_ENV": "development",
        "MONGODB_URI": mongo_uri,
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_SECRET,
        **CHEAP_HASHING,
        "LOG_LEVEL": "WARNING",
        **settings,
    }


@dataclass
class Gunicorn:
    """A gunicorn serving wsgi:app on a loopback port, started with `start_all` and ended with
    `stop_all` (or both by `gunicorn()`); stopped, it can be started again on the same port.

    With TEST_CONFIG, the access log line of each request starts with the worker's pid. With
    REPOSITORY_CONFIG, the repository's own hooks and JSON access lines. `client_tls`: the server
    requires mutual TLS (SERVICE_TLS_* in `environment`); the start-up checks present this client
    certificate, and the URL is https."""

    environment: dict[str, str]
    log: Path
    workers: int = 1
    port: int = field(default_factory=free_port)
    threads: int = 1
    client_tls: ClientTls | None = None
    config: str = TEST_CONFIG
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.client_tls else 'http'}://127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Starts the process; it serves once `wait_until_serving` returns."""
        command = [
            *(sys.executable, "-m", "gunicorn", "--config", self.config, "--no-control-socket"),
            *("--bind", f"127.0.0.1:{self.port}"),
            *("--workers", str(self.workers), "--access-logfile", "-", "--access-logformat", "%(p)s %(s)s %(r)s"),
            *(("--threads", str(self.threads)) if self.threads > 1 else ()),
            "wsgi:app",
        ]
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=self.environment, stdout=log_file, stderr=subprocess.STDOUT
            )

    def wait_until_serving(self) -> None:
        session = requests.Session()
        session.headers["Connection"] = "close"  # a new connection per check, so that every worker gets some
        if self.client_tls:
            session.cert, session.verify = (self.client_tls.cert, self.client_tls.key), self.client_tls.ca
            session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace session.verify
        _wait_until_serving(self.url, self.process, self.log, session)
        if self.workers > 1 and self.config == TEST_CONFIG:  # one worker that answered is every worker
            _wait_until_every_worker_answers(self.url, self.log, self.workers, session)


def start_all(*servers: Gunicorn) -> None:
    """Starts every server at once, then waits for each in the order given, so that a server is
    first asked for its health (which asks the services it calls) once those before it serve.
    When one fails to start, all are stopped."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_until_serving()
    except BaseException:
        stop_all(*servers)
        raise


def stop_all(*servers: Gunicorn) -> None:
    """SIGTERM to every server at once, then waits for all: each takes over a second to stop."""
    terminate(*(server.process for server in servers if server.process is not None), timeout=20)


@contextmanager
def serving(*servers: Gunicorn) -> Iterator[None]:
    start_all(*servers)
    try:
        yield
    finally:
        stop_all(*servers)


@contextmanager
def gunicorn(
    environment: dict[str, str],
    log: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    threads: int = 1,
    client_tls: ClientTls | None = None,
    config: str = TEST_CONFIG,
) -> Iterator[str]:
    """One `Gunicorn` serving while the block runs; yields its base URL."""
    server = Gunicorn(environment, log, workers, port or free_port(), threads, client_tls, config)
    with serving(server):
        yield server.url


def terminate(*processes: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM to each process, then waits for all; SIGKILL to any that has not ended within
    `timeout` seconds."""
    for process in processes:
        process.terminate()  # nothing, for one that has ended
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def run_flask(args: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    """`flask --app wsgi ARGS` as an operator runs it, in a process of its own."""
    command = [sys.executable, "-m", "flask", "--app", "wsgi", *args]
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120, check=False)


@contextmanager
def flask_process(args: list[str], environment: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`flask --app wsgi ARGS` running (a long-running command: `events relay`, say) until the
    block ends (SIGTERM), its output appended to `log`."""
    command = [sys.executable, "-m", "flask", "--app", "wsgi", *args]
    with log.open("a") as output:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            terminate(process, timeout=15)


def pids_that_answered(log: Path, path: str) -> set[str]:
    return {line.split()[0] for line in log.read_text().splitlines() if f" GET {path}" in line}


def _wait_until_every_worker_answers(
    url: str, log: Path, workers: int, session: requests.Session, timeout: float = 30.0
) -> None:
    """Concurrent health checks until each worker has booted and served one."""
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(max_workers=workers * 3) as pool:
        while len(pids_that_answered(log, "/v1/health")) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every gunicorn worker answered within {timeout}s: {log.read_text()}")
            list(pool.map(lambda _: session.get(f"{url}/v1/health", timeout=5), range(workers * 3)))


def _wait_until_serving(
    url: str, server: subprocess.Popen, log: Path, session: requests.Session, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()}")
        try:
            session.get(f"{url}/v1/health", timeout=1)
            return
        except requests.RequestException:  # refused, or accepted while the workers still boot
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not serve within {timeout}s: {log.read_text()}")
