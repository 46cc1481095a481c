"""Wires the public gateway into the app being built; called by the composition root only."""

from flask import Flask

from app.extensions import StorefrontApi
from app.gateway import (
    audit_routes,
    auth_routes,
    cart_routes,
    health,
    order_routes,
    products,
    request_limits,
    security_headers,
    users,
)


def register(app: Flask, api: StorefrontApi) -> None:
    for module in (products, cart_routes, order_routes, auth_routes, users, audit_routes):
        api.register_blueprint(module.blp)
    register_health(app, api)


def register_health(app: Flask, api: StorefrontApi) -> None:
    """What every process serves, whichever modules it runs: /v1/health, /health/live and
    /health/ready, the request size limits and the security headers."""
    health.init_app(app)
    api.register_blueprint(health.blp)
    api.register_blueprint(health.probes_blp)
    request_limits.register(app)
    app.after_request(security_headers.add)
