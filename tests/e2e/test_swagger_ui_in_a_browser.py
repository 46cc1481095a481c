"""Swagger UI as a person opens it: headless Chromium loads /api/ from gunicorn under the page's
Content-Security-Policy; every operation renders and the browser reports no blocked load."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.gunicorn_server import app_environment, gunicorn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def base_url(app, mongo_uri, database_url, tmp_path_factory) -> Iterator[str]:
    environment = app_environment(mongo_uri, database_url)
    with gunicorn(environment, tmp_path_factory.mktemp("gunicorn-docs") / "gunicorn.log") as url:
        yield url


def test_swagger_ui_renders_under_its_content_security_policy(base_url, tmp_path):
    command = [
        *(CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}"),
        *("--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", f"{base_url}/api/"),
    ]
    browser = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    console = [line for line in browser.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Content Security Policy" in line], console
    assert browser.stdout.count('class="opblock-summary-path"') >= 20, browser.stdout[:2000]
