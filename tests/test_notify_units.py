"""Notifications, piece by piece: the SSRF guard's address classification, Standard
Webhooks signatures (checked against the reference ``standardwebhooks`` library), the
retry schedule and its jitter, Retry-After parsing, what an HTTP answer means, the
e-mail and Slack messages, and how a recipient maps to its circuit-breaker endpoint."""

from __future__ import annotations

import base64
import ipaddress
import random
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from mediaq.config import Settings
from mediaq.errors import ConfigError, SignatureError, TargetRefused
from mediaq.notify import mail
from mediaq.notify.channels import (
    Channels,
    Notification,
    http_outcome,
    retry_after,
    slack_message,
)
from mediaq.notify.notifier import JITTER, MAX_RETRY_AFTER_S, parse_schedule, retry_delay
from mediaq.notify.outbox import shown_recipient
from mediaq.notify.signing import (
    new_secret,
    parse_secrets,
    sign,
    signed_headers,
    verify,
)
from mediaq.notify.ssrf import AllowList, permitted, resolve, why_forbidden
from mediaq.notify.transport import HttpAnswer, post

ip = ipaddress.ip_address


# -- the SSRF guard: which addresses are refused, and why -----------------------------------


@pytest.mark.parametrize(("address", "reason"), [
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("127.0.0.1", "a loopback address"),
    ("127.9.9.9", "a loopback address"),
    ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("169.254.10.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("::ffff:10.1.2.3", "a private address"),
    ("fc00::1", "a private address"),
    ("100.64.0.1", "not a public address"),  # shared address space (carrier-grade NAT)
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
])
def test_non_public_addresses_are_refused_with_the_reason(address: str, reason: str) -> None:
    assert why_forbidden(ip(address)) == reason


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "240.0.0.1", "192.0.2.10", "198.18.0.1",
                                     "2001:db8::1", "64:ff9b::a00:1"])
