"""The tests' gunicorn config: every setting on the command line, except the mutual TLS of a
service's listener, which comes from the app's settings exactly as in gunicorn.conf.py."""

from app import service_tls
from app.config import load_settings

globals().update(service_tls.gunicorn_settings(load_settings()))
