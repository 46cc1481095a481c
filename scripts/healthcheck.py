"""Container health check: exits 0 while this container's process answers GET /v1/health
with 200 on its own port.

Every run mode serves /v1/health (the gateway or one module's service), reporting the stores
it serves and the services it calls; 503 (degraded), an error or no answer is unhealthy.
"""

import sys
import urllib.request

from app.config import listen_port, load_settings


def check(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=3):  # raises HTTPError for any status but 2xx
            return True
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
        return False


if __name__ == "__main__":
    sys.exit(0 if check(listen_port(load_settings())) else 1)
