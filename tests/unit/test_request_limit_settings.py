"""MAX_CONTENT_LENGTH, and the app's URL and header caps staying inside gunicorn's own limits."""

import runpy
from pathlib import Path

import pytest

from app.config import ConfigError, load_settings
from app.gateway.request_limits import MAX_HEADER_BYTES, MAX_URL_LENGTH, REQUEST_LINE_OVERHEAD

REPO = Path(__file__).resolve().parents[2]


def test_the_body_limit_defaults_to_64_kib():
    assert load_settings({}).max_content_length == 64 * 1024
    assert load_settings({"MAX_CONTENT_LENGTH": "1048576"}).max_content_length == 1024 * 1024


@pytest.mark.parametrize("value", ["abc", "0", "1023", str(100 * 1024 * 1024 + 1)])
def test_a_bad_body_limit_stops_start_up_naming_the_variable(value):
    with pytest.raises(ConfigError) as raised:
        load_settings({"MAX_CONTENT_LENGTH": value})
    assert raised.value.variable == "MAX_CONTENT_LENGTH"


def test_the_apps_caps_answer_before_gunicorns_limits(monkeypatch):
    """gunicorn answers past its limits with an HTML page: the app's problem+json caps must
    be reached first."""
    monkeypatch.delenv("APP_MODULES", raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # the file sets it for the process: put back at the end
    gunicorn = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    assert gunicorn["limit_request_line"] >= MAX_URL_LENGTH + REQUEST_LINE_OVERHEAD
    # one header line over the app's cap still reaches the app
    assert gunicorn["limit_request_field_size"] >= MAX_HEADER_BYTES + len(": \r\n")
