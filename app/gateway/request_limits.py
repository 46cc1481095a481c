"""Size limits on requests, answered as problem+json before any view runs.

The body is capped by MAX_CONTENT_LENGTH (Flask's own setting): a larger Content-Length is
refused here, and a chunked body without one is read here, up to one byte past the limit
(werkzeug alone would hand the view the first MAX_CONTENT_LENGTH bytes as if they were the
whole body); both answer 413 `payload_too_large`. The request target and the header block have caps of their own, below
gunicorn's `limit_request_line` and `limit_request_field_size` (gunicorn.conf.py), which stay
the outer bounds: past those gunicorn answers with its own HTML page before the app sees the
request. The internal service API carries batches (a seed's 5000 products) and its callers
hold a service key, so it gets a larger body cap.
"""

import io

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import ApiError, problem

MAX_URL_LENGTH = 2048  # bytes of the request target (path and query), as the client sent it
MAX_HEADER_BYTES = 8192  # bytes of all header lines ("Name: value\r\n") together
INTERNAL_MAX_CONTENT_LENGTH = 16 * 1024 * 1024
# gunicorn's limit_request_line counts "METHOD target HTTP/1.1"; this leaves room for the rest.
REQUEST_LINE_OVERHEAD = 32


def register(app: Flask) -> None:
    app.before_request(check_request_size)
    app.register_error_handler(RequestEntityTooLarge, _body_too_large)


def check_request_size() -> None:
    if request.path.startswith("/internal/"):
        request.max_content_length = INTERNAL_MAX_CONTENT_LENGTH
    if max(len(request.environ.get("RAW_URI", "")), len(request.full_path.rstrip("?"))) > MAX_URL_LENGTH:
        raise ApiError(414, "uri_too_long", f"The request URL is longer than {MAX_URL_LENGTH} bytes.")
    header_bytes = sum(len(name) + len(value) + 4 for name, value in request.headers.items())
    if header_bytes > MAX_HEADER_BYTES:
        raise ApiError(
            431, "request_headers_too_large", f"The request headers are larger than {MAX_HEADER_BYTES} bytes."
        )
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    if limit is not None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        _buffer_chunked_body(limit)


def _buffer_chunked_body(limit: int) -> None:
    """Read a chunked body (the server has decoded it) to its end or past `limit`, and put
    what was read back for the view."""
    if "wsgi.input_terminated" not in request.environ:
        return  # werkzeug reads no body from a server that does not delimit it
    stream, body = request.environ["wsgi.input"], bytearray()
    while len(body) <= limit:
        data = stream.read(limit + 1 - len(body))
        if not data:
            break
        body.extend(data)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    request.environ["wsgi.input"] = io.BytesIO(bytes(body))


def _body_too_large(error: RequestEntityTooLarge):
    return problem(413, "payload_too_large", f"The request body is larger than {request.max_content_length} bytes.")