def test_unspecified_reserved_and_documentation_addresses_are_refused(address: str) -> None:
    assert why_forbidden(ip(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34",
                                     "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert why_forbidden(ip(address)) is None


@given(st.ip_addresses(v=4))
def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_address(address: ipaddress.IPv4Address
                                                               ) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert why_forbidden(mapped) == why_forbidden(address)
    if why_forbidden(address) is None:
        assert address.is_global and not address.is_multicast


@pytest.mark.parametrize("address, reason", [
    ("2002:a00:1::", "a private address inside an IPv6 address"),  # 6to4 of 10.0.0.1
    ("2002:7f00:1::", "a loopback address inside an IPv6 address"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::", "a cloud metadata address inside an IPv6 address"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "a private address inside an IPv6 address"),
])
def test_ipv4_tunnelled_in_ipv6_is_judged_as_the_ipv4_it_reaches(address: str,
                                                                 reason: str) -> None:
    assert why_forbidden(ip(address)) == reason


@given(st.ip_addresses())
def test_every_passing_address_is_global(address: ipaddress.IPv4Address | ipaddress.IPv6Address
                                         ) -> None:
    if why_forbidden(address) is None:
        assert not (address.is_loopback or address.is_private or address.is_link_local
                    or address.is_multicast or address.is_unspecified)


def test_allow_list_takes_hosts_domains_and_cidrs() -> None:
    allow = AllowList.parse(" 127.0.0.1, 10.0.0.0/8 , Hooks.Internal, *.corp.example, fd00::/8,")
    assert permitted("x", ip("127.0.0.1"), allow) is None
    assert permitted("x", ip("10.200.3.4"), allow) is None
    assert permitted("x", ip("fd12::1"), allow) is None
    assert permitted("hooks.internal.", ip("192.168.0.9"), allow) is None
    assert permitted("HOOKS.internal", ip("192.168.0.9"), allow) is None
    assert permitted("a.b.corp.example", ip("172.16.0.1"), allow) is None
    # neither the named host nor inside a CIDR: refused, saying how to allow it
    refusal = permitted("corp.example.evil", ip("172.16.0.1"), allow)
    assert refusal == ("corp.example.evil resolves to 172.16.0.1, a private address; refused "
                       "(allow it with MEDIAQ_WEBHOOK_ALLOWED_HOSTS)")
    assert permitted("x", ip("127.0.0.2"), allow) is not None
    # a public address needs no allowing
    assert permitted("example.com", ip("93.184.216.34"), AllowList()) is None


@pytest.mark.parametrize("bad", ["not a host!", "http://x", "10.0.0.0/33x"])
def test_allow_list_refuses_what_is_neither_host_nor_cidr(bad: str) -> None:
    with pytest.raises(ConfigError, match="webhook_allowed_hosts"):
        AllowList.parse(bad)


def test_resolve_refuses_a_name_for_loopback_unless_allowed() -> None:
    with pytest.raises(TargetRefused, match=r"localhost resolves to 127\.0\.0\.1, a loopback"):
        resolve("localhost", 80, AllowList())
    assert ip("127.0.0.1") in resolve("localhost", 80, AllowList.parse("localhost"))
    assert resolve("127.0.0.1", 80, AllowList.parse("127.0.0.0/8")) == [ip("127.0.0.1")]
    with pytest.raises(TargetRefused, match="cloud metadata"):
        resolve("169.254.169.254", 80, AllowList.parse("127.0.0.1"))


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/x", "not an http(s) URL"),
    ("file:///etc/passwd", "not an http(s) URL"),
    ("http://user:pw@example.com/x", "credentials in the URL"),
    ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
    ("http://[::1]:9/x", "a loopback address"),
])
def test_post_refuses_before_connecting(url: str, message: str) -> None:
    with pytest.raises(TargetRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        post(url, b"{}", {}, timeout=1, allow=AllowList())


# -- Standard Webhooks signatures -------------------------------------------------------------


def secret_of(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


keys = st.binary(min_size=16, max_size=64)
bodies = st.text(max_size=300).map(str.encode)
msg_ids = st.from_regex(r"msg_[A-Za-z0-9]{1,40}", fullmatch=True)


@given(msg_id=msg_ids, body=bodies, key=keys)
def test_signatures_verify_with_the_reference_library(msg_id: str, body: bytes, key: bytes
                                                      ) -> None:
    headers = signed_headers(msg_id, body, [key])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    Webhook(secret_of(key)).verify(body, headers, json_parse=False)  # raises unless valid
    verify([key], headers, body)


@given(msg_id=msg_ids, body=bodies, new=keys, old=keys, other=keys)
def test_during_rotation_either_secret_verifies(msg_id: str, body: bytes, new: bytes,
                                               old: bytes, other: bytes) -> None:
    headers = signed_headers(msg_id, body, [new, old])
    assert len(headers["webhook-signature"].split()) == 2
    Webhook(secret_of(new)).verify(body, headers, json_parse=False)
    Webhook(secret_of(old)).verify(body, headers, json_parse=False)
    if other not in (new, old):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret_of(other)).verify(body, headers, json_parse=False)
        with pytest.raises(SignatureError, match="no signature matches"):
            verify([other], headers, body)


@given(msg_id=msg_ids, body=bodies, key=keys)
def test_our_verify_accepts_what_the_reference_library_signs(msg_id: str, body: bytes,
                                                             key: bytes) -> None:
    now = int(time.time())
    signature = Webhook(secret_of(key)).sign(msg_id, datetime.fromtimestamp(now, UTC),
                                              body.decode())
    assert signature == sign(msg_id, now, body, [key])
    verify([key], {"Webhook-Id": msg_id, "Webhook-Timestamp": str(now),
                   "Webhook-Signature": f"v1a,ignored {signature}"}, body)


def test_tampering_a_stale_timestamp_or_missing_headers_do_not_verify() -> None:
    key = parse_secrets(new_secret())[0]
    body = b'{"type":"job.completed"}'
    headers = signed_headers("msg_1", body, [key])
    with pytest.raises(SignatureError, match="no signature matches"):
        verify([key], headers, body.replace(b"completed", b"failed"))
    with pytest.raises(SignatureError, match="no signature matches"):
        verify([key], {**headers, "webhook-id": "msg_2"}, body)
    with pytest.raises(SignatureError, match="more than 300 s"):
        verify([key], headers, body, now=time.time() + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify([key], {"webhook-id": "msg_1"}, body)
    with pytest.raises(SignatureError, match="not a number"):
        verify([key], {**headers, "webhook-timestamp": "soon"}, body)
    old = signed_headers("msg_1", body, [key], now=time.time() - 600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret_of(key)).verify(body, old, json_parse=False)


def test_no_secret_means_no_signature_header() -> None:
    assert set(signed_headers("msg_1", b"{}", [])) == {"webhook-id", "webhook-timestamp"}


@given(key=keys)
@example(key=bytes(range(32)))
def test_secrets_parse_like_the_reference_library(key: bytes) -> None:
    padded = secret_of(key)
    unpadded = padded.rstrip("=")
    assert parse_secrets(f" {padded} ,{unpadded},") == [key, key]
    assert Webhook(unpadded)._whsecret == key


def test_new_secrets_are_usable_and_bad_ones_refused() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(parse_secrets(secret)[0]) == 24
    assert parse_secrets("") == [] and parse_secrets(" , ") == []
    with pytest.raises(ConfigError, match="too short"):
        parse_secrets(secret_of(b"short"))
    with pytest.raises(ConfigError, match="not a whsec_ secret"):
        parse_secrets("whsec_!!!not base64!!!")


# -- retries: the schedule, jitter and Retry-After ---------------------------------------------


def test_default_schedule_is_the_standard_webhooks_one() -> None:
    assert parse_schedule(Settings().notifications.retry_schedule) == (
        5, 300, 1800, 7200, 18000, 36000, 36000)
    assert parse_schedule(" 0, 1.5 ,1,") == (0, 1.5, 1)
    assert parse_schedule("") == ()


@pytest.mark.parametrize("text", ["5,soon", "1;2", "-1,5"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="notify_retry_schedule"):
        parse_schedule(text)


delays = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(schedule=st.lists(delays, max_size=10).map(tuple), attempts=st.integers(1, 12),
       seed=st.integers(0, 2**32))
def test_retry_delay_follows_the_schedule_within_jitter(schedule: tuple[float, ...],
                                                         attempts: int, seed: int) -> None:
    delay = retry_delay(attempts, schedule, None, random.Random(seed))
    if attempts > len(schedule):
        assert delay is None  # the schedule is used up: the row fails
        return
    planned = schedule[attempts - 1]
    assert delay is not None
    assert planned * (1 - JITTER) - 1e-9 <= delay <= planned * (1 + JITTER) + 1e-9


@given(schedule=st.lists(delays, min_size=1, max_size=5).map(tuple),
       attempts=st.integers(1, 5), wanted=st.floats(0, 1e7, allow_nan=False),
       seed=st.integers(0, 2**32))
def test_retry_after_lengthens_the_wait_up_to_a_day(schedule: tuple[float, ...], attempts: int,
                                                   wanted: float, seed: int) -> None:
    delay = retry_delay(attempts, schedule, wanted, random.Random(seed))
    if attempts > len(schedule):
        assert delay is None
        return
    assert delay is not None
    planned = schedule[attempts - 1]
    assert delay >= min(wanted, MAX_RETRY_AFTER_S)
    assert delay >= planned * (1 - JITTER) - 1e-9
    assert delay <= max(planned * (1 + JITTER), min(wanted, MAX_RETRY_AFTER_S)) + 1e-9


def test_jitter_actually_spreads_retries() -> None:
    rng = random.Random(7)
    spread = {retry_delay(1, (100.0,), None, rng) or 0.0 for _ in range(50)}
    assert len(spread) > 40 and min(spread) >= 90 and max(spread) <= 110


@given(st.integers(0, 10**12))
def test_retry_after_seconds(seconds: int) -> None:
    assert retry_after(str(seconds)) == seconds
    assert retry_after(f"  {seconds} ") == seconds


@given(moment=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1)),
       now=st.integers(631152000, 7258118400))
def test_retry_after_http_date(moment: datetime, now: int) -> None:
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    header = format_datetime(moment, usegmt=True)  # "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after(header, now=now) == max(0.0, moment.timestamp() - now)


def test_retry_after_http_date_examples() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert retry_after("Fri, 02 Jan 2026 03:04:35 GMT", now=now) == 30
    assert retry_after("Fri, 02 Jan 2026 03:04:35 -0000", now=now) == 30
    assert retry_after("Fri, 02 Jan 2026 04:04:35 +0100", now=now) == 30
    assert retry_after("Thu, 01 Jan 2026 00:00:00 GMT", now=now) == 0  # in the past
    soon = datetime.now(UTC) + timedelta(seconds=90)
    assert 80 < (retry_after(format_datetime(soon, usegmt=True)) or 0) <= 90


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "1.5", "0x10", "2e3",
                                   "Fri, 32 Jan 2026 03:04:35 GMT", "²", "١٢", "Fri"])
