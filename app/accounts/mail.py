"""Outgoing mail for accounts (address verification, password reset).

A port with three adapters, so development needs no mail server (console), tests and staging
can read what would have been sent (file), and production relays through SMTP.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from app.config import MailSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str  # plain text: no HTML, so nothing to escape and nothing for spam filters to dislike
    secrets: tuple[str, ...] = ()  # what only the recipient may read (a link's token): masked in logs


HIDDEN = "[hidden: shown in development mode only]"


class MailDeliveryFailed(Exception):
    """The message could not be handed over. Callers log it rather than fail the user's request;
    the text never contains credentials, so it is safe to log."""


class Mailer(Protocol):
    def send(self, message: Email) -> None:
        """Hand the message over, or raise MailDeliveryFailed."""


class ConsoleMailer:
    """Development default: links in the message can be followed straight from the server log.

    Only there (`show_secrets`, APP_ENV=development): in any other mode the message's secrets
    (a link's token) are masked, since whoever reads the log could otherwise take over the
    account. Production refuses this backend altogether (app/config.py).
    """

    def __init__(self, show_secrets: bool = False) -> None:
        self.show_secrets = show_secrets

    def send(self, message: Email) -> None:
        text = message.text
        if not self.show_secrets:
            for secret in message.secrets:
                text = text.replace(quote(secret, safe=""), HIDDEN).replace(secret, HIDDEN)
        log.info("Email to %s\nSubject: %s\n\n%s", message.to, message.subject, text)


class FileMailer:
    """One .eml file per message (like Django's file backend), openable in any mail client.

    Files are renamed into place, so a reader polling the directory never sees a partial one,
    and are readable by the owner only, since they carry live reset links.
    """

    def __init__(self, directory: str | os.PathLike[str], sender: str = MailSettings.sender) -> None:
        self.directory = Path(directory)
        self.sender = sender

    def send(self, message: Email) -> None:
        now = datetime.now(UTC)
        name = f"{now:%Y%m%d-%H%M%S-%f}-{uuid.uuid4().hex}.eml"  # sorts by time, unique across workers
        data = _mime(message, self.sender, now).as_bytes()  # LF line ends, like Django's and Maildir's files
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(temp, self.directory / name)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise MailDeliveryFailed(f"could not write mail to {self.directory}: {error}") from error


class SmtpMailer:
    def __init__(self, settings: MailSettings, timeout: float = 10) -> None:
        self.settings = settings
        self.timeout = timeout  # per socket operation, so a stalled relay cannot hold a worker for long

    def send(self, message: Email) -> None:
        settings = self.settings
        mime = _mime(message, settings.sender, datetime.now(UTC))
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=self.timeout) as smtp:
                if settings.smtp_starttls:
                    # smtplib's own default context does not verify the certificate; this one does.
                    smtp.starttls(context=ssl.create_default_context())
                if settings.smtp_username:
                    smtp.login(settings.smtp_username, settings.smtp_password or "")
                smtp.send_message(mime)
        except (smtplib.SMTPException, OSError) as error:
            raise MailDeliveryFailed(
                f"SMTP delivery via {settings.smtp_host}:{settings.smtp_port} failed: {error!r}"
            ) from error


def build_mailer(settings: MailSettings, *, development: bool = False) -> Mailer:
    """`development`: APP_ENV=development, the only mode whose console shows links' tokens."""
    match settings.backend:
        case "console":
            return ConsoleMailer(show_secrets=development)
        case "file":
            return FileMailer(settings.file_dir, sender=settings.sender)
        case "smtp":
            return SmtpMailer(settings)
    raise ValueError(f"unknown mail backend {settings.backend!r}")


def _mime(message: Email, sender: str, date: datetime) -> EmailMessage:
    """Header values with line breaks raise ValueError here, which rules out header injection."""
    mime = EmailMessage()
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(date)
    # The sender's domain, not socket.getfqdn(), which can stall on a DNS lookup.
    mime["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2] or "localhost")
    mime.set_content(message.text)
    return mime
