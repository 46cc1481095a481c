"""Container health check: exits 0 while this container's app answers on its port.

It asks GET /v1/health. A process serving the gateway answers 200 (every store up) or 503;
one serving only internal modules has no public routes and answers 404 from the app itself,
which still proves its workers serve (the gateway's health covers the stores behind it).
So any answer below 500 is healthy; no answer or a 5xx is not.
"""

import sys
import urllib.error
import urllib.request

from app.config import listen_port, load_settings


def check(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"no answer from {url}: {error}", file=sys.stderr)
        return False
    return status < 500


if __name__ == "__main__":
    sys.exit(0 if check(listen_port(load_settings())) else 1)
