"""The local RabbitMQ (127.0.0.1:5672, guest/guest) for the event tests: more virtual hosts
of a test's own (beside the session's, conftest.rabbitmq_url), and a TCP proxy that can cut
the line to it."""

from __future__ import annotations

import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pika
from pika.exceptions import AMQPConnectionError

HOST, PORT = "127.0.0.1", 5672


def rabbitmqctl(*arguments: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *arguments], check=True, capture_output=True, timeout=60)


@contextmanager
def vhost(name: str) -> Iterator[str]:
    """A new virtual host the guest user may use, deleted with everything in it afterwards;
    yields its amqp:// URL. The broker runs already (the rabbitmq_url fixture starts it)."""
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{HOST}:{PORT}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def connect(url: str, attempts: int = 20) -> pika.BlockingConnection:
    for _ in range(attempts - 1):
        try:
            return pika.BlockingConnection(pika.URLParameters(url))
        except AMQPConnectionError:
            time.sleep(0.5)
    return pika.BlockingConnection(pika.URLParameters(url))


class TcpProxy:
    """Forwards loopback connections to RabbitMQ; `cut()` drops them all and refuses new ones
    (accepted, then closed at once) until `reopen()`."""

    def __init__(self, target: tuple[str, int] = (HOST, PORT)):
        self.target = target
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, vhost_url: str) -> str:
        return vhost_url.replace(f"@{HOST}:{PORT}/", f"@{HOST}:{self.port}/")

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for end in pair:
                _close(end)

    def reopen(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump(client: socket.socket, server: socket.socket) -> None:
        """Both directions in one thread until either end closes."""
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, server)
            selector.register(server, selectors.EVENT_READ, client)
            try:
                while True:
                    for key, _ in selector.select(timeout=1):
                        data = key.fileobj.recv(65536)
                        if not data:
                            raise OSError("closed")
                        key.data.sendall(data)
            except (OSError, ValueError):
                pass
            finally:
                _close(client)
                _close(server)


def _close(end: socket.socket) -> None:
    with suppress(OSError):
        end.shutdown(socket.SHUT_RDWR)
    end.close()
