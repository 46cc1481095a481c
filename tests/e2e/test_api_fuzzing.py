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
# What no bearer token of a signed-in user opens: a login (credentials) and a refresh (a refresh token).
NEEDS_OTHER_CREDENTIALS = {"POST /v1/auth/login", "POST /v1/auth/refresh"}
ADMIN_ONLY = {
    "POST /v1/products",
    "PATCH /v1/products/{product_id}",
    "DELETE /v1/products/{product_id}",
    "POST /v1/products/{product_id}/stock",
    "GET /v1/users",
    "PATCH /v1/users/{user_id}",
    "GET /v1/admin/audit",
}


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
    if caller != "anonymous":  # the token opened every operation its roles open, to the end of the run
        refused_throughout = NEEDS_OTHER_CREDENTIALS | (ADMIN_ONLY if caller == "customer" else set())
        assert only_refused(run.stdout) == refused_throughout, run.stdout[-6000:]


def only_refused(report: str) -> set[str]:
    """The operations schemathesis's report lists as having answered only 401 or 403."""
    if "Authentication failed:" not in report:
        return set()
    section = report.split("Authentication failed:", 1)[1].split("💡", 1)[0]
    return {line.strip().removeprefix("- ") for line in section.splitlines() if line.strip().startswith("- ")}
