"""Metrics as an operator's Prometheus scrapes them: gunicorn with the repository's
gunicorn.conf.py, two workers, the master serving their sum on METRICS_PORT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.gunicorn_server import REPO, app_environment, terminate
from tests.mongo_server import free_port

REQUESTS = 40
DETAIL = "/v1/products/<string:product_id>"


@contextmanager
def served(environment: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
    with log.open("a") as log_file:
        server = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield server
    finally:
        terminate(server, timeout=20)


def wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 30) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, log.read_text()
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


def scrape(metrics_url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(metrics_url, timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def workers_of(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def leave_stale_metrics(directory: Path) -> None:
    """What a killed earlier run leaves behind: a worker's file counting a request."""
    script = "from app import metrics; metrics.REQUESTS.labels('/stale', 'GET', '200').inc(7)"
    subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
        timeout=60,
    )
    assert list(directory.glob("counter_*.db"))


def test_the_master_serves_the_sum_of_its_workers_on_a_port_of_its_own(mongo_uri, database_url, app, tmp_path):
    api_port, metrics_port = free_port(), free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    leave_stale_metrics(metrics_dir)
    environment = app_environment(
        mongo_uri,
        database_url,
        API_PORT=str(api_port),
        METRICS_PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        GUNICORN_WORKERS="2",
    )
    log = tmp_path / "gunicorn.log"
    api, metrics_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}/metrics"

    with served(environment, log) as server:
        wait_for(f"{api}/health/live", server, log)
        assert wait_for(metrics_url, server, log).status_code == 200
        at_start = scrape(metrics_url)
        assert sample(at_start, "storefront_circuit_breaker_state", dependency="mongodb") == 0
        assert sample(at_start, "storefront_circuit_breaker_state", dependency="postgresql") == 0
        assert sample(at_start, "storefront_http_requests_total", route="/stale", method="GET", status="200") is None

        session = requests.Session()
        session.headers["Connection"] = "close"  # a new connection each time: both workers answer some
        for index in range(REQUESTS):
            assert session.get(f"{api}/v1/products/nope-{index}", timeout=5).status_code == 404
        assert session.get(f"{api}/metrics", timeout=5).status_code == 404  # not on the public listener

        counted = sample(
            scrape(metrics_url), "storefront_http_requests_total", route=DETAIL, method="GET", status="404"
        )
        assert counted == REQUESTS

        first, second = workers_of(server.pid)
        os.kill(first, signal.SIGKILL)  # the master starts another; the dead one's counts stay
        deadline = time.monotonic() + 20
        while first in workers_of(server.pid) or len(workers_of(server.pid)) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        after = scrape(metrics_url)
        assert sample(after, "storefront_http_requests_total", route=DETAIL, method="GET", status="404") == REQUESTS
        assert second in workers_of(server.pid)


def test_metrics_listen_on_loopback_outside_production(mongo_uri, database_url, app, tmp_path):
    api_port, metrics_port = free_port(), free_port()
    environment = app_environment(
        mongo_uri, database_url, API_PORT=str(api_port), METRICS_PORT=str(metrics_port), GUNICORN_WORKERS="1"
    )
    log = tmp_path / "gunicorn.log"
    with served(environment, log) as server:
        wait_for(f"http://127.0.0.1:{metrics_port}/metrics", server, log)
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{metrics_port}"], capture_output=True, text=True)
        assert listening.stdout.split()[3] == f"127.0.0.1:{metrics_port}"


def test_a_metrics_port_taken_stops_the_start_up_with_one_line(mongo_uri, database_url, app, tmp_path):
    log = tmp_path / "gunicorn.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment = app_environment(
            mongo_uri, database_url, API_PORT=str(free_port()), METRICS_PORT=str(port), GUNICORN_WORKERS="1"
        )
        with served(environment, log) as server:
            server.wait(timeout=30)

    assert server.returncode != 0
    assert f"Configuration error: METRICS_PORT {port} cannot be listened on" in log.read_text()
