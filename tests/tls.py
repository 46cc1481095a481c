"""Certificates for the mutual TLS tests, made by trustme: a CA of the test's own, and PEM
files of certificates it (or another CA) signs, valid or expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

from tests.e2e.gunicorn_server import ClientTls


class CertificateAuthority:
    def __init__(self, directory: Path):
        self.directory = directory
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, name: str, *, expired: bool = False) -> ClientTls:
        """A certificate for `name` that also names 127.0.0.1 and localhost (servers run on
        loopback), with its key and this CA's certificate; `expired`: it ended an hour ago."""
        now = datetime.now(UTC)
        window = {"not_before": now - timedelta(days=2), "not_after": now - timedelta(hours=1)} if expired else {}
        leaf = self.ca.issue_cert(name, "127.0.0.1", "localhost", common_name=name, **window)
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return ClientTls(cert=str(cert), key=str(key), ca=str(self.ca_file))

    def environment(self, name: str) -> dict[str, str]:
        """SERVICE_TLS_* for a process called `name`, with a certificate of its own."""
        own = self.issue(name)
        return {"SERVICE_TLS_CERT": own.cert, "SERVICE_TLS_KEY": own.key, "SERVICE_TLS_CA": own.ca}
