"""Notifications delivered for real: a PostgreSQL outbox, `mediaq worker` / `mediaq notifier`
processes, webhook and Slack receivers on 127.0.0.1 (http.server in a thread) and an SMTP
server (aiosmtpd). Webhook signatures are checked with the reference ``standardwebhooks``
library, as a receiver would."""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook, WebhookVerificationError

from mediaq import db
from mediaq.notify.signing import new_secret
from tests.helpers import MEDIAQ, MediaqEnv, diagnostic_workflow, free_port, wait_for

# -- a webhook receiver --------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int = 0  # what the receiver answered
    at: float = 0.0  # when it arrived (time.monotonic())

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


# A responder turns a request into a status, optionally with headers and a body.
Answer = int | tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers per ``respond``."""

    def __init__(self, respond: Callable[[Request], Answer] | None = None, port: int = 0) -> None:
        self.respond: Callable[[Request], Answer] = respond or (lambda request: 200)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                  body, at=time.monotonic())
                with receiver.lock:
                    receiver.requests.append(request)
                answer = receiver.respond(request)
                if isinstance(answer, int):
                    status, headers, content = answer, {}, b"ok"
                elif len(answer) == 2:
                    status, headers, content = answer[0], answer[1], b"ok"
                else:
                    status, headers, content = answer  # type: ignore[misc]
                request.status = status
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the sender is gone (killed, or timed out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def accepted(self) -> list[Request]:
        return [r for r in self.received() if 200 <= r.status < 300]


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(respond: Callable[[Request], Answer] | None = None, port: int = 0) -> Receiver:
        receiver = Receiver(respond, port)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()



def verified(request: Request, secret: str) -> Any:
    """The payload, once ``standardwebhooks`` has verified the request's signature."""
    return Webhook(secret).verify(request.body, request.headers)


# -- driving mediaq --------------------------------------------------------------------------


def configure(mq: MediaqEnv, **settings: str) -> None:
    mq.env.update({f"MEDIAQ_{name.upper()}": value for name, value in settings.items()})


@contextmanager
def notifier(mq: MediaqEnv, name: str = "notifier") -> Iterator[subprocess.Popen[str]]:
    """A `mediaq notifier` process for the block; stopped with SIGTERM afterwards."""
    with (mq.root / f"{name}.log").open("w") as log:
        proc = subprocess.Popen([*MEDIAQ, "notifier"], env=mq.env, text=True, stdout=log,
                                stderr=subprocess.STDOUT)
    mq.workers.append(proc)  # the fixture stops it whatever happens
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def deliver_until_idle(mq: MediaqEnv) -> str:
    return mq.cli("notifier", "--until-idle").stdout


def outbox_job(mq: MediaqEnv, *recipients: str, name: str = "a.bin") -> dict[str, Any]:
    """A job (never run) whose own notify list is ``recipients``."""
    if not mq.query("SELECT 1 FROM workflow_definitions WHERE workflow_code = 'T-NOTE'"):
        mq.apply_workflow(diagnostic_workflow("T-NOTE", {"action": "noop"}))
    return mq.one("SELECT * FROM submit_job('T-NOTE', %s, notify => %s)",
                  (str(mq.input_file(name)), list(recipients)))


def write_events(mq: MediaqEnv, job: dict[str, Any], count: int = 1,
                 event: str = "job.completed") -> list[dict[str, Any]]:
    """``count`` events of ``job`` written to the outbox as the triggers write them; the
    job's rows."""
    mq.query("SELECT write_event_notifications(j, %s) FROM workflow_jobs j, "
             "generate_series(1, %s) WHERE j.id = %s", (event, count, job["id"]))
    return rows_of(mq, job)


def rows_of(mq: MediaqEnv, job: dict[str, Any]) -> list[dict[str, Any]]:
    return mq.query("SELECT * FROM workflow_notifications WHERE job_id = %s ORDER BY id",
                    (job["id"],))


def row(mq: MediaqEnv, notification_id: int) -> dict[str, Any]:
    return mq.one("SELECT * FROM workflow_notifications WHERE id = %s", (notification_id,))


def endpoint(mq: MediaqEnv, name: str) -> dict[str, Any]:
    rows = mq.query("SELECT * FROM notification_endpoints WHERE endpoint = %s", (name,))
    return rows[0] if rows else {}


def msg_ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["payload"]["id"] for r in rows}


# -- signatures, envelope, rotation ------------------------------------------------------------


