"""Container health check: exits 0 while this container's process answers GET /health/ready
with 200 on its own port.

Every run mode serves /health/ready (the gateway or one module's service): the stores it
serves and the services it calls answer, its SQL database is at the migrations' head and no
circuit breaker is open; 503 (not_ready), an error or no answer is unhealthy.

`--heartbeat FILE` checks a job that serves no HTTP instead (`flask carts sweep --every N
--heartbeat FILE`): healthy while the time written in FILE, by which its next round is due,
has not passed.
"""

import ssl
import sys
import time
import urllib.request
from pathlib import Path

from app.config import Settings, listen_port, load_settings


def check(settings: Settings) -> bool:
    tls = settings.service_tls if settings.serves_internal_api() else None
    url = f"{'https' if tls else 'http'}://127.0.0.1:{listen_port(settings)}/health/ready"
    context = None
    if tls:  # the listener requires a client certificate: present ours (the name is the service's)
        context = ssl.create_default_context(cafile=tls.ca)
        context.check_hostname = False
        context.load_cert_chain(tls.cert, tls.key)
    try:
        # http or https to this container only; raises HTTPError for any status but 2xx
        with urllib.request.urlopen(url, timeout=3, context=context):  # noqa: S310
            return True
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
        return False


def check_heartbeat(path: Path) -> bool:
    try:
        due = float(path.read_text())
    except (OSError, ValueError) as error:
        print(f"{path}: no heartbeat ({error})", file=sys.stderr)
        return False
    if due < time.time():
        print(f"{path}: the job's next round was due {time.time() - due:.0f} s ago", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    if sys.argv[1:2] == ["--heartbeat"]:
        sys.exit(0 if check_heartbeat(Path(sys.argv[2])) else 1)
    sys.exit(0 if check(load_settings()) else 1)
