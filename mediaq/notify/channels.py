"""Delivering one notification on its channel, and what the answer means.

Every delivery ends in an :class:`Outcome`: ``sent``; ``retry`` (the endpoint
failed or asked us to wait: network errors, timeouts, 408/425/429, 5xx, SMTP 4xx);
``failed`` (retrying cannot help: other 4xx, redirects, refused targets, SMTP 5xx);
``gone`` (410: the receiver asked us to stop).
"""

from __future__ import annotations

import http.client
import json
import smtplib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import structlog

from mediaq import __version__
from mediaq.config import Settings
from mediaq.errors import TargetRefused
from mediaq.notify import mail
from mediaq.notify.signing import parse_secrets, signed_headers
from mediaq.notify.ssrf import AllowList
from mediaq.notify.transport import HttpAnswer, post

log = structlog.get_logger("mediaq.notify")

Result = Literal["sent", "retry", "failed", "gone"]


@dataclass(frozen=True)
class Outcome:
    result: Result
    detail: str = ""  # one line: what happened
    status_code: int | None = None
    retry_after_s: float | None = None  # the receiver's Retry-After, when it sent one
    endpoint_fault: bool = False  # counts towards the endpoint's circuit breaker


@dataclass(frozen=True)
class Notification:
    """A claimed outbox row."""

    id: int
    event_id: str
    notification_type: str
    recipient: str
    channel: str
    endpoint: str
    subject: str
    payload: dict[str, Any]
    attempts: int

    @property
    def msg_id(self) -> str:
        return str(self.payload.get("id") or f"msg_{self.event_id.replace('-', '')}")


class Channels:
    """Everything a delivery needs from the settings, read once."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.notifications.timeout_seconds
        self.keys = parse_secrets(settings.notifications.webhook_secret)
        self.allow = AllowList.parse(settings.notifications.webhook_allowed_hosts)
        self.smtp = mail.SmtpConfig.from_settings(settings)
        self.templates = mail.Templates.load(settings.notifications.mail_template_dir)
        self.user_agent = f"mediaq/{__version__} (notifications)"

    def deliver(self, note: Notification) -> Outcome:
        try:
            if note.channel == "webhook":
                return self._webhook(note)
            if note.channel == "slack":
                return self._slack(note)
            if note.channel == "email":
                return self._email(note)
            if note.channel == "log":
                log.info("notification", event_type=note.notification_type,
                         recipient=note.recipient, subject=note.subject)
                return Outcome("sent", "written to the log")
            return Outcome("failed", f"unknown channel {note.channel!r}")
        except TargetRefused as exc:
            return Outcome("failed", str(exc))
        except TimeoutError:
            return Outcome("retry", f"no answer within {self.timeout:g} s", endpoint_fault=True)
        except OSError as exc:
            return Outcome("retry", _network_error(exc), endpoint_fault=True)
        except http.client.HTTPException as exc:  # the receiver did not answer in HTTP
            return Outcome("retry", f"bad HTTP answer: {type(exc).__name__} {_one_line(exc)}",
                           endpoint_fault=True)

    # -- channels ----------------------------------------------------------------------

    def _webhook(self, note: Notification) -> Outcome:
        body = json.dumps(note.payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": self.user_agent,
                   **signed_headers(note.msg_id, body, self.keys)}
        return http_outcome(post(note.recipient, body, headers, timeout=self.timeout,
                                 allow=self.allow))

    def _slack(self, note: Notification) -> Outcome:
        body = json.dumps(slack_message(note), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": self.user_agent}
        return http_outcome(post(note.recipient.removeprefix("slack+"), body, headers,
                                 timeout=self.timeout, allow=self.allow))

    def _email(self, note: Notification) -> Outcome:
        if self.smtp is None:
            return Outcome("failed", "e-mail is not configured (set MEDIAQ_SMTP_URL)")
        to = note.recipient.removeprefix("mailto:").split("?")[0]
        message = mail.build_message(self.smtp, to, note.subject, note.payload, self.templates)
        try:
            mail.send(self.smtp, message, self.timeout)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            result: Result = "retry" if codes and all(400 <= c < 500 for c in codes) else "failed"
            return Outcome(result, f"recipient refused: {_smtp_reply(exc.recipients)}",
                           status_code=codes[0] if codes else None)
        except smtplib.SMTPResponseException as exc:
            reply = f"SMTP {exc.smtp_code} {_decode(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500 or isinstance(exc, smtplib.SMTPAuthenticationError):
                return Outcome("retry", reply, status_code=exc.smtp_code, endpoint_fault=True)
            return Outcome("failed", reply, status_code=exc.smtp_code)
        except smtplib.SMTPException as exc:
            return Outcome("retry", f"SMTP: {_one_line(exc)}", endpoint_fault=True)
        return Outcome("sent", f"accepted by {self.smtp.host}:{self.smtp.port}")


def http_outcome(answer: HttpAnswer) -> Outcome:
    status = answer.status
    detail = f"HTTP {status} {answer.reason}".strip()
    if answer.excerpt and not 200 <= status < 300:
        detail += f": {answer.excerpt}"
    if 200 <= status < 300:
        return Outcome("sent", detail, status)
    if status == 410:
        return Outcome("gone", detail, status)
    if status in (408, 425, 429) or status >= 500:
        return Outcome("retry", detail, status, retry_after(answer.headers.get("Retry-After")),
                       endpoint_fault=True)
    if 300 <= status < 400:
        location = answer.headers.get("Location", "?")
        return Outcome("failed", f"HTTP {status} redirect to {location} not followed", status)
    return Outcome("failed", detail, status)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²" or other Unicode digits
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return max(0.0, (moment - current).total_seconds())


def slack_message(note: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: a summary line and the job's essentials."""
    job = note.payload.get("job") or {}
    icon = {"job.completed": ":white_check_mark:", "job.dead_lettered": ":x:",
            "job.failed": ":warning:", "job.retry_scheduled": ":repeat:",
            "job.cancelled": ":no_entry_sign:"}.get(note.notification_type, ":information_source:")
    lines = [f"{icon} *{note.subject}*"]
    if job.get("error_message"):
        lines.append(f"> {job['error_message']}")
    if job.get("output_file_path"):
        lines.append(f"Output: `{job['output_file_path']}`")
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                                  "text": text}}]}


def _network_error(exc: OSError) -> str:
    return f"network error: {exc.strerror or _one_line(exc)}"


def _smtp_reply(recipients: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address}: {code} {_decode(text)}" for address, (code, text)
                     in recipients.items())


def _decode(raw: bytes | str) -> str:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())[:200]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