def test_retry_after_that_cannot_be_read_is_ignored(value: str | None) -> None:
    assert retry_after(value) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    wait = retry_after(value)
    assert wait is None or wait >= 0


# -- what an HTTP answer means -----------------------------------------------------------------


def answer(status: int, reason: str = "", excerpt: str = "", **headers: str) -> HttpAnswer:
    message = Message()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return HttpAnswer(status, reason, message, excerpt)


def test_http_answers_classified() -> None:
    assert http_outcome(answer(200, "OK")).result == "sent"
    assert http_outcome(answer(204, "No Content")).result == "sent"
    gone = http_outcome(answer(410, "Gone"))
    assert (gone.result, gone.status_code) == ("gone", 410)
    throttled = http_outcome(answer(429, "Too Many Requests", Retry_After="2"))
    assert (throttled.result, throttled.retry_after_s, throttled.endpoint_fault) == (
        "retry", 2.0, True)
    for status in (408, 425, 500, 502, 503, 504):
        outcome = http_outcome(answer(status, "x"))
        assert outcome.result == "retry" and outcome.endpoint_fault, status
    bad = http_outcome(answer(400, "Bad Request", "missing field job"))
    assert (bad.result, bad.detail, bad.endpoint_fault) == (
        "failed", "HTTP 400 Bad Request: missing field job", False)
    for status in (401, 403, 404, 422):
        assert http_outcome(answer(status, "x")).result == "failed", status
    moved = http_outcome(answer(302, "Found", Location="http://10.0.0.1/"))
    assert moved.result == "failed"
    assert moved.detail == "HTTP 302 redirect to http://10.0.0.1/ not followed"


