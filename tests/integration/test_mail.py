"""The mail port: SMTP against a real local server (aiosmtpd), .eml files on disk, the console log."""

from __future__ import annotations

import email
import email.policy
import logging
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from app.accounts.mail import (
    HIDDEN,
    ConsoleMailer,
    Email,
    FileMailer,
    MailDeliveryFailed,
    SmtpMailer,
    build_mailer,
)
from app.config import MailSettings

SENDER = "Storefront <no-reply@shop.test>"
PASSWORD = "correct horse battery staple"
MESSAGE = Email(to="ada@example.com", subject="Confirm your address", text="Open https://shop.test/verify?t=abc\n")


@pytest.fixture(autouse=True)
def clean_stores():
    """Overrides conftest's autouse fixture of this name: nothing here touches a database, so none is needed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    over_tls: bool


@dataclass
class Inbox:
    """aiosmtpd handler and authenticator that keep what the server was given."""

    port: int
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append(Received(envelope.mail_from, envelope.rcpt_tos, message, session.ssl is not None))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password.decode() == PASSWORD, handled=False)  # False: server replies 535

    def settings(self, **changes: object) -> MailSettings:
        return replace(
            MailSettings(backend="smtp", smtp_host="127.0.0.1", smtp_port=self.port, sender=SENDER), **changes
        )


def serve(tls_context: ssl.SSLContext | None = None) -> Iterator[Inbox]:
    inbox = Inbox(free_port())
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=inbox.port,
        server_hostname="mail.test",  # else aiosmtpd asks DNS for the machine's name
        authenticator=inbox.authenticate,
        auth_require_tls=False,
        tls_context=tls_context,
    )
    controller.start()
    yield inbox
    controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Inbox]:
    """A plain server: it offers AUTH but not STARTTLS."""
    yield from serve()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl CLI; the stdlib cannot make one)."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run([*command.split(), "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_smtp_server(certificate) -> Iterator[Inbox]:
    """A server that offers STARTTLS without requiring it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    yield from serve(context)


# SMTP


def test_smtp_delivers_the_message_to_a_real_server(smtp_server):
    SmtpMailer(smtp_server.settings()).send(MESSAGE)

    [received] = smtp_server.received
    assert received.mail_from == "no-reply@shop.test"
    assert received.rcpt_tos == ["ada@example.com"]
    assert received.message["From"] == SENDER
    assert received.message["To"] == "ada@example.com"
    assert received.message["Subject"] == "Confirm your address"
    assert received.message.get_content_type() == "text/plain"
    assert received.message.get_content().splitlines() == MESSAGE.text.splitlines()  # CRLF on the wire
    assert received.message["Date"].datetime is not None
    assert received.message["Message-ID"].endswith("@shop.test>")
    assert smtp_server.logins == []  # no username configured: no AUTH


def test_smtp_logs_in_when_a_username_is_set(smtp_server):
    SmtpMailer(smtp_server.settings(smtp_username="mailer", smtp_password=PASSWORD)).send(MESSAGE)

    assert smtp_server.logins == [("mailer", PASSWORD)]
    assert len(smtp_server.received) == 1


def test_smtp_rejected_login_raises_without_the_password(smtp_server):
    wrong = "not-the-password-0451"
    with pytest.raises(MailDeliveryFailed) as failure:
        SmtpMailer(smtp_server.settings(smtp_username="mailer", smtp_password=wrong)).send(MESSAGE)

    assert set(smtp_server.logins) == {("mailer", wrong)}  # smtplib tries PLAIN, then LOGIN
    assert smtp_server.received == []
    assert wrong not in str(failure.value)


def test_smtp_does_not_attempt_starttls_when_it_is_off(tls_smtp_server):
    SmtpMailer(tls_smtp_server.settings(smtp_starttls=False)).send(MESSAGE)

    [received] = tls_smtp_server.received  # the server offered STARTTLS ...
    assert received.over_tls is False  # ... and the mailer did not take it up


def test_smtp_without_starttls_works_with_a_server_that_cannot_do_it(smtp_server):
    SmtpMailer(smtp_server.settings(smtp_starttls=False)).send(MESSAGE)

    assert len(smtp_server.received) == 1


def test_smtp_refuses_to_go_on_when_starttls_is_on_but_not_offered(smtp_server):
    with pytest.raises(MailDeliveryFailed):
        SmtpMailer(smtp_server.settings(smtp_starttls=True)).send(MESSAGE)

    assert smtp_server.received == []


def test_smtp_starttls_encrypts_the_session_with_a_trusted_certificate(tls_smtp_server, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # read by ssl.create_default_context()

    SmtpMailer(tls_smtp_server.settings(smtp_starttls=True, smtp_username="mailer", smtp_password=PASSWORD)).send(
        MESSAGE
    )

    [received] = tls_smtp_server.received
    assert received.over_tls is True
    assert tls_smtp_server.logins == [("mailer", PASSWORD)]


def test_smtp_starttls_verifies_the_certificate(tls_smtp_server):
    settings = tls_smtp_server.settings(smtp_starttls=True, smtp_username="mailer", smtp_password=PASSWORD)
    with pytest.raises(MailDeliveryFailed, match="CERTIFICATE_VERIFY_FAILED"):
        SmtpMailer(settings).send(MESSAGE)

    assert tls_smtp_server.logins == []  # the password never went to an unverified server
    assert tls_smtp_server.received == []


def test_smtp_connection_refused_fails_fast_without_the_password():
    settings = MailSettings(
        backend="smtp", smtp_host="127.0.0.1", smtp_port=free_port(), smtp_username="mailer", smtp_password=PASSWORD
    )
    started = time.monotonic()
    with pytest.raises(MailDeliveryFailed) as failure:
        SmtpMailer(settings).send(MESSAGE)

    assert time.monotonic() - started < 2
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)
    assert f"127.0.0.1:{settings.smtp_port}" in str(failure.value)
    assert PASSWORD not in str(failure.value)
    assert PASSWORD not in repr(failure.value)


