"""Dead letters in bulk: the filter language, the normalised reason, `mediaq dead-letters`,
`mediaq retry|cancel --where` and their API routes, over 1,000 failed jobs inserted as a
plain SQL client would."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediaq import db, operations
from mediaq.job_filter import (
    ERROR_CLASSES,
    FilterError,
    JobFilter,
    normalise_reason,
    parse_filter,
    quote,
)
from tests.helpers import MediaqEnv, diagnostic_workflow

# ---------------------------------------------------------------------------------------
# The filter language (no database)
# ---------------------------------------------------------------------------------------


def test_a_filter_parses_and_prints_back() -> None:
    where = parse_filter('workflow=WF-X reason~truncated class=permanent step=2 '
                         'since=2026-12-01 submitted_by="ops team"')
    assert where == JobFilter(workflow="WF-X", step=2, error_class="permanent",
                              reason_has="truncated",
                              since=datetime(2026, 12, 1, tzinfo=UTC),
                              submitted_by="ops team")
    assert parse_filter(str(where)) == where
    assert parse_filter("step=Resize").step == "Resize"
    assert parse_filter(r'reason~"/trunc\w+ at/"').reason_regex == r"trunc\w+ at"
    assert parse_filter(r'reason~"a\b\\"').reason_has == "a\\b\\"
    assert parse_filter('reason="a \\"b\\" c"').reason_is == 'a "b" c'
    assert parse_filter("until=2026-12-02T12:00+01:00").until == datetime(
        2026, 12, 2, 11, tzinfo=UTC)
    age = parse_filter("since=7d").since
    assert age is not None and abs(
        datetime.now(UTC) - timedelta(days=7) - age) < timedelta(minutes=1)


@pytest.mark.parametrize(("text", "error"), [
    ("", "empty filter: name at least one clause (e.g. workflow=WF-X)"),
    ("colour=red", "unknown key 'colour' (one of workflow, step, class, reason, since, "
                   "until, submitted_by)"),
    ("workflow", "malformed clause at 'workflow': expected KEY=VALUE or reason~TEXT"),
    ("workflow=", "workflow= needs a value"),
    ("step~2", "step~ is not a filter: only reason takes ~ (use step=)"),
    ('reason="abc', "malformed clause at 'reason=\"abc': unterminated quoted value"),
    ('reason="a"b', "malformed clause at 'reason=\"a\"b': a quoted value must be followed "
                    "by a space"),
    ('workflow=a"b', "malformed clause at 'workflow=a\"b': a quote inside an unquoted "
                     "value (quote the whole value)"),
    ("class=fatal", "class='fatal': one of permanent, transient, system, cancelled"),
    ("since=yesterday", "since='yesterday': an ISO date or date-time, or an age (30m, 12h, "
                        "7d)"),
    ("workflow=A workflow=B", "workflow= given twice"),
    ("reason~/(/", "reason~/…/: not a regular expression (missing ), unterminated "
                   "subpattern at position 0)"),
])
def test_a_bad_filter_is_refused_in_one_line(text: str, error: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert caught.value.message == error


FILTER_ALPHABET = [*'workflowstepclassreasonsinceuntilsubmitted_by=~" \\/0123456789-:T.Zdhm\x00\n',
                   "é", "٣", "\t"]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(FILTER_ALPHABET), max_size=60) | st.text(max_size=60))
def test_the_parser_never_crashes_and_what_it_reads_prints_back(text: str) -> None:
    try:
        where = parse_filter(text)
    except FilterError as exc:
        assert exc.message and "\n" not in exc.message
        return
    assert parse_filter(str(where)) == where


values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                 min_size=1, max_size=30)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(st.builds(
    JobFilter, workflow=st.none() | values,
    step=st.none() | st.integers(0, 999_999) | values.filter(lambda v: not v.isdecimal()),
    error_class=st.none() | st.sampled_from(ERROR_CLASSES),
    reason_is=st.none() | values, reason_has=st.none() | values.filter(
        lambda v: not (len(v) >= 2 and v[0] == v[-1] == "/")),
    since=st.none() | times, until=st.none() | times, submitted_by=st.none() | values,
).filter(lambda f: f != JobFilter()))
def test_every_filter_round_trips_through_its_text(where: JobFilter) -> None:
    assert parse_filter(str(where)) == where


def test_the_reason_clauses_match_messages() -> None:
    message = "clip_7.mp4: Truncated at 1.9 s of 3.7 s"
    assert parse_filter("reason~truncated").matches_reason(message)
    assert parse_filter(r'reason~"/trunc\w+ at \d/"').matches_reason(message)
    assert not parse_filter("reason~/^truncated/").matches_reason(message)
    assert parse_filter('reason="<file>: Truncated at <n> s of <n> s"').matches_reason(message)
    assert not parse_filter('reason="<file>: truncated"').matches_reason(message)
    assert not parse_filter("reason~x").matches_reason(None)


def test_quoting() -> None:
    assert quote("WF-X") == "WF-X"
    assert quote("a b") == '"a b"'
    assert quote('say "hi"\\') == '"say \\"hi\\"\\\\"'


@pytest.mark.parametrize(("messages", "reason"), [
    (["x.mp4: truncated at 1.9 s of 3.7 s", "clip_0042.MP4: truncated at 12 s of 30.5 s",
      "/media/in/2026/a.mp4: truncated at 0.04 s of 1.2 s"],
     None),
    (["step 2 'Transcode' failed: codec h264 unsupported (JOB-2026-000123)",
      "step 2 'Transcode' failed: codec h264 unsupported (JOB-2026-998877)"],
     "step <n> 'Transcode' failed: codec h264 unsupported (<job>)"),
    (["lease of w-3f9a8b7c12 expired at 2026-12-04T10:11:12.5+00:00 after 3.7s",
      "lease of w-00aa11bb22 expired at 2026-11-30 01:02:03 after 12s"],
     "lease of w-<hex> expired at <time> after <n>s"),
    (["object 550e8400-e29b-41d4-a716-446655440000 gone at 0x7f3a",
      "object 123e4567-e89b-12d3-a456-426614174000 gone at 0xdead"],
     "object <id> gone at <hex>"),
    (["HTTP 503 from https://hooks.example.com/x?sig=1",
      "HTTP 502 from https://hooks.example.com/y"], "HTTP <n> from <url>"),
])
def test_the_normalised_reason_collapses_the_variable_parts(messages: list[str],
                                                             reason: str | None) -> None:
    reasons = {normalise_reason(m) for m in messages}
    assert len(reasons) == 1, reasons
    if reason is not None:
        assert reasons == {reason}
    assert normalise_reason("a  b\n c") == "a b c"
    assert normalise_reason(None) == ""
    assert len(normalise_reason("x " * 500)) == 200


# ---------------------------------------------------------------------------------------
# 1,000 failed jobs, as a plain SQL client inserts them
# ---------------------------------------------------------------------------------------

N = 1000
BASE = datetime(2026, 11, 20, tzinfo=UTC)
# The same formulas in SQL (below) and in Python (expected), over i = 1..N.
INSERT_FAILED = """
INSERT INTO workflow_jobs (workflow_id, input_file_path, status, current_step, error_class,
                           error_message, completed_at, submitted_by)