# -- e-mail and Slack messages -----------------------------------------------------------------


def payload(**job: Any) -> dict[str, Any]:
    return {"id": "msg_abc", "type": "job.dead_lettered", "timestamp": "2026-01-02T03:04:05.000Z",
            "api_version": "1",
            "job": {"job_code": "JOB-7", "workflow_name": "Thumbnails", "status": "failed",
                    "error_message": "decoder said <b>no</b> & stopped", "retry_count": 3,
                    "max_retries": 3, **job}}


def note(notification_type: str, subject: str, body: dict[str, Any]) -> Notification:
    return Notification(id=1, event_id="e", notification_type=notification_type,
                        recipient="x", channel="email", endpoint="smtp", subject=subject,
                        payload=body, attempts=1)


def test_mail_message_has_subject_from_and_both_bodies(tmp_path: Path) -> None:
    config = mail.SmtpConfig.from_settings(Settings().replace(
        home=tmp_path, smtp_url="smtp://127.0.0.1:2525", mail_from="mediaq <mq@example.org>"))
    assert config is not None
    message = mail.build_message(config, "ops@example.com", "Thumbnails JOB-7: dead lettered",
                                 payload(), mail.Templates.load(None))
    assert message["Subject"] == "Thumbnails JOB-7: dead lettered"
    assert message["From"] == "mediaq <mq@example.org>"
    assert message["To"] == "ops@example.com"
    assert message["Message-ID"] == "<msg_abc@mediaq>"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    plain, markup = text.get_content(), html.get_content()
    assert "Job JOB-7 (Thumbnails): dead lettered" in plain
    assert "decoder said <b>no</b> & stopped" in plain and "3 of 3" in plain
    assert "JOB-7" in markup and "failed" in markup
    assert "decoder said &lt;b&gt;no&lt;/b&gt; &amp; stopped" in markup  # escaped in HTML
    assert "<b>no</b>" not in markup


def test_mail_templates_can_be_replaced(tmp_path: Path) -> None:
    (tmp_path / "email.txt").write_text("Custom: $job_code is $status\n")
    config = mail.SmtpConfig.from_settings(Settings().replace(home=tmp_path,
                                                              smtp_url="smtp://h"))
    assert config is not None
    message = mail.build_message(config, "a@b", "s", payload(), mail.Templates.load(tmp_path))
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and text.get_content().strip() == "Custom: JOB-7 is failed"
    assert html is not None and "<h2>Job JOB-7" in html.get_content()  # built-in kept


def test_smtp_settings(tmp_path: Path) -> None:
    assert mail.SmtpConfig.from_settings(Settings().replace(home=tmp_path)) is None
    plain = mail.SmtpConfig.from_settings(Settings().replace(
        home=tmp_path, smtp_url="smtp://mail.example", host_id="box"))
    assert plain is not None
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls, plain.sender) == (
        "mail.example", 25, False, "auto", "mediaq@box")
    tls = mail.SmtpConfig.from_settings(Settings().replace(
        home=tmp_path, smtp_url="smtps://u%40x:p%3Aw@mail.example", smtp_password="other"))
    assert tls is not None
    assert (tls.port, tls.implicit_tls, tls.starttls, tls.user, tls.password) == (
        465, True, "never", "u@x", "p:w")
    filled = mail.SmtpConfig.from_settings(Settings().replace(
        home=tmp_path, smtp_url="smtp://mail.example:587?starttls=always", smtp_user="me",
        smtp_password="pw"))
    assert filled is not None
    assert (filled.port, filled.starttls, filled.user, filled.password) == (
        587, "always", "me", "pw")
    for bad in ("http://mail.example", "smtp://mail.example?starttls=maybe", "smtp://"):
        with pytest.raises(ConfigError, match="smtp_url"):
            mail.SmtpConfig.from_settings(Settings().replace(home=tmp_path, smtp_url=bad))


