"""Debian's Prometheus and Alertmanager with the repository's monitoring files (deploy/), on
loopback, and what those files ask of the app's metrics.

The repository's files are what the compose `monitoring` profile mounts; a test keeps their
rules, alerting and routing and replaces what only compose's network has: the scrape targets
(the app on a loopback port), Alertmanager's address and the receiver (a webhook of its own)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import yaml
from prometheus_client.metrics import MetricWrapperBase

from app import metrics
from tests.debian_packages import installed
from tests.e2e.gunicorn_server import terminate
from tests.mongo_server import free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERT_RULES = DEPLOY / "prometheus" / "alerts.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
BUILT_IN_METRICS = {"up"}  # what Prometheus records of every scrape
# The samples each metric type exposes, by the suffix added to its name.
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
# PromQL words that look like metric names: aggregation modifiers, vector matching, set operators.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def promtool() -> str:
    return installed("promtool", "prometheus")


def amtool() -> str:
    return installed("amtool", "prometheus-alertmanager")


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def dashboard_expressions(dashboard: dict) -> list[str]:
    """Every panel target's PromQL, and the metric queries of its template variables
    (`label_values(METRIC, label)`, Grafana's, not PromQL)."""
    panels = [*dashboard["panels"], *(inner for panel in dashboard["panels"] for inner in panel.get("panels", []))]
    expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        expressions.append(re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", query))
    return expressions


def expressions() -> list[str]:
    """The PromQL of every alert rule and dashboard panel."""
    return [rule["expr"] for rule in alert_rules()] + [
        expression for dashboard in dashboards().values() for expression in dashboard_expressions(dashboard)
    ]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers once strings, label
    matchers, ranges and label lists are dropped, except functions (followed by `(`) and keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", text):
        if not text[match.end() :].lstrip().startswith("(") and match.group() not in KEYWORDS:
            names.add(match.group())
    return names


def used_metric_names() -> set[str]:
    return {name for expression in expressions() for name in metric_names(expression)}


def app_metric_names() -> set[str]:
    """The sample names of every metric app/metrics.py defines (prometheus-client strips a
    counter's `_total` from its name and adds it back to its sample)."""
    defined = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    return {metric._name + suffix for metric in defined for suffix in SAMPLE_SUFFIXES[metric._type]}


def _until_ready(process: subprocess.Popen, url: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log.read_text()}")
        try:
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[0]} was not ready within {timeout}s: {log.read_text()}")
        time.sleep(0.2)


@contextmanager
def _serving(command: list[str], directory: Path, port: int) -> Iterator[str]:
    """Runs the command (its output in directory/server.log) until the block ends; yields its
    URL once its /-/ready answers."""
    log = directory / "server.log"
    with log.open("a") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _until_ready(process, url, log)
        yield url
    finally:
        terminate(process)


def prometheus_config(
    metrics_target: str, alertmanager_target: str, *, interval: str = "1s", relay_target: str | None = None
) -> dict:
    """The repository's prometheus.yml with its rules (by absolute path), scraping one loopback
    target as the monolith's job (and `relay_target` as the relay's) and alerting one loopback
    Alertmanager, every `interval`."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / path) for path in config["rule_files"]]
    [alertmanagers] = config["alerting"]["alertmanagers"]
    alertmanagers["static_configs"] = [{"targets": [alertmanager_target]}]
    config["scrape_configs"] = [{"job_name": "api", "static_configs": [{"targets": [metrics_target]}]}]
    if relay_target:
        config["scrape_configs"].append({"job_name": "relay", "static_configs": [{"targets": [relay_target]}]})
    return config


def alertmanager_config(webhook_url: str, *, wait: str = "1s") -> dict:
    """The repository's alertmanager.yml, its receiver given a webhook and its waits shortened."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"].update(group_wait=wait, group_interval=wait)
    [receiver] = [receiver for receiver in config["receivers"] if receiver["name"] == config["route"]["receiver"]]
    receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return config


@contextmanager
def prometheus(directory: Path, config: dict) -> Iterator[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        installed("prometheus", "prometheus"),
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _serving(command, directory, port) as url:
        yield url


@contextmanager
def alertmanager(directory: Path, config: dict) -> Iterator[str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        installed("prometheus-alertmanager", "prometheus-alertmanager"),
        f"--config.file={directory / 'alertmanager.yml'}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port: one instance
    ]
    with _serving(command, directory, port) as url:
        yield url


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@contextmanager
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """An HTTP server on loopback that keeps every JSON body POSTed to it: yields its URL and
    the list the notifications arrive in."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
