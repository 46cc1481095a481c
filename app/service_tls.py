"""Mutual TLS on a service's internal listener: the gunicorn settings, from SERVICE_TLS_*.

gunicorn.conf.py applies them, and so does the tests' gunicorn config (tests/e2e/no_config.py),
so that what the tests serve is what production serves. A service process (one without the
gateway) with SERVICE_TLS_CERT, SERVICE_TLS_KEY and SERVICE_TLS_CA set serves TLS 1.2 or newer
and requires a client certificate signed by the CA: a caller without one, with one from another
CA, or with an expired one fails the handshake before any HTTP. The public API's listener stays
plain HTTP behind the TLS-terminating proxy. Callers present theirs in app/http_client.py.
"""

from __future__ import annotations

import ssl

from app.config import Settings


def gunicorn_settings(settings: Settings) -> dict[str, object]:
    """gunicorn's certfile, keyfile, ca_certs, cert_reqs and ssl_context; {} without mutual TLS."""
    tls = settings.service_tls
    if tls is None or not settings.serves_internal_api():
        return {}

    def ssl_context(config, default_ssl_context_factory):
        context = default_ssl_context_factory()  # loads certfile and keyfile, ca_certs, cert_reqs
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    return {
        "certfile": tls.cert,
        "keyfile": tls.key,
        "ca_certs": tls.ca,
        "cert_reqs": ssl.CERT_REQUIRED,
        "ssl_context": ssl_context,
    }