def test_slack_message_names_the_job() -> None:
    message = slack_message(note("job.dead_lettered", "Thumbnails JOB-7: dead lettered",
                                 payload()))
    assert message["text"].startswith(":x: *Thumbnails JOB-7: dead lettered*")
    assert "> decoder said <b>no</b> & stopped" in message["text"]
    assert message["blocks"][0]["text"] == {"type": "mrkdwn", "text": message["text"]}
    done = slack_message(note("job.completed", "Thumbnails JOB-8: completed",
                              payload(error_message=None, output_file_path="/out/JOB-8/a.jpg")))
    assert done["text"] == ":white_check_mark: *Thumbnails JOB-8: completed*\n" \
                           "Output: `/out/JOB-8/a.jpg`"


def test_recipients_are_shown_without_secrets() -> None:
    assert shown_recipient("slack+https://hooks.slack.com/services/T0/B0/SECRET") == \
        "slack+https://hooks.slack.com/***"
    assert shown_recipient("https://u:pw@hooks.example:8443/in?token=abc") == \
        "https://hooks.example:8443/in?***"
    assert shown_recipient("https://hooks.example/in") == "https://hooks.example/in"
    assert shown_recipient("mailto:ops@example.com") == "mailto:ops@example.com"


# -- the endpoint (circuit-breaker key) and channel of a recipient ------------------------------


@pytest.mark.parametrize(("recipient", "channel", "endpoint"), [
    ("https://Hooks.Example.com/in/1?x=1", "webhook", "https://hooks.example.com"),
    ("https://hooks.example.com#frag", "webhook", "https://hooks.example.com"),
    ("http://127.0.0.1:8080/a", "webhook", "http://127.0.0.1:8080"),
    ("http://[::1]:8080/a", "webhook", "http://[::1]:8080"),
    ("HTTPS://HOOKS.EXAMPLE.COM/in", "webhook", "https://hooks.example.com"),
    ("slack+https://hooks.slack.com/services/T/B/X", "slack", "https://hooks.slack.com"),
    ("SLACK+HTTPS://Hooks.Slack.com/services/T/B/X", "slack", "https://hooks.slack.com"),
    ("mailto:ops@example.com", "email", "smtp"),
    ("ops@example.com", "email", "smtp"),
    ("ops-channel", "log", "log"),
])
def test_recipient_channel_and_endpoint(database_url: str, recipient: str, channel: str,
                                        endpoint: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT mediaq.notification_channel(%s), "
                           "mediaq.notification_endpoint(%s)", (recipient, recipient)).fetchone()
    assert row == (channel, endpoint)


def test_webhooks_to_one_host_and_port_share_an_endpoint(database_url: str) -> None:
    recipients = ["https://hooks.example/a", "https://hooks.example/b?x=1",
                  "https://hooks.example:8443/a", "http://hooks.example/a",
                  "slack+https://hooks.example/services/x"]
    with psycopg.connect(database_url) as conn:
        endpoints = [conn.execute("SELECT mediaq.notification_endpoint(%s)", (r,)).fetchone()
                     for r in recipients]
    assert [e[0] for e in endpoints if e] == [
        "https://hooks.example", "https://hooks.example", "https://hooks.example:8443",
        "http://hooks.example", "https://hooks.example"]


# -- one delivery against a receiver that does not speak HTTP ----------------------------------


def test_a_receiver_answering_garbage_is_retried_and_counts_against_it(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer_garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        channels = Channels(Settings().replace(home=tmp_path, webhook_allowed_hosts="127.0.0.1",
                                               notify_timeout_seconds=5))
        outcome = channels.deliver(Notification(
            id=1, event_id="e", notification_type="job.completed",
            recipient=f"http://127.0.0.1:{port}/hook", channel="webhook",
            endpoint=f"http://127.0.0.1:{port}", subject="s", payload={"id": "msg_1"},
            attempts=1))
        thread.join(5)
    assert (outcome.result, outcome.endpoint_fault) == ("retry", True)
    assert outcome.detail.startswith("bad HTTP answer: BadStatusLine")
