"""Security headers on every response.

The API answers JSON only, so its Content-Security-Policy allows nothing to load. Swagger UI
(/api/, when DOCS_ENABLED) loads its script and style sheet from /api/assets, images from
data: URIs in that style sheet, and the spec (and "Try it out" calls) from this origin; its
one inline script, which passes the settings to Swagger UI, is allowed by its hash, computed
from the page as sent.
"""

import base64
import hashlib
import re

from flask import Response, current_app, request

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=63072000; includeSubDomains"  # two years
NOTHING = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS = (
    "default-src 'none'; script-src 'self' {scripts}; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_PAGE = "api-docs.openapi_swagger_ui"
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

# Tokens and personal data: never kept by browsers or proxies, errors included.
PRIVATE_PREFIXES = ("/v1/auth", "/v1/users", "/v1/cart", "/v1/orders")


def add(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", _content_security_policy(response))
    if request.is_secure or current_app.extensions["settings"].is_production:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    if request.path.startswith(PRIVATE_PREFIXES):
        response.headers["Cache-Control"] = "no-store"
    return response


def _content_security_policy(response: Response) -> str:
    if request.endpoint != DOCS_PAGE or response.mimetype != "text/html":
        return NOTHING
    hashes = (hashlib.sha256(script).digest() for script in INLINE_SCRIPT.findall(response.get_data()))
    return DOCS.format(scripts=" ".join(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in hashes))
