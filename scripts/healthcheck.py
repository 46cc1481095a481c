"""Container health check: exits 0 while this container's process answers GET /v1/health
with 200 on its own port.

Every run mode serves /v1/health (the gateway or one module's service), reporting the stores
it serves and the services it calls; 503 (degraded), an error or no answer is unhealthy.

`--heartbeat FILE` checks a job that serves no HTTP instead (`flask carts sweep --every N
--heartbeat FILE`): healthy while the time written in FILE, by which its next round is due,
has not passed.
"""

import sys
import time
import urllib.request
from pathlib import Path

from app.config import listen_port, load_settings


def check(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=3):  # raises HTTPError for any status but 2xx
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
    sys.exit(0 if check(listen_port(load_settings())) else 1)
