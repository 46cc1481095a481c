"""Runs wsgi:app under gunicorn on a free loopback port for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
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
    """Yields the base URL; with TEST_CONFIG, the access log line of each request starts with the
    worker's pid. With REPOSITORY_CONFIG, the repository's own hooks and JSON access lines.

    `client_tls`: the server requires mutual TLS (SERVICE_TLS_* in `environment`); the start-up
    checks present this client certificate, and the URL is https."""
    port = port or free_port()
    command = [
        *(sys.executable, "-m", "gunicorn", "--config", config, "--no-control-socket"),
        *("--bind", f"127.0.0.1:{port}"),
        *("--workers", str(workers), "--access-logfile", "-", "--access-logformat", "%(p)s %(s)s %(r)s"),
        *(("--threads", str(threads)) if threads > 1 else ()),
        "wsgi:app",
    ]
    with log.open("a") as log_file:
        server = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
        url = f"{'https' if client_tls else 'http'}://127.0.0.1:{port}"
        session = requests.Session()
        session.headers["Connection"] = "close"  # a new connection per check, so that every worker gets some
        if client_tls:
            session.cert, session.verify = (client_tls.cert, client_tls.key), client_tls.ca
            session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace session.verify
        try:
            _wait_until_serving(url, server, log, session)
            if workers > 1 and config == TEST_CONFIG:  # one worker that answered is every worker
                _wait_until_every_worker_answers(url, log, workers, session)
            yield url
        finally:
            terminate(server, timeout=20)


def terminate(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL when the process has not ended within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
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