SELECT CASE WHEN i %% 4 = 0 THEN y.id ELSE x.id END,
       format('/media/in/f%%s.bin', i), 'failed', 1 + i %% 3,
       CASE WHEN i %% 5 = 0 THEN 'transient' ELSE 'permanent' END,
       CASE WHEN i %% 2 = 0
            THEN format('clip_%%s.mp4: truncated at %%s.%%s s of %%s.%%s s',
                        i, i %% 7, i %% 10, 10 + i %% 5, i %% 3)
            ELSE format('/media/in/v%%s.mov: unsupported codec h264 profile %%s at 0x%%s',
                        i, i %% 9, to_hex(i * 7919)) END,
       %(base)s::timestamptz + i * interval '1 hour',
       CASE WHEN i %% 10 = 0 THEN 'alice' ELSE 'bob' END
  FROM generate_series(1, %(n)s) AS i,
       (SELECT id FROM workflow_definitions WHERE workflow_code = 'WF-X') x,
       (SELECT id FROM workflow_definitions WHERE workflow_code = 'WF-Y') y
"""
STEPS = ({"action": "noop", "step_name": "Validate"},
         {"action": "noop", "step_name": "Transcode"},
         {"action": "noop", "step_name": "Thumbnail"})
TRUNCATED = "<file>: truncated at <n> s of <n> s"
CODEC = "<file>: unsupported codec h264 profile <n> at <hex>"
FILTER = "workflow=WF-X reason~truncated class=permanent step=2 since=2026-12-01"


def job(i: int) -> dict[str, Any]:
    return {"workflow": "WF-Y" if i % 4 == 0 else "WF-X", "step": 1 + i % 3,
            "class": "transient" if i % 5 == 0 else "permanent",
            "reason": TRUNCATED if i % 2 == 0 else CODEC,
            "failed_at": BASE + timedelta(hours=i),
            "submitted_by": "alice" if i % 10 == 0 else "bob"}


def expected_by_filter() -> set[int]:
    since = datetime(2026, 12, 1, tzinfo=UTC)
    return {i for i in range(1, N + 1)
            if (j := job(i))["workflow"] == "WF-X" and j["reason"] == TRUNCATED
            and j["class"] == "permanent" and j["step"] == 2 and j["failed_at"] >= since}


@pytest.fixture
def failed(mq: MediaqEnv) -> MediaqEnv:
    mq.apply_workflow(diagnostic_workflow("WF-X", *STEPS))
    mq.apply_workflow(diagnostic_workflow("WF-Y", *STEPS))
    with mq.connect() as conn:
        conn.execute(INSERT_FAILED, {"base": BASE, "n": N})
    return mq


def numbers(mq: MediaqEnv, status: str) -> set[int]:
    rows = mq.query("SELECT input_file_path FROM workflow_jobs WHERE status = %s", (status,))
    return {int(r["input_file_path"].removeprefix("/media/in/f").removesuffix(".bin"))
            for r in rows}


def test_dead_letters_group_1000_failures(failed: MediaqEnv) -> None:
    groups = json.loads(failed.cli("dead-letters", "--json").stdout)
    want = Counter((j["workflow"], j["step"], j["class"], j["reason"])
                   for j in map(job, range(1, N + 1)))
    assert {(g["workflow_code"], g["step_number"], g["error_class"], g["reason"]): g["count"]
            for g in groups} == dict(want)
    assert [g["count"] for g in groups] == sorted((g["count"] for g in groups), reverse=True)
    names = {1: "Validate", 2: "Transcode", 3: "Thumbnail"}
    for group in groups:
        assert group["step_name"] == names[group["step_number"]]
        members = [i for i in range(1, N + 1)
                   if (j := job(i))["workflow"] == group["workflow_code"]
                   and (j["step"], j["class"], j["reason"]) == (
                       group["step_number"], group["error_class"], group["reason"])]
        assert group["oldest_failure"].startswith(
            job(min(members))["failed_at"].strftime("%Y-%m-%d %H:%M"))
        assert group["newest_failure"].startswith(
            job(max(members))["failed_at"].strftime("%Y-%m-%d %H:%M"))
        example = failed.job(group["example_job"])
        assert example["status"] == "failed"
        assert normalise_reason(example["error_message"]) == group["reason"]
    table = failed.cli("dead-letters").stdout
    assert "Dead letters: 1000 failed jobs" in table and "2 Transcode" in table
    narrowed = json.loads(failed.cli("dead-letters", "--where", FILTER, "--json").stdout)
    assert sum(g["count"] for g in narrowed) == len(expected_by_filter())


def test_retry_where_retries_exactly_the_matching_jobs_once(failed: MediaqEnv) -> None:
    want = expected_by_filter()
    assert len(want) == 49  # of 1,000: the test keeps its filter selective
    dry = failed.cli("retry", "--where", FILTER, "--dry-run")
    assert dry.stdout.splitlines()[0] == (
        f"dry run: {len(want)} failed jobs match workflow=WF-X step=2 class=permanent "
        "reason~truncated since=2026-12-01T00:00:00+00:00; nothing changed")
    assert dry.stdout.splitlines()[1].startswith("sample: JOB-")
    assert len(numbers(failed, "failed")) == N  # the dry run changed nothing

    done = json.loads(failed.cli("retry", "--where", FILTER, "--note", "re-encoded the ingest",
                                 "--json").stdout)
    assert (done["matched"], done["changed"], done["skipped"]) == (len(want), len(want), 0)
    assert numbers(failed, "pending") == want
    assert numbers(failed, "failed") == set(range(1, N + 1)) - want
    logs = failed.query("SELECT log, retry_count FROM workflow_jobs WHERE status = 'pending'")
    assert all(r["retry_count"] == 1 and "--- RETRY ATTEMPT 1 BY " in r["log"]
               and "(bulk retry; note: re-encoded the ingest) ---" in r["log"] for r in logs)

    again = failed.cli("retry", "--where", FILTER)
    assert again.stdout.strip() == "retried 0 of 0 matching failed jobs (0 skipped: moved " \
                                   "or held meanwhile)"
    assert numbers(failed, "pending") == want

    # More than one batch (500 a transaction): every permanent failure left
    permanent = {i for i in range(1, N + 1) if job(i)["class"] == "permanent"} - want
    wide = json.loads(failed.cli("retry", "--where", "class=permanent", "--json").stdout)
    assert (wide["matched"], wide["changed"]) == (len(permanent), len(permanent)) == (751, 751)
    assert numbers(failed, "failed") == {i for i in range(1, N + 1) if i % 5 == 0}


def test_a_job_held_by_another_transaction_is_skipped_then_retried(failed: MediaqEnv) -> None:
    want = sorted(expected_by_filter())
    held_path = f"/media/in/f{want[0]}.bin"
    operations_conn = db.connect(failed.url, autocommit=True)
    with psycopg.connect(failed.url, options="-c search_path=mediaq,public") as holder:
        holder.execute("SELECT id FROM workflow_jobs WHERE input_file_path = %s FOR UPDATE",
                       (held_path,))
        result = operations.retry_where(operations_conn, parse_filter(FILTER), by="bulk")
        assert (result["changed"], result["skipped"]) == (len(want) - 1, 1)
        holder.rollback()
    # meanwhile a single retry of one more... none left but the held one
    result = operations.retry_where(operations_conn, parse_filter(FILTER), by="bulk")
    assert (result["matched"], result["changed"]) == (1, 1)
    assert numbers(failed, "pending") == set(want)
    operations_conn.close()


def test_concurrent_bulk_retries_retry_each_job_once(failed: MediaqEnv,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "BULK_BATCH", 5)  # many small batches interleave
    want = expected_by_filter()
    results: list[dict[str, Any]] = []

    def run() -> None:
        with db.connect(failed.url, autocommit=True) as conn:
            results.append(operations.retry_where(conn, parse_filter(FILTER), by="t"))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(r["changed"] for r in results) == len(want)
    assert failed.one("SELECT count(*) AS n FROM workflow_jobs WHERE retry_count > 1")["n"] == 0
    assert numbers(failed, "pending") == want


def test_cancel_where_cancels_matching_waiting_jobs(failed: MediaqEnv) -> None:
    with failed.connect() as conn:
        conn.execute("""
            INSERT INTO workflow_jobs (workflow_id, input_file_path, status, submitted_by)
            SELECT (SELECT id FROM workflow_definitions WHERE workflow_code = 'WF-Y'),
                   format('/media/in/w%s.bin', i),
                   (ARRAY['pending', 'queued', 'paused'])[1 + i % 3],
                   CASE WHEN i % 2 = 0 THEN 'alice' ELSE 'bob' END
              FROM generate_series(1, 60) AS i""")
    dry = failed.cli("cancel", "--where", "workflow=WF-Y submitted_by=alice", "--dry-run")
    assert dry.stdout.startswith("dry run: 30 waiting jobs match")
    done = failed.cli("cancel", "--where", "workflow=WF-Y submitted_by=alice",
                      "--note", "wrong batch")
    assert done.stdout.startswith("cancelled 30 of 30 matching waiting jobs")
    counts = {r["status"]: r["n"] for r in failed.query(
        "SELECT status, count(*) AS n FROM workflow_jobs GROUP BY status")}
    assert counts == {"failed": N, "cancelled": 30, "pending": 10, "queued": 10, "paused": 10}
    assert failed.one("SELECT count(*) AS n FROM workflow_jobs WHERE status = 'cancelled' AND "
                      "log LIKE '%JOB CANCELLED BY % (bulk cancel; note: wrong batch) ---%'"
                      )["n"] == 30


def test_bulk_cli_refusals_are_one_line(failed: MediaqEnv) -> None:
    bad = failed.cli("retry", "--where", "colour=red", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("error: unknown key 'colour' (one of workflow, step, class, "
                                  "reason, since, until, submitted_by)")
    both = failed.cli("retry", "JOB-1", "--where", "workflow=WF-X", check=False)
    assert both.returncode == 2 and "give a JOB or --where FILTER, not both" in both.stderr
    assert len(numbers(failed, "failed")) == N


@pytest.mark.slow
def test_the_api_groups_and_retries_by_filter_for_operators(failed: MediaqEnv) -> None:
    from tests.test_web_api import assert_one_line_error, start_web

    web = start_web(failed)
    grouped = web.get("/api/media/dead-letters", role="viewer").json()
    assert grouped["total"] == N
    top = grouped["data"][0]
    assert set(top) == {"workflow", "stepNumber", "stepName", "errorClass", "reason", "count",
                        "oldestFailure", "newestFailure", "exampleJob", "exampleMessage"}
    narrowed = web.get("/api/media/dead-letters", role="viewer",
                       params={"where": FILTER}).json()
    want = expected_by_filter()
    assert narrowed["total"] == len(want)
    assert_one_line_error(web.get("/api/media/dead-letters", params={"where": "x=1"}), 400)

    body = {"where": FILTER, "dryRun": True}
    for role in ("viewer", "submitter"):
        assert_one_line_error(web.post("/api/media/jobs/retry", role=role, json=body), 403)
    dry = web.post("/api/media/jobs/retry", role="operator", json=body).json()
    assert (dry["matched"], dry["changed"], dry["dryRun"]) == (len(want), 0, True)
    assert len(dry["sample"]) == 10 and numbers(failed, "pending") == set()
    assert_one_line_error(web.post("/api/media/jobs/retry", role="operator",
                                   json={"where": "step~2"}), 400)

    done = web.post("/api/media/jobs/retry", role="operator",
                    json={"where": FILTER, "note": "api bulk"}).json()
    assert (done["matched"], done["changed"], done["skipped"]) == (len(want), len(want), 0)
    assert numbers(failed, "pending") == want
    assert failed.one("SELECT count(*) AS n FROM workflow_jobs WHERE log LIKE "
                      "'%BY T-OPERATOR (bulk retry; note: api bulk)%'")["n"] == len(want)
    again = web.post("/api/media/jobs/retry", role="admin", json={"where": FILTER}).json()
    assert (again["matched"], again["changed"]) == (0, 0)
    cancel = web.post("/api/media/jobs/cancel", role="operator",
                      json={"where": "workflow=WF-X step=Transcode", "dryRun": True}).json()
    assert cancel["matched"] == len(want)  # the jobs just retried now wait at step 2


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_normalising_is_idempotent_on_text(text: str) -> None:
    once = normalise_reason(text)
    assert "\n" not in once and len(once) <= 200
