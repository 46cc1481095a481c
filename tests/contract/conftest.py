"""The two implementations of every port, for the contract suites of this package.

"in-process": the session app, which serves every module, so interface calls run here.
"http": a gateway-only app (APP_MODULES=gateway) whose products, cart and accounts URLs point
at a threaded werkzeug server serving a service app (the three modules, no gateway: only
such a process has the internal routes) on loopback, so every interface call
crosses HTTP through app/http_client.py and the internal service API.

A test takes `port_app` and calls `from app.<module> import interface` functions inside it
(the fixture has pushed its app context); `in_process` runs a call in the session app, for
set-up and for reading what the store holds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import pytest
from flask import Flask
from werkzeug.serving import make_server

from app import create_app
from app.errors import DomainError


@pytest.fixture(scope="session")
def service_url(service_app) -> Iterator[str]:
    """A service process (products, cart and accounts, no gateway) served over HTTP on a free
    loopback port for the whole session; it shares the stores with the session app."""
    server = make_server("127.0.0.1", 0, service_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="contract-service", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="session")
def http_app(settings, service_url) -> Flask:
    """A caller process that serves none of the three modules: it reaches them at service_url."""
    caller = settings.override(
        modules=("gateway",),
        products_service_url=service_url,
        cart_service_url=service_url,
        accounts_service_url=service_url,
    )
    app = create_app(caller)
    assert set(app.extensions["remote_ports"]) == {"products", "cart", "accounts"}
    return app


@pytest.fixture(params=["in-process", "http"])
def port_app(request, app) -> Iterator[Flask]:
    """The app whose implementation of the ports a test calls, with its context pushed."""
    chosen = app if request.param == "in-process" else request.getfixturevalue("http_app")
    with chosen.app_context():
        yield chosen


@pytest.fixture
def in_process(app):
    """Run one call in the session app (which serves every module)."""

    def run(function, **arguments):
        with app.app_context():
            return function(**arguments)

    return run


@contextmanager
def raises(error_class: type[DomainError], **extensions) -> Iterator[pytest.ExceptionInfo]:
    """Expect exactly `error_class` (not a subclass, not a generic error) with these problem members."""
    with pytest.raises(DomainError) as raised:
        yield raised
    assert type(raised.value) is error_class, f"{type(raised.value).__name__}: {raised.value}"
    assert raised.value.problem_members() == extensions
    assert raised.value.detail


def assert_aware_utc(*moments) -> None:
    for moment in moments:
        assert moment.tzinfo is not None, moment
        assert moment.utcoffset() == timedelta(0), moment


def assert_money(*amounts) -> None:
    for amount in amounts:
        assert type(amount) is Decimal, repr(amount)
