"""A micro-cache for anonymous catalog reads.

Each worker keeps public GET responses for CATALOG_CACHE_TTL seconds (default 2), so a
burst of identical catalog requests costs one store query per worker and TTL. Requests
with an Authorization header or `Cache-Control: no-cache` always read the store (admins
editing with If-Match see fresh versions), and a write through this worker clears its
cache. Other workers may serve a response up to TTL seconds old; stock is checked again
when a cart reserves it.
"""

from flask import Response, current_app, request

from app.extensions import cache


def is_personal() -> bool:
    return "Authorization" in request.headers or "no-cache" in request.headers.get("Cache-Control", "")


def _cacheable(response: Response) -> bool:
    return response.status_code == 200


public_cache = cache.cached(query_string=True, unless=is_personal, response_filter=_cacheable)


def after_catalog_request(response: Response) -> Response:
    """Conditional GETs (304 on a matching If-None-Match), cache headers, and invalidation."""
    if request.method == "GET" and response.status_code == 200:
        response.make_conditional(request)
        ttl = current_app.extensions["settings"].catalog_cache_ttl
        if is_personal() or not ttl:
            response.cache_control.no_cache = True
        else:
            response.cache_control.public = True
            response.cache_control.max_age = ttl
    elif request.method != "GET" and response.status_code < 400:
        cache.clear()
    return response
