"""Make the certificates for mutual TLS between the split services (docker-compose.yml):

    python scripts/make_service_certs.py [--out certs] [--days 365] [--uid 10001]

writes a CA (ca.pem, and ca-key.pem to sign more later: keep it off the servers) and, for each
of products-service, cart-service and gateway, <name>.pem (its certificate, naming the
service's compose host name, for both server and client use) and <name>-key.pem. Keys are
readable by their owner only; `--uid` (default: the image's user, 10001) makes the files the
container user's when run as root, so the containers can read the keys they mount. Existing
files are never overwritten: remove the folder to start again.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICES = ("products-service", "cart-service", "gateway")
IMAGE_UID = 10001  # the Dockerfile's `storefront` user


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Storefront"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("Storefront service CA"))
        .issuer_name(_name("Storefront service CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def make_service_cert(
    name: str, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName(name), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def write(path: Path, content: bytes, *, secret: bool, uid: int | None) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    if uid is not None and os.geteuid() == 0:
        os.chown(path, uid, -1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("certs"), help="folder to write to [certs]")
    parser.add_argument("--days", type=int, default=365, help="validity of every certificate [365]")
    parser.add_argument(
        "--uid", type=int, default=IMAGE_UID, help=f"owner of the files, when run as root [{IMAGE_UID}]"
    )
    options = parser.parse_args(argv)
    targets = [options.out / name for name in ("ca.pem", "ca-key.pem")]
    targets += [options.out / f"{service}{suffix}" for service in SERVICES for suffix in (".pem", "-key.pem")]
    if existing := [str(path) for path in targets if path.exists()]:
        print(f"refusing to overwrite {', '.join(existing)}", file=sys.stderr)
        return 1
    options.out.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key, ca = make_ca(options.days)
    write(options.out / "ca.pem", ca.public_bytes(pem), secret=False, uid=options.uid)
    write(options.out / "ca-key.pem", _key_pem(ca_key), secret=True, uid=None)  # stays the operator's
    for service in SERVICES:
        key, certificate = make_service_cert(service, ca_key, ca, options.days)
        write(options.out / f"{service}.pem", certificate.public_bytes(pem), secret=False, uid=options.uid)
        write(options.out / f"{service}-key.pem", _key_pem(key), secret=True, uid=options.uid)
    print(f"wrote a CA and certificates for {', '.join(SERVICES)} to {options.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
