"""HTTP mechanics of the public API: JSON bodies, ETags and preconditions."""

import re

from flask import request

from app.errors import ApiError

BODY_METHODS = {"POST", "PUT", "PATCH"}
VERSION_TAG = re.compile(r"[0-9]{1,15}")


def require_json_body() -> None:
    """Refuse a request body that is not JSON with 415 instead of a confusing validation error."""
    has_body = bool(request.content_length or request.mimetype)
    if request.method in BODY_METHODS and has_body and not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as JSON (Content-Type: application/json).")


def with_etag(resource, status: int = 200, **headers: str):
    """A view's answer carrying the resource's version as its (strong) ETag: `"<version>"`."""
    return resource, status, {"ETag": f'"{resource.version}"', **headers}


def expected_version() -> int:
    """The version named by If-Match: 428 when absent, 412 when it names no version."""
    version = optional_expected_version()
    if version is None:
        raise ApiError(428, "precondition_required", "Send If-Match with the ETag from your last read.")
    return version


def optional_expected_version() -> int | None:
    """The version named by If-Match, None without the header; 412 when it names no version."""
    if not request.headers.get("If-Match"):
        return None
    tags = request.if_match.as_set()
    if len(tags) == 1:
        tag = next(iter(tags))
        if tag and VERSION_TAG.fullmatch(tag):  # werkzeug reads `""` as a tag of None
            return int(tag)
    raise ApiError(412, "precondition_failed", "If-Match must carry exactly one ETag from a previous read.")
