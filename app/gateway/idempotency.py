"""`Idempotency-Key` on cart writes: a retried request gets the first request's answer.

Keys are scoped to the caller and remembered with a hash of the request, so a key reused
for a different request is refused (422) rather than replayed.
"""

from __future__ import annotations

import hashlib
from functools import wraps

from flask import Response, current_app, json, request
from flask_jwt_extended import get_jwt_identity

from app.cart import interface as cart
from app.errors import ApiError

MAX_KEY_LENGTH = 255
IDEMPOTENCY_KEY = {"in": "header", "name": "Idempotency-Key", "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH}}


def _request_hash() -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.path, request.query_string.decode(), request.get_data(as_text=True)):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def idempotent(*, required: bool):
    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            key = request.headers.get("Idempotency-Key", "").strip()
            if not key:
                if required:
                    raise ApiError(400, "idempotency_key_required", "Send an Idempotency-Key header (e.g. a UUID).")
                return view(*args, **kwargs)
            if len(key) > MAX_KEY_LENGTH:
                raise ApiError(
                    400,
                    "validation_error",
                    "The request has invalid fields.",
                    errors={"Idempotency-Key": [f"Use at most {MAX_KEY_LENGTH} characters."]},
                )
            owner_id = get_jwt_identity()
            stored = cart.claim_idempotency_key(owner_id=owner_id, key=key, request_hash=_request_hash())
            if stored is not None:
                return _replay(stored)
            try:
                response = current_app.make_response(view(*args, **kwargs))
            except BaseException:
                cart.release_idempotency_key(owner_id=owner_id, key=key)
                raise
            answer = cart.StoredResponse(
                status=response.status_code, body=response.get_json(), etag=response.headers.get("ETag")
            )
            cart.complete_idempotency_key(owner_id=owner_id, key=key, response=answer)
            return response

        return wrapper

    return decorator


def _replay(stored: cart.StoredResponse) -> Response:
    response = current_app.response_class(json.dumps(stored.body), status=stored.status, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    if stored.etag:
        response.headers["ETag"] = stored.etag
    return response
