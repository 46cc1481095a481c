"""Debian's nginx with the repository's edge configuration (deploy/nginx/), on loopback.

The repository's files are what the compose `nginx` services mount; a test renders them with
loopback upstreams and a free port (the compose host names resolve in compose's network only),
and its own prefix, pid, logs and temp directories."""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.debian_packages import installed
from tests.e2e.gunicorn_server import terminate

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "deploy" / "nginx"
SERVER_CONFIG = EDGE / "storefront.conf"
UPSTREAMS = {"api": EDGE / "upstream-api.conf.template", "gateway": EDGE / "upstream-gateway.conf.template"}
LISTEN = "listen 80;"


def nginx_binary() -> str:
    """Debian's nginx; installed (as root) when missing."""
    return installed("nginx", "nginx")


def upstream_block(template: Path, servers: list[str]) -> str:
    """The upstream template with its `server host:port ...;` line repeated for each of `servers`
    (its parameters kept), in place of the compose host name."""
    text = template.read_text()
    lines = re.findall(r"^\s*server\s+\S+.*;$", text, re.MULTILINE)
    assert lines, f"{template} names no server"
    first = lines[0]
    address = first.split()[1].rstrip(";")
    text = text.replace(first, "\n".join(first.replace(address, server, 1) for server in servers))
    for line in lines[1:]:
        text = text.replace(line, "")
    return text


def render(directory: Path, port: int, servers: list[str], *, template: Path = UPSTREAMS["api"]) -> Path:
    """A main nginx.conf under `directory` holding the repository's upstream template and server
    block, listening on 127.0.0.1:`port`, proxying to `servers` (host:port each)."""
    server_config = SERVER_CONFIG.read_text()
    assert server_config.count(LISTEN) == 1, f"{SERVER_CONFIG} must listen with exactly one '{LISTEN}'"
    server_config = server_config.replace(LISTEN, f"listen 127.0.0.1:{port};")
    temp = directory / "temp"
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / name).mkdir(parents=True, exist_ok=True)
    # As root, workers would run as `nobody`, who cannot enter pytest's private temp directories.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    config = directory / "nginx.conf"
    config.write_text(
        f"""{user}
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{upstream_block(template, servers)}
{server_config}
}}
"""
    )
    return config


def check(config: Path) -> subprocess.CompletedProcess:
    """`nginx -t` on the rendered file."""
    directory = config.parent
    command = [nginx_binary(), "-t", "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


@contextmanager
def nginx(directory: Path, port: int, servers: list[str]) -> Iterator[Path]:
    """Runs nginx in the foreground (`daemon off`) until the block ends; yields its access log
    (the server block logs to /dev/stdout, which is this file)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = render(directory, port, servers)
    checked = check(config)
    assert checked.returncode == 0, checked.stderr
    access_log = directory / "access.log"
    command = [nginx_binary(), "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]
    with access_log.open("a") as log:
        process = subprocess.Popen(
            [*command, "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(directory / 'error.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen within 15s") from None
                time.sleep(0.05)
        yield access_log
    finally:
        terminate(process)
