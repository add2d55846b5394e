"""Notification e-mail: SMTP settings, the message from templates, one send.

``MEDIAQ_SMTP_URL`` is ``smtp://[user:pass@]host[:port][?starttls=auto|always|never]``
(port 25 by default; ``auto`` uses STARTTLS when the server offers it) or
``smtps://…`` (TLS from the first byte, port 465). ``MEDIAQ_SMTP_USER`` and
``MEDIAQ_SMTP_PASSWORD`` fill in credentials the URL leaves out.
"""

from __future__ import annotations

import html
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from mediaq.config import Settings
from mediaq.errors import ConfigError

STARTTLS_MODES = ("auto", "always", "never")


def parse_smtp_url(url: str) -> tuple[SplitResult, str]:
    """``url`` split, and its starttls mode; ConfigError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError("smtp_url: expected smtp://host[:port] or smtps://host[:port]")
    starttls = parse_qs(parts.query).get("starttls", ["auto"])[0]
    if starttls not in STARTTLS_MODES:
        raise ConfigError(f"smtp_url: starttls must be one of {', '.join(STARTTLS_MODES)}")
    return parts, starttls


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    starttls: str
    user: str
    password: str
    sender: str
    ca_file: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig | None:
        """The SMTP server to use, or None when e-mail is not configured."""
        if not settings.notifications.smtp_url:
            return None
        parts, starttls = parse_smtp_url(settings.notifications.smtp_url)
        assert parts.hostname is not None
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            implicit_tls=implicit,
            starttls="never" if implicit else starttls,
            user=unquote(parts.username or "") or settings.notifications.smtp_user,
            password=unquote(parts.password or "") or settings.notifications.smtp_password,
            sender=settings.notifications.mail_from or f"mediaq@{settings.worker.host_id}",
            ca_file=settings.notifications.smtp_ca_file,
        )

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file or None)


@dataclass(frozen=True)
class Templates:
    text: Template
    html: Template

    @classmethod
    def load(cls, folder: Path | None) -> Templates:
        """The built-in templates, each replaced by ``folder``'s file of the same name."""
        def read(name: str) -> Template:
            if folder is not None and (folder / name).is_file():
                return Template((folder / name).read_text(encoding="utf-8"))
            return Template(resources.files("mediaq.notify").joinpath("templates", name)
                            .read_text(encoding="utf-8"))
        return cls(read("email.txt"), read("email.html"))


def template_values(payload: dict[str, Any]) -> dict[str, str]:
    """What the templates may use, as text: ``$job_code``, ``$event``, ``$outputs`` …"""
    job = payload.get("job") or {}
    outputs = (job.get("output_metadata") or {}).get("outputs") or []
    values = {
        "event": str(payload.get("type", "")).removeprefix("job.").replace("_", " "),
        "event_type": str(payload.get("type", "")),
        "event_id": str(payload.get("id", "")),
        "timestamp": str(payload.get("timestamp", "")),
        "job_code": str(job.get("job_code", "")),
        "workflow": str(job.get("workflow_name") or job.get("workflow_code") or ""),
        "status": str(job.get("status", "")),
        "input": str(job.get("input_file_path") or ""),
        "output": str(job.get("output_file_path") or ""),
        "error": str(job.get("error_message") or ""),
        "retries": f"{job.get('retry_count') or 0} of {job.get('max_retries') or 0}",
        "submitted_at": str(job.get("submitted_at") or ""),
        "completed_at": str(job.get("completed_at") or ""),
        "outputs": "\n".join(f"- {o.get('path', '')}" for o in outputs) or "(none)",
    }
    return values


def build_message(config: SmtpConfig, to: str, subject: str, payload: dict[str, Any],
                  templates: Templates) -> EmailMessage:
    values = template_values(payload)
    escaped = {key: html.escape(value) for key, value in values.items()}
    outputs = ((payload.get("job") or {}).get("output_metadata") or {}).get("outputs") or []
    escaped["outputs"] = "".join(f"<li>{html.escape(str(o.get('path', '')))}</li>"
                                 for o in outputs) or "<li>(none)</li>"
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    # The event id: the same on a resend, so mail clients and filters can de-duplicate.
    message["Message-ID"] = f"<{values['event_id'] or 'mediaq'}@mediaq>"
    message.set_content(templates.text.safe_substitute(values))
    message.add_alternative(templates.html.safe_substitute(escaped), subtype="html")
    return message


def send(config: SmtpConfig, message: EmailMessage, timeout: float) -> None:
    """Hand ``message`` to the SMTP server; smtplib's exceptions or OSError on failure."""
    client: smtplib.SMTP
    if config.implicit_tls:
        client = smtplib.SMTP_SSL(config.host, config.port, timeout=timeout,
                                  context=config.tls_context())
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=timeout)
    with client:
        client.ehlo()
        if config.starttls == "always" or (
                config.starttls == "auto" and client.has_extn("starttls")):
            client.starttls(context=config.tls_context())
            client.ehlo()
        if config.user:
            client.login(config.user, config.password)
        client.send_message(message)
