"""schemathesis over the public OpenAPI document, against the app served by gunicorn (2 workers):
as an anonymous caller, a customer and an administrator, every operation gets the documented
examples, the coverage phase's boundary values and a few fuzzed inputs (a fixed seed, a small
budget), and every answer must be no 5xx, a documented status, the documented content type
and valid against the documented schema."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.gunicorn_server import app_environment, gunicorn

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# What a signed-in run must not call with its own token: the session would end, or its
# credentials change, and the rest of the run would see only 401s.
ENDS_THE_SESSION = r"^/v1/(auth/(logout|logout-all|mfa/.*)|users/me/password)$"
BUDGET = ["--phases", "examples,coverage,fuzzing", "--max-examples", "5", "--seed", "1"]


@pytest.fixture(scope="module")
def served(mongo_uri, database_url, tmp_path_factory):
    environment = app_environment(
        mongo_uri,
        database_url,
        THROTTLE_LIMIT="1000000",
        AUTH_RATE_LIMIT="100000 per minute",
        GUEST_RATE_LIMIT="100000 per minute",
        HEALTH_RATE_LIMIT="100000 per minute",
        LOGIN_MAX_FAILURES="100000",
        LOGIN_ACCOUNT_MAX_FAILURES="100000",
        MAIL_BACKEND="file",
        MAIL_FILE_DIR=str(tmp_path_factory.mktemp("fuzz-mail")),
    )
    with gunicorn(environment, tmp_path_factory.mktemp("fuzz") / "gunicorn.log", workers=2) as url:
        yield url


@pytest.mark.parametrize("caller", ["anonymous", "customer", "admin"])
def test_every_answer_to_generated_requests_is_documented_and_no_server_error(served, app, token, caller, tmp_path):
    arguments = [f"{served}/api/openapi.json", *BUDGET, "--checks", CHECKS, "--max-failures", "20"]
    if caller != "anonymous":
        subject = f"fuzzing-{caller}"
        roles = ("admin",) if caller == "admin" else ("customer",)
        arguments += ["--header", f"Authorization: Bearer {token(*roles, subject=subject)}"]
        arguments += ["--exclude-path-regex", ENDS_THE_SESSION]
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", *arguments],
        cwd=tmp_path,  # where schemathesis keeps its example database
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