@pytest.mark.slow
def test_completed_job_webhook_is_signed_and_verifies_during_rotation(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    new, old = new_secret(), new_secret()
    configure(mq, webhook_secret=f"{new},{old}", webhook_allowed_hosts="127.0.0.1")
    receiver = receivers()
    mq.apply_workflow(diagnostic_workflow("T-SIGNED", {"action": "noop"}, {"action": "noop"}))
    code = mq.submit("T-SIGNED", mq.input_file("a.bin"), "--notify", receiver.url("/in?k=1"))
    mq.run_burst()

    [request] = receiver.received()
    assert request.path == "/in?k=1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("mediaq/")
    # a receiver that knows only the new secret, or only the old one, verifies it
    body = verified(request, new)
    assert verified(request, old) == body
    with pytest.raises(WebhookVerificationError):
        verified(request, new_secret())
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(request.body.replace(b"completed", b"cancelled"), request.headers)

    # the envelope: event id (= webhook-id), type, timestamp, API version, the job
    assert body["id"] == request.id and body["id"].startswith("msg_")
    assert body["type"] == "job.completed"
    assert body["api_version"] == "1"
    stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)
    job = body["job"]
    db_job = mq.job(code)
    assert job["job_code"] == code and job["id"] == db_job["id"]
    assert job["workflow_code"] == "T-SIGNED" and job["status"] == "completed"
    assert job["progress_percent"] == 100 and job["completed_at"]
    assert job["output_metadata"] == db_job["output_metadata"]
    assert job["output_metadata"] and job["input_file_path"] == db_job["input_file_path"]

    [note] = mq.query("SELECT * FROM workflow_notifications WHERE job_id = %s", (db_job["id"],))
    assert (note["status"], note["attempts"], note["last_status_code"]) == ("sent", 1, 200)
    assert note["payload"]["id"] == request.id and note["error_message"] is None


