"""gunicorn settings for every run mode, from the app's settings (API_HOST, GUNICORN_*).

The port comes from the app's own settings (`listen_port`), so APP_MODULES alone chooses
3000, 3001, 3002 or 3003, and a bad setting stops the master with the app's one-line error.
The host: API_HOST, else 0.0.0.0 in production (the image's port) and 127.0.0.1 in any other
mode, which refuses any non-loopback address unless ALLOW_PUBLIC_BIND=true (`on_starting`).
"""

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports prometheus_client, which picks its multiprocess mode at import: the
# workers write their metrics into this folder, the master serves their sum (app/metrics.py).
# One of our own when the operator names none, removed when the master exits.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="storefront-metrics-")

from gunicorn.glogging import Logger  # noqa: E402

from app import logs, metrics, service_tls, tracing  # noqa: E402
from app.config import check_bind, default_host, listen_port, load_settings  # noqa: E402

_settings = load_settings()
_server = _settings.server
# Tracing's provider exports from a thread, which does not survive fork: each worker starts its
# own in post_fork, and create_app, even run here in the master (--preload), leaves it alone.
tracing.leave_provider_to_workers()
bind = f"{_server.host or default_host(_settings)}:{listen_port(_settings)}"
workers = _server.workers or min(multiprocessing.cpu_count() * 2 + 1, 8)
worker_class = _server.worker_class
timeout = _server.timeout
graceful_timeout = _server.graceful_timeout
keepalive = _server.keepalive
# Outer bounds on the request line (gunicorn's maximum) and on each header line: past them
# gunicorn answers with an HTML page of its own. Below them the app answers problem+json
# (app/gateway/request_limits.py: URLs over 2048 bytes, headers over 8192 bytes in all).
limit_request_line = 8190
limit_request_field_size = 16384
accesslog = _server.access_log
# No gunicornc socket: containers are managed with signals, and the image's system user has no
# home directory to put the socket in.
control_socket_disable = True


class JsonAccessLogger(Logger):
    """gunicorn's error and access lines through the app's logging stack (app/logs.py): JSON with
    LOG_FORMAT=json, console lines otherwise. Each access line is one structlog event carrying the
    request's fields (request_id, trace_id, span_id, route, user_id, guest_id, caller); rendered
    as JSON by json.dumps, so a request for `/a%5C` or with control characters cannot break it."""

    def setup(self, cfg):
        super().setup(cfg)
        logs.wrap_gunicorn_logger(self.error_log, _settings.log_format)
        self._access = logs.wrap_gunicorn_logger(self.access_log, _settings.log_format)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        self._access.info(
            "access",
            remote_addr=atoms["h"],
            method=atoms["m"],
            path=atoms["U"],
            query=atoms["q"] or None,
            status=int(atoms["s"]),
            bytes=atoms["B"],
            duration_ms=round(request_time.total_seconds() * 1000, 3),
            user_agent=atoms["a"] if atoms["a"] != "-" else None,
            **logs.access_fields(environ, atoms.get("{x-request-id}i")),
        )


logger_class = JsonAccessLogger


def on_starting(server) -> None:
    """Outside production, loopback only (app.config.check_bind): checked on the addresses
    gunicorn is about to bind, so that a --bind on the command line is held to it too. The
    metrics folder starts empty: files of an earlier run would be counted as live workers."""
    for address in server.cfg.bind:
        check_bind(_settings, address, "API_HOST" if address == bind else "--bind")
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


def when_ready(server) -> None:
    """The master serves the workers' metrics on METRICS_PORT, a listener of its own."""
    metrics.serve(_settings)


def child_exit(server, worker) -> None:
    """A dead worker's live gauges (breaker state, pool in use, readiness) stop counting."""
    metrics.worker_exited(worker.pid)


def on_exit(server) -> None:
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_fork(server, worker) -> None:
    """The worker's own tracing provider (app/tracing.py), before it loads the app."""
    tracing.start_provider(_settings)


def worker_exit(server, worker) -> None:
    """The worker's spans still queued are exported before it ends."""
    tracing.shutdown()


# Mutual TLS on a service's internal listener (SERVICE_TLS_*): certfile, keyfile, ca_certs,
# cert_reqs and the ssl_context hook, from app/service_tls.py.
globals().update(service_tls.gunicorn_settings(_settings))
