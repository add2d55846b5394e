"""Jobs nobody submits by hand: watch folders, schedules, scans, filing into a library.

Real processes (``mediaq triggers`` and workers) against a real PostgreSQL, files
written the way copy tools write them.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mediaq.errors import PermanentError
from mediaq.files import is_in_progress_name, matches, parse_patterns, walk_files
from mediaq.triggers.schedules import SKIP_GRACE, plan_slots
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for

NOOP = diagnostic_workflow("T-NOOP", {"action": "noop"})


def _watch(mq: MediaqEnv, folder: Path, *args: str) -> int:
    out = mq.cli("watch-folder", "add", str(folder), "--workflow", "T-NOOP", *args).stdout
    return int(out.split()[-1].lstrip("#"))


def _jobs(mq: MediaqEnv) -> list[dict[str, object]]:
    return mq.query("SELECT job_code, input_file_path, input_metadata, submitted_by, "
                    "submitted_at FROM workflow_jobs ORDER BY id")


# ----------------------------------------------------------------------- watch folders


@pytest.mark.slow
def test_a_slowly_copied_file_gets_one_job_once_the_copy_is_over(mq: MediaqEnv) -> None:
    mq.apply_workflow(NOOP)
    inbox = mq.inputs / "inbox"
    inbox.mkdir()
    folder_id = _watch(mq, inbox, "--settle-seconds", "2", "--pattern", "*.mp4,*.MOV")
    mq.start("triggers", watch_scan_seconds="0.3")
    target = inbox / "clip.mp4"
    with target.open("wb") as fh:
        for _ in range(8):  # 8 chunks over about 4 s, each one flushed to the file
            fh.write(os.urandom(64 * 1024))
            fh.flush()
            time.sleep(0.5)
            assert _jobs(mq) == [], "a job was submitted while the file was still growing"
    last_write = target.stat().st_mtime
    (inbox / "notes.txt").write_text("not a pattern match")
    (inbox / "other.mov.part").write_bytes(b"x" * 100)  # still arriving
    (inbox / ".hidden.mp4").write_bytes(b"x" * 100)

    jobs = wait_for(lambda: _jobs(mq), timeout=20, message="the watch folder job")
    time.sleep(1.5)  # several more listings: still one job
    jobs = _jobs(mq)
    assert len(jobs) == 1
    job = jobs[0]
    assert job["input_file_path"] == str(target)
    assert job["submitted_by"] == f"watch:{folder_id}"
    assert job["input_metadata"]["size_bytes"] == 8 * 64 * 1024  # type: ignore[index]
    submitted = job["submitted_at"].timestamp()  # type: ignore[attr-defined]
    assert submitted >= last_write + 2 - 0.05, "submitted before the file settled"

    # A copy tool's rename from a temporary name counts as a new file.
    os.rename(inbox / "other.mov.part", inbox / "other.MOV")
    wait_for(lambda: len(_jobs(mq)) == 2, timeout=20, message="the renamed file's job")
    assert "watch:" in mq.cli("jobs").stdout


@pytest.mark.slow
def test_inotify_wakes_the_watcher_before_the_next_listing(mq: MediaqEnv) -> None:
    mq.apply_workflow(NOOP)
    inbox = mq.inputs / "hot"
    inbox.mkdir()
    _watch(mq, inbox, "--settle-seconds", "1")
    # Listings every 120 s: only an inotify event can make the job appear in time.
    triggers = mq.start("triggers", watch_scan_seconds="120")
    time.sleep(1.0)  # the first listing (empty folder) is over
    (inbox / "a.bin").write_bytes(b"data")
    wait_for(lambda: _jobs(mq), timeout=15, message="a job woken by inotify")
    assert triggers.poll() is None


@pytest.mark.slow
def test_500_files_dropped_at_once_under_three_workers_make_500_jobs(mq: MediaqEnv) -> None:
    mq.apply_workflow(NOOP)
    inbox, staging = mq.inputs / "drop", mq.inputs / "staging"
    inbox.mkdir()
    staging.mkdir()
    _watch(mq, inbox, "--settle-seconds", "1", "--recursive")
    for index in range(500):
        (staging / f"file_{index:03d}.mxf").write_bytes(index.to_bytes(2, "big") * 10)
    (inbox / "sub").mkdir()
    for worker in range(3):
        mq.start_worker("--no-notifier", f"--id=w{worker}", watch_scan_seconds="0.5")
    for index, path in enumerate(sorted(staging.iterdir())):  # renames: all at once
        os.rename(path, inbox / ("sub" if index % 5 == 0 else ".") / path.name)

    def all_done() -> bool:
        row = mq.one("SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'completed') "
                     "AS done FROM workflow_jobs")
        return row["done"] == 500 or row["jobs"] > 500

    wait_for(all_done, timeout=120, interval=0.5, message="500 completed jobs")
    time.sleep(2)  # more listings by every worker
    counts = mq.one("SELECT count(*) AS jobs, count(DISTINCT input_file_path) AS paths, "
                    "(SELECT count(*) FROM watch_files) AS seen FROM workflow_jobs")
    assert counts == {"jobs": 500, "paths": 500, "seen": 500}

    # Restarted workers know what was submitted: nothing is submitted again.
    mq.stop_workers()
    for worker in range(3):
        mq.start_worker("--no-notifier", f"--id=r{worker}", watch_scan_seconds="0.5")
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workers WHERE worker_id LIKE 'r%%' "
                            "AND status <> 'stopped'")["n"] == 3, message="restarted workers")
    time.sleep(3)
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == 500
    # A file that changes is a new version, and gets a job of its own.
    changed = next(inbox.glob("*.mxf"))
    changed.write_bytes(b"new content")
    wait_for(lambda: mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == 501,
             timeout=20, message="the changed file's job")


def test_watch_folder_commands_refuse_what_a_worker_would(mq: MediaqEnv, tmp_path: Path) -> None:
    mq.apply_workflow(NOOP)
    inbox = mq.inputs / "in"
    inbox.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    refused = {
        "outside the input roots": ("watch-folder", "add", str(outside), "--workflow", "T-NOOP"),
        "not a directory": ("watch-folder", "add", str(mq.input_file("f.bin")),
                            "--workflow", "T-NOOP"),
        "does not exist": ("watch-folder", "add", str(inbox), "--workflow", "NOPE"),
        "bad cron expression": ("schedule", "add", "61 * * * *", "--workflow", "T-NOOP",
                                "--input", str(inbox)),
        "unknown time zone": ("schedule", "add", "* * * * *", "--workflow", "T-NOOP",
                              "--input", str(inbox), "--tz", "Mars/Olympus"),
    }
    for message, args in refused.items():
        result = mq.cli(*args, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    folder_id = _watch(mq, inbox)
    again = mq.cli("watch-folder", "add", str(inbox), "--workflow", "T-NOOP", check=False)
    assert "already" in again.stderr
    listed = json.loads(mq.cli("watch-folder", "list", "--json").stdout)
    assert [(f["path"], f["workflow_code"]) for f in listed] == [(str(inbox), "T-NOOP")]
    mq.cli("watch-folder", "remove", str(folder_id))
    assert mq.query("SELECT * FROM watch_folders") == []
    assert "no watch folder #99" in mq.cli("watch-folder", "remove", "99", check=False).stderr


# ----------------------------------------------------------------------- schedules


def _daily_cron_half_a_day_away(timezone: str) -> str:
    """A daily cron whose only slot is about 12 hours from now in ``timezone``.

    The tests make slots due by moving ``next_run_at`` into the past. A schedule
    that also has a genuine slot close to now (``* * * * *`` at every minute
    boundary) fires that slot too when the wall clock crosses it during the test,
    and the counts depend on the time of day the suite runs.
    """
    slot = datetime.now(ZoneInfo(timezone)) + timedelta(hours=12)
    return f"{slot.minute} {slot.hour} * * *"


def _monthly_cron_two_weeks_away() -> str:
    """A monthly cron (UTC) on a day of the month at least ten days from today.

    Slots on a day <= 28 fall in every month, and with none near today or the same
    day two years ago, a two-year outage holds exactly 24 of them.
    """
    day = (datetime.now(UTC).day + 13) % 28 + 1
    return f"0 12 {day} * *"


@pytest.mark.slow
def test_each_slot_fires_once_with_three_workers_racing(mq: MediaqEnv) -> None:
    mq.apply_workflow(NOOP)
    source = mq.input_file("nightly.bin", b"payload")
    out = mq.cli("schedule", "add", _daily_cron_half_a_day_away("Europe/Paris"),
                 "--workflow", "T-NOOP", "--input", str(source), "--tz", "Europe/Paris").stdout
    schedule_id = int(out.split()[-1].lstrip("#"))
    for worker in range(3):
        mq.start_worker("--no-notifier", f"--id=s{worker}", poll_seconds="0.1")
    # Make the schedule due five times, each at a different instant (so a different
    # slot); its own slot is hours away, so only these five can fire.
    for fired in range(1, 6):
        mq.query("UPDATE schedules SET next_run_at = now() - interval '1 second' "
                 "WHERE id = %s", (schedule_id,))
        wait_for(lambda: mq.one("SELECT next_run_at > now() AS done FROM schedules")["done"],
                 timeout=15, message="the slot to fire")
        time.sleep(0.3)  # the other workers had their chance
        assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == fired
    jobs = _jobs(mq)
    assert {job["submitted_by"] for job in jobs} == {f"schedule:{schedule_id}"}
    row = mq.one("SELECT fired_count, next_run_at FROM schedules")
    assert row["fired_count"] == 5
    assert row["next_run_at"].second == 0  # back on the cron's grid  # type: ignore[union-attr]
    listed = json.loads(mq.cli("schedule", "list", "--json").stdout)
    assert [s["fired_count"] for s in listed] == [5]


@pytest.mark.parametrize("missed, jobs", [("catch-up", 1), ("skip", 0)])
def test_slots_missed_during_downtime_follow_the_policy(mq: MediaqEnv, missed: str,
                                                        jobs: int) -> None:
    mq.apply_workflow(NOOP)
    source = mq.input_file("yearly.bin", b"payload")
    mq.cli("schedule", "add", _monthly_cron_two_weeks_away(), "--workflow", "T-NOOP",
           "--input", str(source), "--missed", missed)
    # Down for two years: the stale next_run_at and 24 monthly slots passed, the latest
    # days ago (so `skip` fires none).
    mq.query("UPDATE schedules SET next_run_at = now() - interval '2 years'")
    mq.cli("triggers", "--once")
    mq.cli("triggers", "--once")  # a second pass fires nothing more
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == jobs
    row = mq.one("SELECT fired_count, skipped_count, next_run_at > now() AS ahead "
                 "FROM schedules")
    assert row["fired_count"] == jobs and row["ahead"]
    assert row["skipped_count"] == 25 - jobs


def test_a_schedule_of_a_disabled_workflow_records_why_and_moves_on(mq: MediaqEnv) -> None:
    mq.apply_workflow(NOOP)
    source = mq.input_file("s.bin", b"payload")
    mq.cli("schedule", "add", _daily_cron_half_a_day_away("UTC"), "--workflow", "T-NOOP",
           "--input", str(source))
    mq.cli("workflows", "disable", "T-NOOP")
    mq.query("UPDATE schedules SET next_run_at = now() - interval '1 second'")
    mq.cli("triggers", "--once")
    row = mq.one("SELECT last_error, next_run_at > now() AS ahead FROM schedules")
    assert "disabled" in row["last_error"] and row["ahead"]
    assert mq.query("SELECT * FROM workflow_jobs") == []


_MINUTE = timedelta(minutes=1)


@settings(max_examples=60, deadline=None)
@given(late_s=st.integers(min_value=0, max_value=3 * 3600),
       missed=st.sampled_from(["catch-up", "skip"]))
def test_slot_plans_fire_at_most_once_and_always_move_ahead(late_s: int, missed: str) -> None:
    due = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night Paris moves its clocks
    now = due + timedelta(seconds=late_s)
    plan = plan_slots("*/15 * * * *", "Europe/Paris", due, now, missed)
    assert plan.next_run_at > now and plan.next_run_at - now <= timedelta(minutes=15)
    slots_due = late_s // 900 + 1
    fired = 0 if plan.fire_slot is None else 1
    assert fired + plan.skipped == slots_due
    if plan.fire_slot is not None:
        assert plan.fire_slot <= now and now - plan.fire_slot < timedelta(minutes=15)
    if missed == "catch-up":
        assert fired == 1
    else:
        assert fired == (now - (due + (slots_due - 1) * 15 * _MINUTE) <= SKIP_GRACE)


# ----------------------------------------------------------------------- scans


def _video_tree(root: Path) -> list[Path]:
    files = [root / "a.mp4", root / "b.MOV", root / "deep" / "c.mkv"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really video")
    (root / "readme.txt").write_text("skip me")
    (root / "d.mp4.part").write_bytes(b"arriving")
    (root / "empty.mp4").write_bytes(b"")
    (root / "link.mp4").symlink_to(files[0])
    return files


def test_scan_step_submits_new_files_once(mq: MediaqEnv) -> None:
    mq.apply_workflow(NOOP)
    mq.apply_workflow(diagnostic_workflow(
        "T-SCAN", {"action": "scan", "parameters": {"workflow": "T-NOOP",
                                                    "directoryType": "videos"}}))
    library = mq.inputs / "library"
    files = _video_tree(library / "videos")
    scan_job = mq.submit("T-SCAN", library)
    mq.run_burst("--no-notifier")
    step = mq.one("SELECT se.output_data, j.status FROM step_executions se "
                  "JOIN workflow_jobs j ON j.id = se.job_id WHERE j.job_code = %s", (scan_job,))
    assert step["status"] == "completed"
    data = step["output_data"]
    assert (data["found"], data["submitted"], data["skipped_existing"]) == (3, 3, 0)
    found = mq.query("SELECT input_file_path, submitted_by, status FROM workflow_jobs "
                     "WHERE submitted_by LIKE 'scan:%%' ORDER BY input_file_path")
    assert [row["input_file_path"] for row in found] == sorted(str(p) for p in files)
    assert {row["submitted_by"] for row in found} == {f"scan:{scan_job}"}
    assert {row["status"] for row in found} == {"completed"}

    second = mq.submit("T-SCAN", library)
    mq.run_burst("--no-notifier")
    data = mq.one("SELECT se.output_data FROM step_executions se JOIN workflow_jobs j "
                  "ON j.id = se.job_id WHERE j.job_code = %s", (second,))["output_data"]
    assert (data["found"], data["submitted"], data["skipped_existing"]) == (3, 0, 3)


def test_scan_command_shows_what_it_did_and_refuses_outside_the_roots(mq: MediaqEnv,
                                                                       tmp_path: Path) -> None:
    mq.apply_workflow(NOOP)
    files = _video_tree(mq.inputs / "shoot")
    out = mq.cli("scan", str(mq.inputs / "shoot"), "--workflow", "T-NOOP").stdout
    assert "3 file(s)" in out and "3 submitted" in out
    assert mq.cli("scan", str(mq.inputs / "shoot"), "--workflow", "T-NOOP").stdout.count(
        "0 submitted, 3 had a job already") == 1
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE submitted_by = 'scan:cli'"
                  )["n"] == len(files)
    refused = mq.cli("scan", str(tmp_path), "--workflow", "T-NOOP", check=False)
    assert refused.returncode == 1 and "outside the input roots" in refused.stderr
    missing = mq.cli("scan", str(mq.inputs / "shoot"), "--workflow", "NOPE", check=False)
    assert missing.returncode == 1 and "NOPE does not exist" in missing.stderr
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == len(files)


def test_walk_files_skips_what_is_not_a_finished_media_file(tmp_path: Path) -> None:
    files = _video_tree(tmp_path)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.mp4").write_bytes(b"hidden folder")
    found = list(walk_files(tmp_path, ("*.mp4", "*.mov", "*.mkv"), recursive=True))
    assert sorted(f.path for f in found) == sorted(files)
    assert {f.rel_path for f in found} == {"a.mp4", "b.MOV", "deep/c.mkv"}
    flat = list(walk_files(tmp_path, ("*.mp4", "*.mov", "*.mkv"), recursive=False))
    assert len(flat) == 2


@given(st.text(min_size=1, max_size=30))
def test_name_rules(name: str) -> None:
    if name.startswith(".") or name.endswith("~"):
        assert is_in_progress_name(name)
    assert is_in_progress_name(name + ".part") and is_in_progress_name(name + ".CRDOWNLOAD")
    assert matches(name, ())
    assert matches(name + ".MP4", ("*.mp4",)) and not matches(name + ".mp4x", ("*.mp4",))


def test_patterns_parse_from_commas_and_repeats() -> None:
    assert parse_patterns(["*.mp4, *.mov", "*.mxf"]) == ("*.mp4", "*.mov", "*.mxf")
    assert parse_patterns("") == () and parse_patterns(None) == ()


# ----------------------------------------------------------------------- library


def _thumbnail_then_library(code: str, **library: object) -> dict[str, object]:
    return diagnostic_workflow(
        code,
        {"action": "create_thumbnail", "step_name": "thumbs",
         "parameters": {"sizes": [64, 128], "format": "png"}},
        {"action": "move_to_library", "step_name": "file", "parameters": library},
    )


def test_move_to_library_files_outputs_by_template_and_never_overwrites(
        mq: MediaqEnv) -> None:
    library = mq.root / "home" / "library"
    mq.apply_workflow(_thumbnail_then_library(
        "T-LIB", library=str(library), template="{workflow}/{date:%Y}/{stem}_{rendition}.{ext}",
        mode="copy"))
    picture = mq.inputs / "holiday.png"
    Image.new("RGB", (400, 300), "teal").save(picture)
    year_before = datetime.now().astimezone().year
    first = mq.submit("T-LIB", picture)
    mq.run_burst("--no-notifier")
    assert mq.job(first)["status"] == "completed", mq.job(first)["log"]
    # The step's local date names the folder: a run across New Year may use either year.
    [year_folder] = (library / "T-LIB").iterdir()
    assert year_folder.name in {str(year_before), str(datetime.now().astimezone().year)}
    filed = sorted(year_folder.iterdir())
    assert [p.name for p in filed] == ["holiday_thumb_128.png", "holiday_thumb_64.png"] or \
        len(filed) == 2, filed
    for path in filed:
        with Image.open(path) as im:
            assert max(im.size) in (64, 128)
    assert not list(library.rglob("*.mediaq-tmp"))

    second = mq.submit("T-LIB", picture)  # the same names again: refused, nothing replaced
    before = {p: p.stat().st_mtime_ns for p in filed}
    mq.run_burst("--no-notifier")
    job = mq.job(second)
    assert job["status"] == "failed" and "exists already" in job["error_message"]
    assert {p: p.stat().st_mtime_ns for p in filed} == before


def test_move_to_library_moves_the_input_and_renames_on_conflict(mq: MediaqEnv) -> None:
    library = mq.root / "home" / "library"
    mq.apply_workflow(diagnostic_workflow(
        "T-INBOX", {"action": "move_to_library", "parameters": {
            "source": "input", "template": "{stem}.{ext}", "on_conflict": "rename"}}))
    (library).mkdir(parents=True)
    (library / "clip.bin").write_bytes(b"older")
    arriving = mq.input_file("clip.bin", b"newer")
    code = mq.submit("T-INBOX", arriving)
    mq.run_burst("--no-notifier")
    assert mq.job(code)["status"] == "completed", mq.job(code)["log"]
    assert not arriving.exists()
    assert (library / "clip.bin").read_bytes() == b"older"
    assert (library / "clip_1.bin").read_bytes() == b"newer"


@pytest.mark.parametrize("params, message", [
    ({"template": "{date.__class__}.{ext}"}, "template field"),
    ({"template": "../../escape.{ext}"}, "not a path inside the library"),
    ({"template": "{nope}.{ext}"}, "template field {nope}"),
    ({"library": "/etc"}, "outside the library roots"),
])
def test_move_to_library_refuses_hostile_settings(mq: MediaqEnv, params: dict[str, str],
                                                  message: str) -> None:
    mq.apply_workflow(diagnostic_workflow(
        "T-BAD", {"action": "move_to_library", "parameters": {"source": "input", **params}}))
    source = mq.input_file("x.bin", b"data")
    code = mq.submit("T-BAD", source)
    mq.run_burst("--no-notifier")
    job = mq.job(code)
    assert job["status"] == "failed" and message in job["error_message"], job["error_message"]
    assert source.read_bytes() == b"data"


def test_render_template_keeps_to_plain_fields() -> None:
    from mediaq.actions.library import render_template

    fields = {"workflow": "WF", "job": "J", "date": datetime(2026, 11, 23), "stem": "a",
              "name": "a", "rendition": "720p", "role": "rendition", "ext": "mp4", "step": 2}
    assert render_template("{workflow}/{date:%Y/%m}/{stem}_{rendition}.{ext}", fields) == \
        Path("WF/2026/11/a_720p.mp4")
    with pytest.raises(PermanentError, match="template field"):
        render_template("{date.year}", fields)
    with pytest.raises(PermanentError, match="inside the library"):
        render_template("/abs/{stem}", fields)
