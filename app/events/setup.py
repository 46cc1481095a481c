"""Wires the events infrastructure into the app being built; called by the composition root only.

The modules register their own consumers (their setup.py); the audit trail, which belongs to
no module, is registered here.
"""

from __future__ import annotations

from flask import Flask

from app.events import audit


def register(app: Flask) -> None:
    audit.register_consumer(app)