def test_webhooks_verify_command(mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    secret = new_secret()
    configure(mq, webhook_secret=secret, webhook_allowed_hosts="127.0.0.1")
    receiver = receivers()
    write_events(mq, outbox_job(mq, receiver.url()))
    deliver_until_idle(mq)
    [request] = receiver.received()
    good = mq.root / "body.json"
    good.write_bytes(request.body)
    tampered = mq.root / "tampered.json"
    tampered.write_bytes(request.body.replace(b'"pending"', b'"completed"'))
    assert tampered.read_bytes() != good.read_bytes()
    header_options = ["--id", request.id, "--timestamp", request.headers["webhook-timestamp"],
                      "--signature", request.headers["webhook-signature"]]

    ok = mq.cli("webhooks", "verify", *header_options, str(good))  # secret from the setting
    assert ok.stdout.strip() == "valid"
    rotated = mq.cli("webhooks", "verify", *header_options, "--secret",
                     f"{new_secret()},{secret}", str(good))
    assert rotated.stdout.strip() == "valid"
    bad = mq.cli("webhooks", "verify", *header_options, str(tampered), check=False)
    assert bad.returncode == 1 and "invalid: no signature matches" in bad.stderr
    other = mq.cli("webhooks", "verify", *header_options, "--secret", new_secret(), str(good),
                   check=False)
    assert other.returncode == 1 and "invalid" in other.stderr
    stale = subprocess.run(
        [*MEDIAQ, "webhooks", "verify", "--id", request.id, "--timestamp",
         str(int(time.time()) - 3600), "--signature", request.headers["webhook-signature"]],
        input=request.body, env=mq.env, capture_output=True, timeout=60)
    assert stale.returncode == 1 and b"more than 300 s" in stale.stderr


# -- a receiver that is down, then failing, then back ----------------------------------------


@pytest.mark.slow
def test_receiver_down_then_failing_then_back_gets_every_event_once(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    secret = new_secret()
    configure(mq, webhook_secret=secret, webhook_allowed_hosts="127.0.0.1",
              notify_retry_schedule="0,1,1,1,1,1,1,1,1,1,1,1", breaker_threshold="1000")
    port = free_port()  # nothing listens here yet: connections are refused
    job = outbox_job(mq, f"http://127.0.0.1:{port}/hook")
    rows = write_events(mq, job, 6)
    ids = msg_ids(rows)
    assert len(ids) == 6

    with notifier(mq):
        # down: every row is tried, fails with the network error and waits
        wait_for(lambda: all(r["attempts"] >= 2 for r in rows_of(mq, job)), timeout=30,
                 message="two attempts at every row while the receiver is down")
        for waiting in rows_of(mq, job):
            assert waiting["status"] in ("pending", "sending")
            assert waiting["error_message"] and "network error" in waiting["error_message"]
        # up but failing: 503 until every event has been offered at least once
        failing = True
        receiver = receivers(lambda request: 503 if failing else 204, port=port)
        wait_for(lambda: {r.id for r in receiver.received()} >= ids, timeout=30,
                 message="every event offered to the failing receiver")
        wait_for(lambda: any(r["last_status_code"] == 503
                             and "HTTP 503" in (r["error_message"] or "")
                             for r in rows_of(mq, job)), timeout=30, message="a 503 recorded")
        failing = False
        wait_for(lambda: all(r["status"] == "sent" for r in rows_of(mq, job)), timeout=30,
                 message="every row sent once the receiver is back")

    accepted = Counter(r.id for r in receiver.accepted())
    assert set(accepted) == ids and set(accepted.values()) == {1}  # each event exactly once
    assert {r.id for r in receiver.received()} == ids  # retries reuse the event's id
    for request in receiver.received():
        assert verified(request, secret)["id"] == request.id  # every attempt is signed
    for sent in rows_of(mq, job):
        assert sent["attempts"] >= 3 and sent["last_status_code"] == 204
        assert sent["error_message"] is None and sent["sent_at"] is not None


@pytest.mark.parametrize("retry_after", ["2", "http-date"])
def test_retry_after_is_honoured(mq: MediaqEnv, receivers: Callable[..., Receiver],
                                 retry_after: str) -> None:
    configure(mq, webhook_allowed_hosts="127.0.0.1", notify_retry_schedule="0,0,0")

    def respond(request: Request) -> Answer:
        if len(receiver.received()) > 1:
            return 200
        value = retry_after if retry_after.isdigit() else format_datetime(
            datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
        return 429, {"Retry-After": value}

    receiver = receivers(respond)
    [note] = write_events(mq, outbox_job(mq, receiver.url()))
    deliver_until_idle(mq)  # one attempt, then nothing is due: the notifier exits
    waiting = row(mq, note["id"])
    assert (waiting["status"], waiting["attempts"], waiting["last_status_code"]) == (
        "pending", 1, 429)
    assert "HTTP 429" in waiting["error_message"]
    # the schedule says "retry at once"; the receiver asked for 2 s or more
    assert waiting["next_attempt_at"] - waiting["last_attempt_at"] >= timedelta(seconds=2)

    wait_for(lambda: mq.one("SELECT next_attempt_at <= now() AS due FROM workflow_notifications"
                            " WHERE id = %s", (note["id"],))["due"], timeout=10, interval=0.2)
    deliver_until_idle(mq)
    assert row(mq, note["id"])["status"] == "sent"
    first, second = receiver.received()
    assert (first.status, second.status) == (429, 200) and first.id == second.id
    assert second.at - first.at >= 2  # never earlier than the receiver asked


# -- a notifier killed mid-delivery ------------------------------------------------------------


@pytest.mark.slow
def test_notifier_killed_mid_delivery_loses_nothing(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    secret = new_secret()
    configure(mq, webhook_secret=secret, webhook_allowed_hosts="127.0.0.1",
              notify_timeout_seconds="1", notify_retry_schedule="0,1,1,1,1")
    seen_once: set[str] = set()

    def respond(request: Request) -> Answer:
        if request.id not in seen_once:  # hold the first delivery of each event
            seen_once.add(request.id)
            time.sleep(3)
        return 200

    receiver = receivers(respond)
    job = outbox_job(mq, receiver.url())
    ids = msg_ids(write_events(mq, job, 3))

    with notifier(mq, "first") as first:
        wait_for(lambda: {r.id for r in receiver.received()} == ids, timeout=30,
                 message="all three deliveries in flight")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    held = rows_of(mq, job)
    # the kill landed mid-delivery: the rows are still held by the dead notifier
    assert {r["status"] for r in held} == {"sending"}
    assert all(r["locked_by"] and r["locked_until"] for r in held)

    with notifier(mq, "second"):
        wait_for(lambda: all(r["status"] == "sent" for r in rows_of(mq, job)), timeout=40,
                 message="the second notifier delivering the held rows")
    received = Counter(r.id for r in receiver.received())
    assert set(received) == ids and all(count >= 2 for count in received.values())
    assert {r.id for r in receiver.accepted()} == ids
    for request in receiver.received():
        verified(request, secret)
    for sent in rows_of(mq, job):
        assert sent["attempts"] == 2 and sent["locked_by"] is None
        assert sent["last_status_code"] == 200


# -- e-mail and Slack ----------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


@pytest.mark.slow
def test_email_for_completed_and_dead_lettered_jobs(mq: MediaqEnv,
                                                    mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    configure(mq, smtp_url=f"smtp://127.0.0.1:{port}", mail_from="Media Queue <mq@example.org>")
    mq.apply_workflow(diagnostic_workflow("T-MAIL", {"action": "noop"},
                                          workflow_name="Thumbnails"))
    mq.apply_workflow(diagnostic_workflow(
        "T-MAIL-BAD", {"action": "fail", "parameters": {"message": "codec <x> missing"}},
        workflow_name="Transcode"))
    good = mq.submit("T-MAIL", mq.input_file("a.bin"), "--notify", "mailto:ops@example.com")
    bad = mq.submit("T-MAIL-BAD", mq.input_file("b.bin"), "--notify", "dev@example.com")
    mq.run_burst()

    by_subject = {m.get("Subject"): (sender, to, m) for sender, to, m in box.messages}
    assert set(by_subject) == {f"Thumbnails {good}: completed",
                               f"Transcode {bad}: dead lettered"}
    sender, to, message = by_subject[f"Thumbnails {good}: completed"]
    assert (sender, to) == ("mq@example.org", ["ops@example.com"])
    assert message["From"] == "Media Queue <mq@example.org>"
    assert message["To"] == "ops@example.com"
    text, html = parts(message)
    assert f"Job {good} (Thumbnails): completed" in text and "Status:    completed" in text
    assert good in html and "completed" in html and html.lstrip().startswith("<!DOCTYPE html>")

    _, to, message = by_subject[f"Transcode {bad}: dead lettered"]
    assert to == ["dev@example.com"]
    text, html = parts(message)
    assert bad in text and "Status:    failed" in text and "codec <x> missing" in text
    assert bad in html and "codec &lt;x&gt; missing" in html
    # the job's own e-mail recipients hear about outcomes only: no job.failed mail
    notes = mq.query("SELECT notification_type, status, last_status_code "
                     "FROM workflow_notifications WHERE channel = 'email' "
                     "ORDER BY notification_type")  # the two jobs end in either order
    assert notes == [
        {"notification_type": "job.completed", "status": "sent", "last_status_code": None},
        {"notification_type": "job.dead_lettered", "status": "sent", "last_status_code": None}]


def test_email_without_smtp_settings_fails_with_a_clear_error(mq: MediaqEnv) -> None:
    [note] = write_events(mq, outbox_job(mq, "mailto:ops@example.com"))
    deliver_until_idle(mq)
    failed = row(mq, note["id"])
    assert failed["status"] == "failed"
    assert failed["error_message"] == "e-mail is not configured (set MEDIAQ_SMTP_URL)"


@pytest.mark.slow
def test_slack_message_names_the_job(mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    configure(mq, webhook_allowed_hosts="127.0.0.1", webhook_secret=new_secret())
    receiver = receivers()
    mq.apply_workflow(diagnostic_workflow("T-SLACK", {"action": "noop"},
                                          workflow_name="Posters"))
    slack = f"slack+{receiver.url('/services/T000/B000/XXXX')}"
    code = mq.submit("T-SLACK", mq.input_file("a.bin"), "--notify", slack)
    mq.run_burst()

    [request] = receiver.received()
    assert request.path == "/services/T000/B000/XXXX"
    assert request.headers["content-type"] == "application/json"
    assert "webhook-signature" not in request.headers  # Slack gets no Standard Webhooks headers
    message = request.json()
    assert message["text"] == f":white_check_mark: *Posters {code}: completed*"
    assert message["blocks"] == [{"type": "section",
                                  "text": {"type": "mrkdwn", "text": message["text"]}}]
    listed = json.loads(mq.cli("notifications", "--json").stdout)
    assert [(n["channel"], n["status"], n["recipient"]) for n in listed] == [
        ("slack", "sent", f"slack+http://127.0.0.1:{receiver.port}/***")]  # path is a secret


# -- the SSRF guard ------------------------------------------------------------------------------


def test_ssrf_guard_refuses_private_targets_and_never_follows_redirects(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    def respond(request: Request) -> Answer:
        if request.path == "/moved":
            return 302, {"Location": "http://10.0.0.1/steal"}
        return 200

    receiver = receivers(respond)
    metadata = write_events(mq, outbox_job(mq, "http://169.254.169.254/latest/meta-data/",
                                           name="a.bin"))[0]
    by_name = write_events(mq, outbox_job(mq, receiver.url(host="localhost"), name="b.bin"))[0]
    moved = write_events(mq, outbox_job(mq, receiver.url("/moved"), name="c.bin"))[0]
    by_cidr = write_events(mq, outbox_job(mq, receiver.url("/ok"), name="d.bin"))[0]

    deliver_until_idle(mq)  # nothing allowed: all refused before connecting, not retried
    assert receiver.received() == []
    expected = {
        metadata["id"]: "169.254.169.254 resolves to 169.254.169.254, a cloud metadata address;"
                        " refused (allow it with MEDIAQ_WEBHOOK_ALLOWED_HOSTS)",
        by_name["id"]: "localhost resolves to 127.0.0.1, a loopback address; refused (allow it"
                       " with MEDIAQ_WEBHOOK_ALLOWED_HOSTS)",
        moved["id"]: "127.0.0.1 resolves to 127.0.0.1, a loopback address; refused (allow it"
                     " with MEDIAQ_WEBHOOK_ALLOWED_HOSTS)",
    }
    for notification_id, error in expected.items():
        refused = row(mq, notification_id)
        assert (refused["status"], refused["attempts"], refused["error_message"]) == (
            "failed", 1, error)
    failed = mq.cli("notifications", "--status", "failed").stdout
    assert "cloud metadata" in failed and "loopback" in failed

    # the operator allows the local receiver by name and by CIDR, and sends them again
    configure(mq, webhook_allowed_hosts="localhost, 127.0.0.0/8")
    mq.cli("notifications", "retry", str(by_name["id"]), str(moved["id"]), str(metadata["id"]))
    deliver_until_idle(mq)
    assert row(mq, by_name["id"])["status"] == "sent"
    assert row(mq, by_cidr["id"])["status"] == "failed"  # refused in the first run
    assert "cloud metadata" in row(mq, metadata["id"])["error_message"]  # still refused
    redirected = row(mq, moved["id"])
    assert (redirected["status"], redirected["attempts"], redirected["last_status_code"]) == (
        "failed", 1, 302)
    assert redirected["error_message"] == \
        "HTTP 302 redirect to http://10.0.0.1/steal not followed"
    assert sorted(r.path for r in receiver.received()) == ["/hook", "/moved"]  # no /steal
    mq.cli("notifications", "retry", str(by_cidr["id"]))
    deliver_until_idle(mq)
    assert row(mq, by_cidr["id"])["status"] == "sent"


# -- permanent answers: 410 Gone, 400 --------------------------------------------------------


def test_gone_disables_the_endpoint_until_an_operator_retries(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    configure(mq, webhook_allowed_hosts="127.0.0.1", notify_concurrency="1")
    gone = True
    receiver = receivers(lambda request: 410 if gone else 200)
    job = outbox_job(mq, receiver.url())
    first, waiting = write_events(mq, job, 2)
    deliver_until_idle(mq)
    name = f"http://127.0.0.1:{receiver.port}"
    assert endpoint(mq, name)["state"] == "disabled"
    assert len(receiver.received()) == 1
    told = row(mq, first["id"])
    assert (told["status"], told["attempts"], told["last_status_code"]) == ("failed", 1, 410)
    assert told["error_message"].startswith("endpoint disabled: HTTP 410 Gone")
    assert row(mq, waiting["id"])["status"] == "failed"  # the rows waiting for it fail too
    assert "endpoint disabled" in row(mq, waiting["id"])["error_message"]

    [later] = write_events(mq, job)[2:]  # a later event for the disabled endpoint
    deliver_until_idle(mq)
    not_sent = row(mq, later["id"])
    assert not_sent["status"] == "failed" and len(receiver.received()) == 1
    assert f"endpoint {name} is disabled" in not_sent["error_message"]
    assert "mediaq notifications retry" in not_sent["error_message"]

    gone = False
    out = mq.cli("notifications", "retry", str(later["id"])).stdout
    assert "1 notification(s) due again" in out
    assert endpoint(mq, name)["state"] == "closed"
    assert row(mq, later["id"])["status"] == "pending"
    deliver_until_idle(mq)
    assert row(mq, later["id"])["status"] == "sent"
    assert [r.id for r in receiver.accepted()] == [later["payload"]["id"]]
    # only failed or waiting rows can be retried
    again = mq.cli("notifications", "retry", str(later["id"]), check=False)
    assert again.returncode == 1
    assert f"notification {later['id']} does not exist or is not failed or pending" \
        in again.stderr


def test_bad_request_fails_after_one_attempt(mq: MediaqEnv,
                                            receivers: Callable[..., Receiver]) -> None:
    configure(mq, webhook_allowed_hosts="127.0.0.1", notify_retry_schedule="0,0,0")
    receiver = receivers(lambda request: (400, {}, b'{"error": "unknown event type"}'))
    [note] = write_events(mq, outbox_job(mq, receiver.url()))
    deliver_until_idle(mq)
    failed = row(mq, note["id"])
    assert (failed["status"], failed["attempts"], failed["last_status_code"]) == (
        "failed", 1, 400)
    assert failed["error_message"] == 'HTTP 400 Bad Request: {"error": "unknown event type"}'
    assert len(receiver.received()) == 1
    # a receiver that answers is healthy: no breaker counts against it
    assert endpoint(mq, f"http://127.0.0.1:{receiver.port}").get("consecutive_failures", 0) == 0

    listed = json.loads(mq.cli("notifications", "--status", "failed", "--json").stdout)
    assert [(n["id"], n["status"], n["attempts"], n["last_status_code"]) for n in listed] == [
        (note["id"], "failed", 1, 400)]
    assert listed[0]["error_message"] == failed["error_message"]
    assert listed[0]["event_id"] == str(note["event_id"])
    assert json.loads(mq.cli("notifications", "--status", "sent", "--json").stdout) == []
    table = mq.cli("notifications", "--status", "failed").stdout
    assert "job.completed" in table and "400" in table


# -- the circuit breaker -----------------------------------------------------------------------


@pytest.mark.slow
def test_circuit_breaker_opens_probes_once_and_closes(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    # One delivery at a time, so the state a request sees is the state it was sent under
    # (with several in flight, a slow one can arrive after the others opened the breaker).
    configure(mq, webhook_allowed_hosts="127.0.0.1", breaker_threshold="3",
              breaker_cooldown_seconds="3", notify_retry_schedule="1,1,1,1,1,1,1,1",
              notify_concurrency="1")
    failing = True
    seen_states: list[tuple[str, int]] = []

    def respond(request: Request) -> Answer:
        # what the breaker said while this request was out (committed before it was sent)
        state = endpoint(mq, name).get("state", "closed")
        status = 503 if failing else 200
        seen_states.append((state, status))
        return status

    receiver = receivers(respond)
    name = f"http://127.0.0.1:{receiver.port}"
    job = outbox_job(mq, receiver.url())
    write_events(mq, job, 5)

    with notifier(mq):
        opened = wait_for(lambda: endpoint(mq, name).get("state") == "open"
                          and endpoint(mq, name), timeout=30, message="the breaker opening")
        failing = False
        assert opened["consecutive_failures"] >= 3 and opened["times_opened"] == 1
        assert "HTTP 503" in opened["last_error"]
        # open for the cool-down, counted from the failure that opened it
        assert opened["open_until"] <= opened["last_failure_at"] + timedelta(seconds=3)
        stats = subprocess.run([*MEDIAQ, "stats"], env={**mq.env, "COLUMNS": "250"},
                               capture_output=True, text=True, timeout=60).stdout
        [line] = [line for line in stats.splitlines() if name in line]
        assert "open" in line and "HTTP 503" in line
        assert "Notification endpoints (circuit breakers)" in stats
        wait_for(lambda: all(r["status"] == "sent" for r in rows_of(mq, job)), timeout=40,
                 message="every row sent after the breaker closed")
    assert endpoint(mq, name)["state"] == "closed"
    assert endpoint(mq, name)["consecutive_failures"] == 0
    failures = [s for s in seen_states if s[1] == 503]
    assert len(failures) >= 3 and all(state == "closed" for state, _ in failures)
    successes = [state for state, status in seen_states if status == 200]
    # after the cool-down exactly one probe went out; the rest followed once it succeeded
    assert successes.count("half_open") == 1 and "open" not in successes
    assert successes[0] == "half_open" and successes[1:] == ["closed"] * 4


def test_breaker_cool_down_doubles_only_when_a_probe_fails(mq: MediaqEnv) -> None:
    """The breaker's statements on their own: failures that were in flight when it opened
    do not lengthen the cool-down; a failed probe doubles it; a success closes it."""
    name = "https://hooks.example"
    args = {"endpoint": name, "error": "HTTP 503", "threshold": 3, "cooldown_s": 10}

    def cool_down_s(state: dict[str, Any]) -> float:
        return float((state["open_until"] - state["last_failure_at"]).total_seconds())

    with db.connect(mq.url, autocommit=True) as conn:
        def fail() -> dict[str, Any]:
            db.fetch_one(conn, "endpoint_failed", args)
            return endpoint(mq, name)

        assert [fail()["state"] for _ in range(2)] == ["closed", "closed"]
        opened = fail()
        assert (opened["state"], opened["times_opened"]) == ("open", 1)
        assert 9.9 < cool_down_s(opened) <= 10
        late = fail()  # a delivery that was in flight when it opened
        assert (late["state"], late["times_opened"], late["open_until"]) == (
            "open", 1, opened["open_until"])
        assert db.fetch_one(conn, "endpoint_take_probe", {"endpoint": name, "hold_s": 5}) \
            is None  # still cooling down
        mq.query("UPDATE notification_endpoints SET open_until = now() - interval '1 s'")
        assert db.fetch_one(conn, "endpoint_take_probe", {"endpoint": name, "hold_s": 5})
        assert db.fetch_one(conn, "endpoint_take_probe", {"endpoint": name, "hold_s": 5}) \
            is None  # one probe at a time
        assert endpoint(mq, name)["state"] == "half_open"
        reopened = fail()  # the probe failed
        assert (reopened["state"], reopened["times_opened"]) == ("open", 2)
        assert 19.9 < cool_down_s(reopened) <= 20
        db.execute(conn, "endpoint_succeeded", {"endpoint": name})
        closed = endpoint(mq, name)
        assert (closed["state"], closed["consecutive_failures"], closed["times_opened"],
                closed["open_until"]) == ("closed", 0, 0, None)


def commits(mq: MediaqEnv) -> int:
    return int(mq.one("SELECT xact_commit FROM pg_stat_database "
                      "WHERE datname = current_database()")["xact_commit"])


@pytest.mark.slow
def test_waiting_notifier_does_not_hammer_the_database(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    """While its only delivery slot is busy, or an open breaker holds due rows back, the
    notifier waits instead of querying in a loop; other endpoints are served meanwhile."""
    configure(mq, webhook_allowed_hosts="127.0.0.1", notify_concurrency="1")
    slow = receivers(lambda request: time.sleep(2.5) or 200)
    down = "http://127.0.0.1:9"
    held = write_events(mq, outbox_job(mq, f"{down}/hook", name="a.bin"), 2)
    mq.query("INSERT INTO notification_endpoints (endpoint, state, times_opened, open_until) "
             "VALUES (%s, 'open', 1, now() + interval '1 hour')", (down,))
    job = outbox_job(mq, slow.url(), name="b.bin")
    write_events(mq, job, 2)

    with notifier(mq):
        wait_for(lambda: slow.received(), timeout=20, message="the first slow delivery")
        before = commits(mq)
        time.sleep(2)
        slot_busy = commits(mq) - before
        wait_for(lambda: all(r["status"] == "sent" for r in rows_of(mq, job)), timeout=30,
                 message="the slow receiver's rows sent one at a time")
        before = commits(mq)
        time.sleep(2)
        breaker_open = commits(mq) - before
    # polling every half second takes a few statements a second; spinning took thousands
    assert slot_busy < 200, f"{slot_busy} transactions in 2 s waiting for a free slot"
    assert breaker_open < 200, f"{breaker_open} transactions in 2 s waiting for a breaker"
    for waiting in held:  # never tried while the breaker is open
        assert (row(mq, waiting["id"])["status"], row(mq, waiting["id"])["attempts"]) == (
            "pending", 0)


# -- which events are written ------------------------------------------------------------------


def types_of(mq: MediaqEnv, code: str, recipient: str | None = None) -> list[str]:
    return [r["notification_type"] for r in mq.query(
        "SELECT n.notification_type FROM workflow_notifications n JOIN workflow_jobs j "
        "ON j.id = n.job_id WHERE j.job_code = %s AND (%s::text IS NULL OR n.recipient = %s) "
        "ORDER BY n.id", (code, recipient, recipient))]


@pytest.mark.slow
def test_events_of_retried_dead_lettered_and_opted_in_jobs(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    secret = new_secret()
    configure(mq, webhook_allowed_hosts="127.0.0.1", webhook_secret=secret)
    receiver = receivers()
    own, watcher, everyone = receiver.url("/own"), receiver.url("/watch"), receiver.url("/all")
    mq.query("INSERT INTO settings (key, value) VALUES ('notify_default', %s)",
             (json.dumps({"job.dead_lettered": [everyone]}),))
    mq.apply_workflow(diagnostic_workflow(
        "T-FLAKY", {"action": "fail", "parameters": {"kind": "transient", "times": 1}}))
    mq.apply_workflow(diagnostic_workflow(
        "T-DEAD", {"action": "fail", "parameters": {"kind": "transient",
                                                     "message": "disk on fire"}},
        retry_count=1))
    mq.apply_workflow(diagnostic_workflow(
        "T-WATCHED", *[{"action": "noop"}] * 4,
        notify={"job.started": [watcher], "job.progress": [watcher]}))
    flaky = mq.submit("T-FLAKY", mq.input_file("a.bin"), "--notify", own)
    dead = mq.submit("T-DEAD", mq.input_file("b.bin"), "--notify", own)
    watched = mq.submit("T-WATCHED", mq.input_file("c.bin"), "--notify", own)
    mq.run_burst()
    assert [mq.job(c)["status"] for c in (flaky, dead, watched)] == [
        "completed", "failed", "completed"]

    assert types_of(mq, flaky) == ["job.failed", "job.retry_scheduled", "job.completed"]
    assert types_of(mq, dead, own) == ["job.failed", "job.retry_scheduled",
                                       "job.failed", "job.dead_lettered"]
    assert types_of(mq, dead, everyone) == ["job.dead_lettered"]  # the global default
    # started and progress only where opted in (the workflow's watcher, not the job's own)
    assert types_of(mq, watched, own) == ["job.completed"]
    assert types_of(mq, watched, watcher) == ["job.started"] + ["job.progress"] * 3

    # every row delivered, each once, signed, with its own event id
    rows = mq.query("SELECT * FROM workflow_notifications ORDER BY id")
    assert {r["status"] for r in rows} == {"sent"}
    payloads = {r.id: verified(r, secret) for r in receiver.received()}
    assert len(receiver.received()) == len(rows) == len(payloads)
    assert set(payloads) == msg_ids(rows)
    by_type = Counter((r.path, payloads[r.id]["type"]) for r in receiver.received())
    assert by_type == Counter({
        ("/own", "job.failed"): 3, ("/own", "job.retry_scheduled"): 2,
        ("/own", "job.completed"): 2, ("/own", "job.dead_lettered"): 1,
        ("/all", "job.dead_lettered"): 1, ("/watch", "job.started"): 1,
        ("/watch", "job.progress"): 3})
    progress = sorted(p["milestone"] for p in payloads.values() if p["type"] == "job.progress")
    assert progress == [25, 50, 75]
    scheduled = [p["job"] for p in payloads.values() if p["type"] == "job.retry_scheduled"]
    assert all(j["will_retry"] and j["retry_count"] >= 1 and j["retry_after"]
               for j in scheduled)
    [last_word] = [p["job"] for p in payloads.values() if p["type"] == "job.dead_lettered"
                   and p["job"]["job_code"] == dead][:1]
    assert last_word["dead_letter"] and "disk on fire" in last_word["error_message"]
    assert last_word["status"] == "failed" and last_word["retry_count"] == 1


# -- throughput ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_thousand_notifications_in_one_notifier_run(
        mq: MediaqEnv, receivers: Callable[..., Receiver]) -> None:
    configure(mq, webhook_allowed_hosts="127.0.0.1", webhook_secret=new_secret(),
              notify_retry_schedule="0,0,0")
    receiver = receivers(lambda request: 204)
    job = outbox_job(mq, receiver.url())
    ids = msg_ids(write_events(mq, job, 1000))
    assert len(ids) == 1000

    started = time.monotonic()
    out = deliver_until_idle(mq)
    elapsed = time.monotonic() - started
    assert "after 1000 notification(s)" in out

    counts = mq.query("SELECT status, count(*)::int AS n FROM workflow_notifications "
                      "GROUP BY status")
    assert counts == [{"status": "sent", "n": 1000}]
    accepted = Counter(r.id for r in receiver.accepted())
    assert set(accepted) == ids and set(accepted.values()) == {1}
    span = mq.one("SELECT extract(epoch FROM max(sent_at) - min(last_attempt_at))::float AS s "
                  "FROM workflow_notifications")["s"]
    print(f"\n1000 notifications: {1000 / span:.0f}/s delivering ({span:.2f} s), "
          f"{1000 / elapsed:.0f}/s for the whole `mediaq notifier --until-idle` run "
          f"({elapsed:.2f} s with start-up)")
