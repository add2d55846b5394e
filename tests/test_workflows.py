"""Workflows as versioned data: seed, apply, versions, export round trip, list/show,
enable/disable, and refusals of invalid files."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from mediaq import workflows
from mediaq.errors import WorkflowError
from tests.helpers import MediaqEnv, diagnostic_workflow

SEEDED = {
    # code: (resource_category, vram_required, steps, default_priority, queue_name)
    "WF-VIDEO-TRANSCODE": ("gpu_encode", 4000, 7, 5, "video_processing"),
    "WF-IMAGE-PROCESS": ("cpu", 0, 5, 3, "image_processing"),
    "WF-AUDIO-TRANSCODE": ("cpu", 0, 6, 4, "audio_processing"),
    "WF-DOC-PROCESS": ("cpu", 0, 5, 4, "document_processing"),
    "WF-VIDEO-ANALYZE": ("gpu_ai", 6000, 6, 6, "video_analysis"),
    "WF-VIDEO-HIGHLIGHTS": ("cpu", 0, 6, 5, "video_processing"),
    "WF-LIBRARY-TAG": ("cpu", 0, 3, 3, "media_library"),
    "WF-VIDEO-CHUNKED": ("cpu", 0, 6, 5, "video_processing"),
}


def current(mq: MediaqEnv) -> dict[str, dict]:
    return {r["workflow_code"]: r for r in mq.query(
        """SELECT wd.*, (SELECT count(*) FROM workflow_steps ws WHERE ws.workflow_id = wd.id)
                  AS steps
             FROM workflow_definitions wd WHERE is_current""")}


def definitions(mq: MediaqEnv) -> int:
    return int(mq.one("SELECT count(*) AS n FROM workflow_definitions")["n"])


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# -- seed ---------------------------------------------------------------------------------


def test_seed_installs_the_seeded_workflows_once(mq: MediaqEnv) -> None:
    out = mq.cli("workflows", "seed").stdout
    assert sorted(out.strip().splitlines()) == sorted(f"{c}: version 1" for c in SEEDED)
    rows = current(mq)
    assert set(rows) == set(SEEDED)
    for code, (category, vram, steps, priority, queue) in SEEDED.items():
        row = rows[code]
        assert (row["resource_category"], row["vram_required"], row["steps"],
                row["default_priority"], row["queue_name"]) == (category, vram, steps,
                                                                priority, queue), code
        assert row["version"] == 1 and row["is_active"]
    video_steps = [r["step_name"] for r in mq.query(
        "SELECT step_name FROM workflow_steps WHERE workflow_id = %s ORDER BY step_number",
        (rows["WF-VIDEO-TRANSCODE"]["id"],))]
    assert video_steps == ["Validate Input", "Extract Metadata", "Transcode 1080p",
                           "Transcode 720p", "Transcode 480p", "Generate Thumbnails",
                           "Finalize Output"]

    again = mq.cli("workflows", "seed").stdout
    assert sorted(again.strip().splitlines()) == sorted(
        f"{c}: version 1 (unchanged)" for c in SEEDED)
    assert definitions(mq) == len(SEEDED)
    steps = int(mq.one("SELECT count(*) AS n FROM workflow_steps")["n"])
    assert steps == 7 + 5 + 6 + 5 + 6 + 6 + 3 + 6


def test_seeded_workflows_export_and_reapply_unchanged(mq: MediaqEnv) -> None:
    mq.seed()
    with psycopg.connect(mq.url, row_factory=dict_row,
                         options="-c search_path=mediaq,public") as conn:
        for code in SEEDED:
            doc = workflows.export(conn, code)
            doc.pop("version")
            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
            result = workflows.apply(conn, workflows.normalise(yaml.safe_load(text)))
            assert (result.version, result.changed) == (1, False), code
        conn.commit()
    assert definitions(mq) == len(SEEDED)


# -- apply, versions ----------------------------------------------------------------------


def test_apply_change_makes_a_new_version_and_old_jobs_keep_theirs(mq: MediaqEnv) -> None:
    v1 = mq.write_yaml("wf.yaml", diagnostic_workflow("T-VER", {"action": "noop"}))
    assert mq.cli("workflows", "apply", str(v1)).stdout.strip() == "T-VER: version 1"
    assert mq.cli("workflows", "apply", str(v1)).stdout.strip() == "T-VER: version 1 (unchanged)"
    old_job = mq.submit("T-VER", mq.input_file("a.bin"))

    v2 = mq.write_yaml("wf.yaml", diagnostic_workflow(
        "T-VER", {"action": "fail", "parameters": {"message": "version two"}}))
    assert mq.cli("workflows", "apply", str(v2)).stdout.strip() == "T-VER: version 2"
    new_job = mq.submit("T-VER", mq.input_file("b.bin"))

    versions = mq.query("SELECT version, is_current FROM workflow_definitions"
                        " WHERE workflow_code = 'T-VER' ORDER BY version")
    assert versions == [{"version": 1, "is_current": False}, {"version": 2, "is_current": True}]
    mq.run_burst()
    old, new = mq.job(old_job), mq.job(new_job)
    assert old["status"] == "completed"
    assert new["status"] == "failed" and "version two" in new["error_message"]
    ran = {r["job_code"]: (r["version"], r["action"]) for r in mq.query(
        """SELECT j.job_code, wd.version, ws.action
             FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id
             JOIN workflow_steps ws ON ws.id = se.step_id
             JOIN workflow_definitions wd ON wd.id = ws.workflow_id""")}
    assert ran == {old_job: (1, "noop"), new_job: (2, "fail")}
    show = mq.cli("show", old_job).stdout
    assert any(line.split() == ["workflow_version", "1"] for line in show.splitlines())


def test_export_reapplied_is_unchanged(mq: MediaqEnv) -> None:
    doc = diagnostic_workflow(
        "T-EXPORT", {"action": "package_hls", "parameters": {
            "renditions": ["360p", {"width": 320, "height": 180, "name": "tiny"}],
            "audio": False}},
        {"action": "sleep", "parameters": {"seconds": 0.5}, "on_failure": "retry",
         "timeout_seconds": 10},
        description="round trip", queue_name="exports", default_priority=8,
        notify={"job.failed": ["mailto:ops@example.com"]}, sla_minutes=15)
    mq.cli("workflows", "apply", str(mq.write_yaml("wf.yaml", doc)))
    exported = mq.cli("workflows", "export", "T-EXPORT").stdout
    parsed = yaml.safe_load(exported)
    assert parsed["workflow_code"] == "T-EXPORT" and len(parsed["steps"]) == 2
    assert parsed["steps"][0]["parameters"] == {
        "renditions": ["360p", {"width": 320, "height": 180, "name": "tiny"}], "audio": False}
    assert parsed["notify"] == {"job.failed": ["mailto:ops@example.com"]}
    path = mq.root / "exported.yaml"
    path.write_text(exported, encoding="utf-8")
    assert mq.cli("workflows", "apply", str(path)).stdout.strip() == \
        "T-EXPORT: version 1 (unchanged)"
    assert definitions(mq) == 1


def test_list_and_show(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-LIST", {"action": "noop", "step_name": "First"},
                                          {"action": "sleep", "step_name": "Second"},
                                          workflow_name="Listed workflow", queue_name="lq"))
    listing = mq.cli("workflows", "list").stdout
    row = next(line for line in listing.splitlines() if "T-LIST" in line)
    cells = [c.strip() for c in row.strip().strip("│┃").split("│")]
    # workflow_code, workflow_name, version, is_active, resource_category, vram_required,
    # default_priority, queue_name, steps, jobs
    assert cells == ["T-LIST", "Listed workflow", "1", "True", "cpu", "0", "5", "lq", "2", "0"]

    shown = mq.cli("workflows", "show", "T-LIST").stdout
    assert "First" in shown and "Second" in shown and "noop" in shown and "sleep" in shown
    assert any(line.split()[:2] == ["workflow_code", "T-LIST"] for line in shown.splitlines())

    missing = mq.cli("workflows", "show", "NOPE", check=False)
    assert "workflow NOPE does not exist" in one_line_error(missing)


def test_disable_refuses_submissions_and_enable_restores_them(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("T-OFF", {"action": "noop"}))
    path = mq.input_file("a.bin")
    queued = mq.submit("T-OFF", path)
    assert mq.cli("workflows", "disable", "T-OFF").stdout.strip() == "T-OFF: disabled"
    refused = mq.cli("submit", "T-OFF", str(path), check=False)
    line = one_line_error(refused)
    assert "disabled" in line and "T-OFF" in line
    assert int(mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"]) == 1
    mq.run_burst()
    assert mq.job(queued)["status"] == "completed"  # a job already queued still runs

    assert mq.cli("workflows", "enable", "T-OFF").stdout.strip() == "T-OFF: enabled"
    assert mq.job(mq.submit("T-OFF", path))["status"] == "pending"
    assert "does not exist" in one_line_error(mq.cli("workflows", "disable", "NOPE",
                                                     check=False))


# -- invalid files ------------------------------------------------------------------------

GOOD = diagnostic_workflow("T-GOOD", {"action": "noop"})
INVALID = {
    "unknown key": yaml.safe_dump({**GOOD, "colour": "blue"}),
    "unknown step key": yaml.safe_dump({**GOOD, "steps": [{"action": "noop", "colour": 1}]}),
    "bad on_failure": yaml.safe_dump({**GOOD, "steps": [{"action": "noop",
                                                         "on_failure": "explode"}]}),
    "missing action": yaml.safe_dump({**GOOD, "steps": [{"step_name": "nothing"}]}),
    "no steps": yaml.safe_dump({**GOOD, "steps": []}),
    "bad category": yaml.safe_dump({**GOOD, "resource_category": "quantum"}),
    "bad priority": yaml.safe_dump({**GOOD, "default_priority": 11}),
    "timeout not a number": yaml.safe_dump({**GOOD, "steps": [{"action": "noop",
                                                               "timeout_seconds": "soon"}]}),
    "unknown action": yaml.safe_dump({**GOOD, "steps": [{"action": "transcode_hologram"}]}),
    "bad parameters": yaml.safe_dump({**GOOD, "steps": [{"action": "sleep",
                                                         "parameters": {"seconds": -1}}]}),
    "duplicate step name": yaml.safe_dump({**GOOD, "steps": [
        {"action": "noop", "step_name": "a"}, {"action": "noop", "step_name": "a"}]}),
    "not YAML": "workflow_code: T-GOOD\nsteps: [unclosed\n  - : :\n",
    "not a mapping": "- just\n- a list\n",
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_files_are_refused_and_nothing_is_applied(mq: MediaqEnv, case: str) -> None:
    good = mq.write_yaml("good.yaml", GOOD)
    bad = mq.root / "bad.yaml"
    bad.write_text(INVALID[case], encoding="utf-8")
    result = mq.cli("workflows", "apply", str(good), str(bad), check=False)
    line = one_line_error(result)
    assert str(bad) in line
    assert "Traceback" not in result.stderr
    assert definitions(mq) == 0  # not even the good file


REFUSED_STEPS = {
    # case: (steps, the message after "error: FILE: ")
    "unknown action": (
        [{"action": "noop", "step_name": "Check"},
         {"action": "transcode_hologram", "step_name": "Beam"}],
        "workflow T-BAD, step 2 'Beam': unknown action 'transcode_hologram' (no installed "
        "plugin provides it; `mediaq actions` lists the actions)"),
    "parameter of the wrong type": (
        [{"action": "sleep", "step_name": "Nap", "parameters": {"seconds": "soon"}}],
        "workflow T-BAD, step 1 'Nap': parameters refused: action 'sleep': seconds: "
        "'soon' is not of type 'number'"),
    "unknown parameter": (
        [{"action": "create_thumbnail", "step_name": "Thumb", "step_number": 5,
          "parameters": {"sise": 300}}],
        "workflow T-BAD, step 5 'Thumb': parameters refused: action 'create_thumbnail': "
        "parameters: Additional properties are not allowed ('sise' was unexpected)"),
    "value outside the schema": (
        [{"action": "convert_format", "step_name": "Convert", "parameters": {"format": "bmp"}}],
        "workflow T-BAD, step 1 'Convert': parameters refused: action 'convert_format': "
        "format: 'bmp' is not one of ['avif', 'gif', 'jpeg', 'jpg', 'png', 'webp', 'txt', "
        "'pdf']"),
    "duplicate step number": (
        [{"action": "noop", "step_number": 3, "step_name": "A"},
         {"action": "noop", "step_number": 3, "step_name": "B"}],
        "workflow T-BAD, step 3 'B': the number is used by an earlier step "
        "(step numbers must be unique)"),
    "duplicate step name": (
        [{"action": "noop", "step_name": "Same"}, {"action": "noop", "step_name": "Same"}],
        "workflow T-BAD, step 2 'Same': the name is used by an earlier step "
        "(step names must be unique)"),
}


@pytest.mark.parametrize("case", list(REFUSED_STEPS))
def test_steps_that_would_fail_every_job_are_refused_at_apply(mq: MediaqEnv,
                                                               case: str) -> None:
    """Until now these applied and failed every job at run time."""
    steps, message = REFUSED_STEPS[case]
    path = mq.write_yaml("bad.yaml", {"workflow_code": "T-BAD", "steps": steps})
    assert one_line_error(mq.cli("workflows", "apply", str(path), check=False)) == \
        f"error: {path}: {message}"
    assert definitions(mq) == 0
    with pytest.raises(WorkflowError) as raised:  # the API's path names no file
        workflows.normalise({"workflow_code": "T-BAD", "steps": steps})
    assert str(raised.value) == message


def test_a_required_parameter_may_be_left_to_each_job(mq: MediaqEnv) -> None:
    """A workflow may leave a parameter the action requires to the submitter (--param
    STEP.KEY=VALUE is merged over the step's parameters when the step runs): apply takes
    it, and a job without it fails at run time as before."""
    mq.apply_workflow(diagnostic_workflow("T-CONVERT", {"action": "convert_format",
                                                        "step_name": "convert"}))
    from PIL import Image

    picture = mq.inputs / "in.png"
    Image.new("RGB", (32, 24), "teal").save(picture)
    given = mq.submit("T-CONVERT", picture, "--param", "convert.format=webp")
    missing = mq.submit("T-CONVERT", picture)
    mq.run_burst("--no-notifier")
    assert mq.job(given)["status"] == "completed"
    assert mq.job(given)["output_file_path"].endswith(".webp")
    assert mq.job(missing)["status"] == "failed"
    assert "'format' is a required property" in mq.job(missing)["error_message"]


def test_missing_file_is_refused(mq: MediaqEnv) -> None:
    missing = mq.root / "missing.yaml"
    result = mq.cli("workflows", "apply", str(missing), check=False)
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert definitions(mq) == 0


def test_normalise_fills_defaults() -> None:
    doc = workflows.normalise({"workflow_code": " T-N ", "steps": [{"action": "noop"}]})
    assert doc["workflow_code"] == "T-N"
    assert (doc["default_priority"], doc["timeout_minutes"], doc["retry_count"],
            doc["resource_category"], doc["vram_required"]) == (5, 60, 3, "cpu", 0)
    assert doc["steps"] == [{
        "step_number": 1, "step_name": "Step 1", "step_type": None, "action": "noop",
        "parameters": {}, "required_inputs": None, "expected_outputs": None,
        "timeout_seconds": 300, "on_failure": "stop", "sla_seconds": None,
        "needs": None, "when": None, "for_each": None, "resource_category": None,
        "vram_required": None, "fallback": None, "fuse": "auto"}]
    with pytest.raises(WorkflowError, match=r"step 1 'Step 1': the number is used by an "
                       r"earlier step \(step numbers must be unique\)"):
        workflows.normalise({"workflow_code": "T", "steps": [
            {"action": "noop", "step_number": 1}, {"action": "noop", "step_number": 1}]})


def test_written_yaml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(GOOD), encoding="utf-8")
    assert workflows.load_file(path)["steps"][0]["action"] == "noop"