# File


def test_file_mailer_writes_one_parseable_eml_per_message(tmp_path):
    directory = tmp_path / "var" / "mail"  # does not exist yet
    mailer = FileMailer(directory, sender=SENDER)
    second = Email(to="grace@example.com", subject="Réinitialiser le mot de passe", text="Voilà: ça marche.\n")

    mailer.send(MESSAGE)
    mailer.send(second)

    files = sorted(os.listdir(directory))
    assert len(files) == 2
    assert all(name.endswith(".eml") for name in files)  # and no temporary files left behind
    parsed = [email.message_from_bytes((directory / name).read_bytes(), policy=email.policy.default) for name in files]
    assert [message["To"] for message in parsed] == ["ada@example.com", "grace@example.com"]  # names sort by time
    assert [message["Subject"] for message in parsed] == [MESSAGE.subject, second.subject]
    assert [message.get_content() for message in parsed] == [MESSAGE.text, second.text]
    assert all(message["From"] == SENDER for message in parsed)
    assert all(message["Date"].datetime is not None for message in parsed)
    assert parsed[0]["Message-ID"] != parsed[1]["Message-ID"]


def test_file_mailer_names_are_unique_within_the_same_instant(tmp_path):
    mailer = FileMailer(tmp_path)
    for _ in range(50):
        mailer.send(MESSAGE)

    assert len(list(tmp_path.glob("*.eml"))) == 50


def test_file_mailer_leaves_no_partial_file_when_writing_fails(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(MailDeliveryFailed, match="No space left"):
        FileMailer(tmp_path).send(MESSAGE)

    assert list(tmp_path.iterdir()) == []


def test_file_mailer_reports_an_unwritable_directory(tmp_path):
    blocker = tmp_path / "mail"
    blocker.write_text("a file where the directory should be")

    with pytest.raises(MailDeliveryFailed):
        FileMailer(blocker).send(MESSAGE)


# Console


def test_console_mailer_logs_the_whole_message(caplog):
    caplog.set_level(logging.INFO, logger="app.accounts.mail")

    ConsoleMailer().send(MESSAGE)

    [record] = [record for record in caplog.records if record.name == "app.accounts.mail"]
    assert record.levelno == logging.INFO
    assert "ada@example.com" in record.getMessage()
    assert "Confirm your address" in record.getMessage()
    assert "https://shop.test/verify?t=abc" in record.getMessage()


SECRET_MESSAGE = Email(
    to="ada@example.com",
    subject="Reset your password",
    text="Open https://shop.test/reset?token=a%2Fb%2Bc or send\na/b+c\n",
    secrets=("a/b+c",),
)


def test_console_mailer_masks_the_messages_secrets_unless_told(caplog):
    caplog.set_level(logging.INFO, logger="app.accounts.mail")

    ConsoleMailer().send(SECRET_MESSAGE)  # any mode but development
    ConsoleMailer(show_secrets=True).send(SECRET_MESSAGE)  # development

    masked, shown = [record.getMessage() for record in caplog.records if record.name == "app.accounts.mail"]
    assert "a/b+c" not in masked
    assert "a%2Fb" not in masked  # nor the link's percent-encoded copy
    assert masked.endswith(f"https://shop.test/reset?token={HIDDEN} or send\n{HIDDEN}\n")
    assert shown.endswith(SECRET_MESSAGE.text)


@pytest.mark.parametrize(("development", "shown"), [(True, True), (False, False)])
def test_build_mailer_shows_secrets_on_the_console_in_development_only(development, shown):
    assert build_mailer(MailSettings(backend="console"), development=development).show_secrets is shown


# Choosing a backend


@pytest.mark.parametrize(
    ("backend", "expected"), [("console", ConsoleMailer), ("file", FileMailer), ("smtp", SmtpMailer)]
)
def test_build_mailer_follows_the_backend_setting(backend, expected):
    assert type(build_mailer(MailSettings(backend=backend))) is expected


def test_build_mailer_passes_the_settings_on(tmp_path):
    file_mailer = build_mailer(MailSettings(backend="file", file_dir=str(tmp_path), sender=SENDER))
    smtp_settings = MailSettings(backend="smtp", smtp_host="mail.example.com")

    assert (file_mailer.directory, file_mailer.sender) == (tmp_path, SENDER)
    assert build_mailer(smtp_settings).settings is smtp_settings


def test_build_mailer_refuses_an_unknown_backend():
    with pytest.raises(ValueError, match="carrier-pigeon"):
        build_mailer(MailSettings(backend="carrier-pigeon"))
