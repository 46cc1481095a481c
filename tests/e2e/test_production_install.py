"""The production install serves both compose layouts: what the image runs, minus Docker.

Docker cannot run on the development and CI machines, so this builds the image's Python
install the way the Dockerfile does (tests/e2e/production_install.py: a fresh virtualenv,
`pip install -c requirements.lock -e .` with no extras, only the files the Dockerfile copies,
from a clean copy of the tree; cached by the lock's hash) and runs from it, with nothing of
the development virtualenv or the tests on its path, the commands compose runs:

- the environment of each service in docker-compose.yml, interpolated as compose does from an
  operator's variables (real-looking JWT_SECRET and service keys, APP_ENV=production by
  compose's default), pointed at the local servers: PostgreSQL (a fresh database, via DB_*),
  the session's Mongo wire-protocol server (a database of its own), a Redis of this module's
  own (with a password, as compose's), free ports, service URLs on 127.0.0.1;
  GUNICORN_WORKERS=2 keeps four processes within two cores. Mail: MAIL_BACKEND=file, and
  MAIL_FILE_DIR (which compose does not pass) so the verification link can be read; compose's
  default is `smtp` with the required SMTP_HOST;
- the one-shot `migrate` command, then `flask --app wsgi seed` as `docker compose run` does;
- the image's CMD (`gunicorn --config gunicorn.conf.py wsgi:app`) for the monolith `api`, then
  for products-service, cart-service and gateway in the order compose starts them, each checked
  with the compose health check (`python scripts/healthcheck.py`) before the next starts;
- the buyer's journey (guest, add, cart, register, verify, login merging the guest cart,
  checkout) through the monolith and through the gateway.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest
import requests
import yaml
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from app.config import load_settings
from tests.e2e.production_install import REPO, ProductionInstall, parse_pin, production_install
from tests.integration.test_auth_api import PASSWORD, last_email, token_from
from tests.mongo_server import free_port
from tests.redis_server import RedisServer

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
IMAGE_CMD = json.loads(re.search(r"^CMD (\[.*\])$", (REPO / "Dockerfile").read_text(), re.MULTILINE).group(1))
HEALTHCHECK = SERVICES["api"]["healthcheck"]["test"][1:]  # ["CMD", ...] runs the rest as is
SEED = ["flask", "--app", "wsgi", "seed"]  # docker compose run --rm api flask --app wsgi seed
SPLIT = ["products-service", "cart-service", "gateway"]  # compose's start order (depends_on)
NOT_IN_THE_IMAGE = {"nx-27017", "pytest", "hypothesis", "deptry", "ruff", "import-linter", "aiosmtpd", "pyyaml"}


def interpolate(value: object, variables: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` (the default when unset or blank) and `${VAR:?error}`,
    innermost first (`${REDIS_URL:-redis://:${REDIS_PASSWORD:?...}@redis:6379/0}`)."""

    def substitute(match: re.Match) -> str:
        name, operator, rest = match.groups()
        if variables.get(name):
            return variables[name]
        assert operator == ":-", f"compose would refuse to start: {rest}"
        return rest

    text, previous = str(value), None
    while text != previous:
        text, previous = re.sub(r"\$\{(\w+)(:[-?])?([^${}]*)\}", substitute, text), text
    return text


