"""The tests' gunicorn config: every setting on the command line, except the mutual TLS of a
service's listener, which comes from the app's settings exactly as in gunicorn.conf.py.

A stopping process (a worker in `worker_exit`, the master in `on_exit`: each has stopped serving)
freezes its objects out of the garbage collector, so that the interpreter's shutdown does not
collect them over and over as it clears each module: about half a second of CPU in each process,
at every stop of every test server. The atexit handlers still run, and objects freed by their
reference counts still are; only cycles are left to the process's end."""

import gc

from app import service_tls
from app.config import load_settings

globals().update(service_tls.gunicorn_settings(load_settings()))


def worker_exit(server, worker) -> None:
    gc.freeze()


def on_exit(server) -> None:
    gc.freeze()
