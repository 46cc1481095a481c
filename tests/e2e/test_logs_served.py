"""Log lines as gunicorn writes them with the repository's gunicorn.conf.py: JSON, the access
line and the app's lines of one request sharing its request id."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import GATEWAY_KEY
from tests.e2e.gunicorn_server import REPO, app_environment, terminate
from tests.mongo_server import free_port


def json_lines(log: Path) -> list[dict]:
    lines = []
    for line in log.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_access_and_app_lines_of_a_request_share_its_id(mongo_uri, database_url, app, tmp_path):
    port = free_port()
    environment = app_environment(
        mongo_uri,
        database_url,
        APP_MODULES="products",
        PRODUCTS_SERVICE_PORT=str(port),
        SERVICE_CALLER_KEYS=f"gateway={GATEWAY_KEY}",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT="json",
        GUNICORN_WORKERS="1",
    )
    log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
    with log.open("a") as log_file:
        server = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/internal/products/get_product"
        headers = {"X-Service-Key": GATEWAY_KEY, "X-Service-Caller": "gateway", "X-Request-ID": "served-7"}
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                answer = requests.post(url, json={"product_id": "nope"}, headers=headers, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert answer.status_code == 404
        assert answer.headers["X-Request-ID"] == "served-7"
        deadline = time.monotonic() + 10
        while not [line for line in json_lines(log) if line.get("event") == "access"]:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        terminate(server, timeout=20)

    lines = json_lines(log)
    [access] = [line for line in lines if line.get("event") == "access"]
    [called] = [line for line in lines if "called by gateway" in line.get("event", "")]
    assert access["request_id"] == called["request_id"] == "served-7"
    assert access["route"] == called["route"]
    assert access["caller"] == called["caller"] == "gateway"
    assert access["logger"] == "gunicorn.access"
    assert access["status"] == 404
    assert any(line.get("logger") == "gunicorn.error" for line in lines)  # gunicorn's own lines too
    assert GATEWAY_KEY not in log.read_text()