def on_loopback(url: str) -> str:
    """A compose service name as host (http://products-service:3001) becomes 127.0.0.1."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{parts.port}"))


@dataclass
class Host:
    """What `docker compose` does with the image, on this machine: each service's environment
    (and nothing else), the image's WORKDIR and executables."""

    install: ProductionInstall
    variables: dict[str, str]
    workdir: Path
    mail_dir: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def environment(self, service: str) -> dict[str, str]:
        mounts = [interpolate(volume, self.variables).split(":")[:2] for volume in SERVICES[service].get("volumes", [])]
        container = {}
        for name, value in SERVICES[service]["environment"].items():
            value = interpolate(value, self.variables)
            for host_path, container_path in mounts:  # the volume's files, where they are on this host
                value = value.replace(container_path, host_path)
            container[name] = on_loopback(value) if name.endswith("_SERVICE_URL") else value
        if "METRICS_PORT" in container:  # each container has its own network; here they share the host's
            container["METRICS_PORT"] = str(free_port())
        return {
            "PATH": f"{self.install.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",  # the Dockerfile's ENV
            "PYTHONUNBUFFERED": "1",
            **container,
            "MAIL_FILE_DIR": str(self.mail_dir),
        }

    def _command(self, command: list[str], environment: dict[str, str]) -> list[str]:
        executable = shutil.which(command[0], path=environment["PATH"])
        assert executable, f"{command[0]} is not installed"
        assert Path(executable).parent == self.install.bin, f"{command[0]} resolves to {executable}"
        return [executable, *command[1:]]

    def run(self, service: str, command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        """`docker compose run --rm SERVICE COMMAND`, or a one-shot service's command."""
        environment = self.environment(service)
        return subprocess.run(
            self._command(command, environment),
            cwd=self.install.source,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def url(self, service: str) -> str:
        # `api` and `gateway` publish nothing (the nginx edge does): they listen on API_PORT.
        published = SERVICES[service].get("ports", ["${API_PORT:-3000}:${API_PORT:-3000}"])
        *_, host_port, _container_port = interpolate(published[0], self.variables).split(":")
        return f"{'https' if self.tls(service) else 'http'}://127.0.0.1:{host_port}"

    def tls(self, service: str) -> dict[str, object]:
        """requests' arguments to reach a service whose listener requires mutual TLS: its own
        certificate (the script made it for both ends) and the CA; {} for a plain listener."""
        environment = self.environment(service)
        if "SERVICE_TLS_CERT" not in environment or "gateway" in environment.get("APP_MODULES", "gateway"):
            return {}
        cert = (environment["SERVICE_TLS_CERT"], environment["SERVICE_TLS_KEY"])
        return {"cert": cert, "verify": environment["SERVICE_TLS_CA"]}

    def log(self, service: str) -> Path:
        return self.workdir / f"{service}.log"

    def up(self, service: str, timeout: float = 60) -> str:
        """Starts the image's CMD for the service; returns once its compose health check passes."""
        environment = self.environment(service)
        with self.log(service).open("a") as log:
            process = subprocess.Popen(
                self._command(IMAGE_CMD, environment),
                cwd=self.install.source,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running[service] = process
        url = self.url(service)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{service} exited with {process.returncode}: {self.log(service).read_text()}")
            try:
                if requests.get(f"{url}/v1/health", timeout=2, **self.tls(service)).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} was not healthy within {timeout}s: {self.log(service).read_text()}")
            time.sleep(0.2)
        check = self.run(service, HEALTHCHECK, timeout=30)
        assert check.returncode == 0, f"{service}: {HEALTHCHECK} failed: {check.stderr}"
        return url

    def down(self) -> None:
        for service, process in reversed(list(self.running.items())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            del self.running[service]


@pytest.fixture(scope="module")
def install() -> Iterator[ProductionInstall]:
    started = time.monotonic()
    with production_install() as built:
        print(f"production install {'built' if built.built else 'cached'} in {time.monotonic() - started:.1f}s")
        yield built


@pytest.fixture(scope="module")
def postgres(database_url) -> Iterator[dict[str, str]]:
    """A fresh database on the tests' PostgreSQL server, as DB_* variables. Where this user may
    not create databases (a TEST_DATABASE_URL of its own), the tests' database with an empty
    schema; the migration under test brings it back to head."""
    url = make_url(database_url)
    server = create_engine(url.set(drivername="postgresql+psycopg2", database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"storefront_prod_{os.getpid()}"
    try:
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            connection.execute(text(f"CREATE DATABASE {name}"))
        created = True
    except SQLAlchemyError:  # no right to create databases
        created, name = False, url.database
        reset = create_engine(url.set(drivername="postgresql+psycopg2"))
        with reset.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        reset.dispose()
    variables = {"DB_HOST": url.host or "127.0.0.1", "DB_PORT": str(url.port or 5432), "DB_DATABASE": name}
    if url.username:
        variables["DB_USERNAME"] = url.username
    if url.password:
        variables["DB_PASSWORD"] = url.password
    yield variables
    if created:
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    server.dispose()


@pytest.fixture(scope="module")
def mongo_database(mongo_uri) -> Iterator[str]:
    """MONGODB_URI for a database of this module's own on the tests' server."""
    parts = urlsplit(mongo_uri)
    name = f"storefront_prod_{os.getpid()}"
    yield urlunsplit(parts._replace(path=f"/{name}"))
    client = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=3000)
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="module")
def host(install, postgres, mongo_database, tmp_path_factory) -> Iterator[Host]:
    """The stack migrated and seeded: `migrate` ran, then `flask --app wsgi seed`."""
    workdir = tmp_path_factory.mktemp("production")
    redis_server = RedisServer(workdir, password=secrets.token_hex(16))  # compose's redis requires one
    redis_server.start()
    mail_dir = workdir / "mail"
    mail_dir.mkdir()
    variables = {
        "JWT_SECRET": secrets.token_urlsafe(48),
        "GATEWAY_SERVICE_KEY": secrets.token_urlsafe(32),
        "CART_SERVICE_KEY": secrets.token_urlsafe(32),
        "MONGODB_URI": mongo_database,
        **postgres,
        "REDIS_PASSWORD": redis_server.password,
        "REDIS_URL": redis_server.url,  # the one on loopback, with the password
        "RABBITMQ_PASSWORD": secrets.token_hex(16),  # required by compose; only the relay and consumers connect
        "API_PORT": str(free_port()),
        "PRODUCTS_SERVICE_PORT": str(free_port()),
        "CART_SERVICE_PORT": str(free_port()),
        "ACCOUNTS_SERVICE_PORT": str(free_port()),
        "MAIL_BACKEND": "file",
        "SMTP_HOST": "127.0.0.1",  # required by compose, unused by the file backend
        "GUNICORN_WORKERS": "2",
    }
    certificates = workdir / "certs"  # as the operator makes them for compose's split services
    made = subprocess.run(
        [sys.executable, "scripts/make_service_certs.py", "--out", str(certificates)],  # a tool of the repository
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    variables["SERVICE_CERTS_DIR"] = str(certificates)
    stack = Host(install, variables, workdir, mail_dir)
    try:
        migrated = stack.run("migrate", SERVICES["migrate"]["command"])
        assert migrated.returncode == 0, migrated.stderr
        seeded = stack.run("api", SEED)
        assert seeded.returncode == 0, seeded.stderr
        yield stack
    finally:
        stack.down()
        redis_server.stop()


def test_the_image_install_has_no_extras_and_every_package_pinned(install):
    installed = install.installed()
    lock = dict(parse_pin(line) for line in (REPO / "requirements.lock").read_text().splitlines() if line.strip())

    assert NOT_IN_THE_IMAGE & set(installed) == set()
    assert {name: version for name, version in installed.items() if lock.get(name) != version} == {}
    assert {"requests", "gunicorn", "psycopg2-binary"} <= set(installed)
    assert not (install.source / "tests").exists()


def test_the_migration_and_the_seed_ran_in_production_mode(host):
    settings = load_settings(host.environment("api"))
    assert settings.is_production
    assert settings.database_url.startswith("postgresql+psycopg2://")
    engine = create_engine(settings.database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()
    client = pymongo.MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=3000)
    assert client.get_default_database()["products"].count_documents({}) == 100
    client.close()

    again = host.run("migrate", SERVICES["migrate"]["command"])
    assert again.returncode == 0, again.stderr  # a redeploy runs it again: nothing to do


def test_the_monolith_serves_the_buyer_journey(host):
    try:
        url = host.up("api")
        buyer_journey(url, host.mail_dir, "monolith-buyer@example.test")
        health = requests.get(f"{url}/v1/health", timeout=10).json()
        assert health["status"] == "ok"
        assert health["dependencies"]["redis"]["status"] == "ok"
    finally:
        host.down()
    lines = [json.loads(line) for line in host.log("api").read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if "method" in line and "status" in line]  # the access lines
    assert ("POST", "/v1/cart/checkout", 201) in [(line["method"], line["path"], line["status"]) for line in access]


def test_the_split_layout_serves_the_buyer_journey(host):
    try:
        urls = {service: host.up(service) for service in SPLIT}
        buyer_journey(urls["gateway"], host.mail_dir, "split-buyer@example.test")
        health = requests.get(f"{urls['gateway']}/v1/health", timeout=10).json()
        assert health["status"] == "ok"
        assert health["dependencies"]["productsService"] == {"status": "ok"}  # no internal URLs
        assert health["dependencies"]["cartService"] == {"status": "ok"}
        internal = f"{urls['products-service']}/internal/products/get_product"
        with pytest.raises(requests.exceptions.ConnectionError):  # no client certificate: no handshake
            requests.post(internal, json={}, verify=host.tls("products-service")["verify"], timeout=10)
        no_key = requests.post(internal, json={}, timeout=10, **host.tls("products-service"))
        assert (no_key.status_code, no_key.json()["code"]) == (401, "service_key_invalid")
    finally:
        host.down()


def buyer_journey(url: str, mail_dir: Path, address: str) -> None:
    """A visitor fills a guest cart, signs up, logs in (the guest cart is merged) and checks out."""
    in_stock = requests.get(f"{url}/v1/products", params={"in_stock": "true", "page_size": 100}, timeout=10).json()
    item = next(product for product in in_stock if product["available"] >= 2)
    product_id, price = item["productId"], Decimal(item["price"])

    guest = requests.post(f"{url}/v1/auth/guest", timeout=10)
    assert guest.status_code in (200, 201), guest.text
    guest_token = guest.json()["accessToken"]
    guest_headers = {"Authorization": f"Bearer {guest_token}"}
    added = requests.post(
        f"{url}/v1/cart/products", json={"productId": product_id, "quantity": 2}, headers=guest_headers, timeout=10
    )
    assert added.status_code == 201, added.text
    cart = requests.get(f"{url}/v1/cart", headers=guest_headers, timeout=10).json()
    assert [(line["productId"], line["quantity"]) for line in cart["items"]] == [(product_id, 2)]

    registered = requests.post(f"{url}/v1/auth/register", json={"email": address, "password": PASSWORD}, timeout=10)
    assert registered.status_code == 201, registered.text
    token = token_from(last_email(mail_dir, address))
    verified = requests.post(f"{url}/v1/auth/verify-email", json={"token": token}, timeout=10)
    assert verified.status_code == 200, verified.text
    login = requests.post(
        f"{url}/v1/auth/login",
        json={"email": address, "password": PASSWORD},
        headers={"X-Guest-Token": guest_token},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    assert login.json()["cartMerge"]["mergedLines"] == 1
    buyer = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    cart = requests.get(f"{url}/v1/cart", headers=buyer, timeout=10).json()
    assert [(line["productId"], line["quantity"]) for line in cart["items"]] == [(product_id, 2)]
    assert Decimal(cart["totalPrice"]) == price * 2

    order = requests.post(
        f"{url}/v1/cart/checkout", headers={**buyer, "Idempotency-Key": f"checkout-{address}"}, timeout=10
    )
    assert order.status_code == 201, order.text
    assert Decimal(order.json()["totalPrice"]) == price * 2
    orders = requests.get(f"{url}/v1/orders", headers=buyer, timeout=10).json()
    assert [listed["orderId"] for listed in orders] == [order.json()["orderId"]]
    after = requests.get(f"{url}/v1/products/{product_id}", headers=buyer, timeout=10).json()
    assert (after["stock"], after["reserved"]) == (item["stock"] - 2, item["reserved"])
