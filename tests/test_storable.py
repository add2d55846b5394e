"""Issue 22: text PostgreSQL cannot store (NUL, lone surrogates) from media files.

``mediaq.storable`` makes every worker write storable; a result the database still
refuses for its data fails its step for good with a one-line reason naming the file,
while a lost connection still abandons the attempt to its lease.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from mediaq import actions, db
from mediaq.actions import ActionContext, ActionResult
from mediaq.config import Settings
from mediaq.storable import REPLACEMENT, storable, storable_text
from mediaq.worker.claimer import Claimer
from mediaq.worker.executor import Executor
from mediaq.worker.job_run import Step
from mediaq.worker.outcomes import (
    Abandoned,
    ErrorClass,
    JobCompleted,
    JobFailed,
    TaskDone,
    unstorable_reason,
)
from mediaq.worker.resources import Capacity
from tests.helpers import MediaqEnv, claim_in_process
from tests.test_outcomes import Recorder, fusable
from tests.test_outcomes import run_job as outcomes_run_job

# -- the sanitiser ---------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(exclude_categories=()))  # NUL and surrogates too
JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12)


def unstorable_chars(text: str) -> bool:
    return any(c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF for c in text)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE kept (j jsonb, t text)")
        yield conn


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSONABLE, text=ANY_TEXT)
def test_any_jsonable_value_becomes_storable_in_jsonb_and_text_columns(
    conn: psycopg.Connection[Any], value: Any, text: str,
) -> None:
    kept = storable(value)
    clean = storable_text(text)
    row = conn.execute("INSERT INTO kept VALUES (%s, %s) RETURNING j, t",
                       (Jsonb(kept), clean)).fetchone()
    assert row is not None
    assert row[1] == clean and not unstorable_chars(clean)
    assert len(clean) == len(text)  # replaced one for one, never dropped
    assert row[0] == kept


@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.text().filter(
        lambda t: not unstorable_chars(t)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text().filter(lambda t: not unstorable_chars(t)), inner, max_size=4),
    max_leaves=12))
def test_values_without_nul_or_surrogates_are_unchanged(value: Any) -> None:
    assert storable(value) == value


def test_nul_and_lone_surrogates_become_the_replacement_character_keys_too() -> None:
    assert storable({"ti\x00tle": ["a\x00b", ("\ud800", 1.5)], "n": None}) == {
        f"ti{REPLACEMENT}tle": [f"a{REPLACEMENT}b", (REPLACEMENT, 1.5)], "n": None}
    wrapped = storable(Jsonb({"t": "x\x00"}))
    assert isinstance(wrapped, Jsonb) and wrapped.obj == {"t": f"x{REPLACEMENT}"}
    same = "plain text, ü and 🎞"
    assert storable_text(same) is same


# -- what a refused write means ----------------------------------------------------------


@pytest.mark.parametrize("exc", [
    psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence"),
    psycopg.errors.InvalidTextRepresentation("invalid input syntax for type json"),
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    psycopg.errors.NumericValueOutOfRange("value out of range"),
    psycopg.errors.ProgramLimitExceeded("total size of jsonb object elements exceeds"),
    UnicodeEncodeError(
        "utf-8", "\ud800", 0, 1, "surrogates not allowed"),
])
def test_a_refusal_for_the_data_is_permanent(exc: BaseException) -> None:
    reason = unstorable_reason(exc)
    assert reason and "\n" not in reason


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.TooManyConnections("sorry, too many clients already"),
    psycopg.InterfaceError("the connection is closed"),
    psycopg.errors.UndefinedTable("relation does not exist"),  # a bug, not the data
    ValueError("x"),
])
def test_a_lost_connection_is_not_a_refusal_for_the_data(exc: BaseException) -> None:
    assert unstorable_reason(exc) is None


@dataclasses.dataclass
class RefusesResults(Recorder):
    """A handle whose database refuses a completed step's result, as PostgreSQL does."""

    error: BaseException = dataclasses.field(
        default_factory=lambda: psycopg.errors.UntranslatableCharacter(
            "unsupported Unicode escape sequence"))

    def commit_step(self, execution_id: int, **params: Any) -> list[int]:
        if params["status"] == "completed":
            raise self.error
        return super().commit_step(execution_id, **params)


def run_job(settings: Settings, monkeypatch: pytest.MonkeyPatch, handle: Recorder,
            *steps: Step) -> Any:
    source = settings.storage.effective_input_roots[0] / "report.pdf"
    source.write_bytes(b"%PDF-")
    return outcomes_run_job(settings, monkeypatch, *steps, handle=handle,
                            input_path=source)[0]


@pytest.fixture
def tmp_settings(tmp_path: Path) -> Settings:
    # No database behind the recording handle: the action breakers (which read theirs)
    # are off, as in every test but tests/test_breakers.py.
    settings = Settings().replace(home=tmp_path, action_breaker_threshold=0)
    settings.storage.effective_input_roots[0].mkdir(parents=True)
    return settings


def a_step(number: int = 1, on_failure: str = "retry") -> Step:
    return Step(id=number, number=number, name=f"noop {number}", action="noop",
                parameters={}, timeout_seconds=60, on_failure=on_failure)


def test_a_refused_result_fails_the_step_for_good_naming_the_file(
    tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = RefusesResults()
    outcome = run_job(tmp_settings, monkeypatch, handle, a_step(1), a_step(2))
    assert isinstance(outcome, JobFailed) and outcome.error_class == ErrorClass.PERMANENT
    assert outcome.message == ("step 1 'noop 1' failed: report.pdf: the step's result cannot"
                               " be stored: unsupported Unicode escape sequence")
    assert handle.names == ["step_start", "step_finish:failed", "job_fail"]
    closed = [p for n, p in handle.writes if n == "step_finish"]
    assert closed[0]["error_class"] == "permanent"  # never retried, even with on_failure: retry


def test_a_refused_result_of_a_continue_step_lets_the_job_complete_without_it(
    tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = RefusesResults()
    outcome = run_job(tmp_settings, monkeypatch, handle, a_step(1, on_failure="continue"))
    assert isinstance(outcome, JobCompleted)
    assert outcome.outputs == () and outcome.failed_steps[0]["step"] == 1
    assert "cannot be stored" in outcome.failed_steps[0]["error"]


def test_a_refused_result_in_a_one_pass_run_closes_the_later_steps_before_the_job_fails(
    tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = fusable(monkeypatch, lambda contexts: [ActionResult() for _ in contexts])
    handle = RefusesResults()
    steps = [dataclasses.replace(a_step(n, on_failure="stop"), action=name) for n in (1, 2)]
    outcome = run_job(tmp_settings, monkeypatch, handle, *steps)
    assert isinstance(outcome, JobFailed) and "report.pdf: the step's result cannot be" \
        " stored" in outcome.message
    # Step 2 closes (fused) while the job is still ours, then step 1, then the job.
    assert handle.names == ["step_start", "step_start", "step_finish:cancelled",
                            "step_finish:failed", "job_fail"]


def test_a_connection_lost_while_saving_a_result_still_abandons_to_the_lease(
    tmp_settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = RefusesResults(error=psycopg.OperationalError("server closed the connection"))
    outcome = run_job(tmp_settings, monkeypatch, handle, a_step(1))
    assert outcome == Abandoned("server closed the connection")
    assert handle.names == ["step_start"]


# -- a real database, a real handle ------------------------------------------------------


@pytest.fixture
def returning(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Register a test action ``t_returns`` answering ``data`` (and logging ``line``)."""
    answer: dict[str, Any] = {}

    def t_returns(ctx: ActionContext) -> ActionResult:
        ctx.log(answer.get("line", "working"))
        return ActionResult(data=answer["data"])

    actions.get_action("noop")  # the built-ins first: they never replace ours
    actions.action("t_returns", {"properties": {}})(t_returns)
    monkeypatch.setitem(actions._registry, "t_returns", actions._registry.pop("t_returns"))
    return answer


def run_claimed(pool: ConnectionPool[db.Connection], settings: Settings) -> tuple[Any, int]:
    source = settings.storage.effective_input_roots[0] / "report.pdf"
    source.write_bytes(b"%PDF-1.4")
    handle, claimed = claim_in_process(pool, "T-NUL", source, {"action": "t_returns"},
                                       {"action": "noop"})
    worker = Executor(settings)
    outcome = worker.run(handle, claimed.workflow_id)
    # Each step is a task of its own: the worker goes on with the job's next one
    # (run-ahead, as `mediaq worker` does) until the job's outcome.
    claimer = Claimer(pool, worker_id=handle.worker_id, host="test-host",
                      capacity=Capacity(categories=("cpu",), limits={"cpu": 1},
                                        vram_budget_mb=0),
                      queues=None, lease_seconds=300)
    while isinstance(outcome, TaskDone):
        following = claimer.claim("cpu", prefer_job_id=claimed.id, only_preferred=True)
        assert following is not None, "the job's next task is ready for this worker"
        handle.continue_with(following.task_id, following.task_attempt, following.step_id,
                             following.item_index, following.attempt)
        outcome = worker.run(handle, claimed.workflow_id)
    return outcome, claimed.id


def stored(pool: ConnectionPool[db.Connection], job_id: int) -> tuple[dict[str, Any],
                                                                      list[dict[str, Any]]]:
    with db.transaction(pool) as conn:
        job = conn.execute("SELECT * FROM mediaq.workflow_jobs WHERE id = %s",
                           (job_id,)).fetchone()
        steps = conn.execute("SELECT * FROM mediaq.step_executions WHERE job_id = %s"
                             " ORDER BY id", (job_id,)).fetchall()
    assert job is not None
    return job, steps


def test_a_nul_in_a_result_and_a_log_line_is_stored_replaced(
    pool: ConnectionPool[db.Connection], tmp_settings: Settings, returning: Any,
) -> None:
    returning["data"] = {"metadata": {"title": "Quarterly\x00report", "k\x00": ["\ud83d"]}}
    returning["line"] = "read the title 'Quarterly\x00report'"
    outcome, job_id = run_claimed(pool, tmp_settings)
    assert isinstance(outcome, JobCompleted), outcome
    job, steps = stored(pool, job_id)
    assert job["status"] == "completed"
    assert steps[0]["output_data"]["metadata"] == {
        "title": f"Quarterly{REPLACEMENT}report", f"k{REPLACEMENT}": [REPLACEMENT]}
    assert f"read the title 'Quarterly{REPLACEMENT}report'" in job["log"]


def test_a_result_postgresql_refuses_for_another_reason_fails_the_job_in_one_line(
    pool: ConnectionPool[db.Connection], tmp_settings: Settings, returning: Any,
) -> None:
    # JSON has no NaN: PostgreSQL refuses the token (invalid input syntax for type json).
    returning["data"] = {"loudness_lufs": math.nan}
    outcome, job_id = run_claimed(pool, tmp_settings)
    assert isinstance(outcome, JobFailed), outcome
    job, steps = stored(pool, job_id)
    assert job["status"] == "failed" and job["error_class"] == "permanent"
    message = job["error_message"]
    assert message.startswith("step 1 't_returns 1' failed: report.pdf: the step's result"
                              " cannot be stored: invalid input syntax for type json"), message
    assert "\n" not in message
    assert [s["status"] for s in steps] == ["failed"]  # once, never retried
    assert steps[0]["output_data"] is None


# -- a real file through the seeded workflow and a burst worker --------------------------


def nul_titled_pdf(path: Path) -> Path:
    """A PDF written by reportlab whose Info Title and Author hold a NUL (reportlab writes
    it as the octal escape \\000, which pdfium reads back as U+0000), as third-party PDFs do."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setTitle("Quarterly\x00report")
    pdf.setAuthor("Finance\x00team")
    pdf.setFont("Helvetica", 18)
    pdf.drawString(72, A4[1] - 96, "Quarterly report: revenue grew in every region.")
    pdf.showPage()
    pdf.save()
    assert b"/Title (Quarterly\\000report)" in path.read_bytes()
    return path


@pytest.mark.slow
def test_a_pdf_whose_title_holds_a_nul_completes_with_the_nul_replaced(mq: MediaqEnv) -> None:
    mq.seed()
    code = mq.submit("WF-DOC-PROCESS", nul_titled_pdf(mq.inputs / "report.pdf"))
    burst = mq.run_burst(timeout=120)
    job = mq.job(code)
    assert job["status"] == "completed", (job["error_message"], burst.stderr[-2000:])
    assert burst.returncode == 0
    [validated] = mq.query(
        """SELECT se.output_data FROM step_executions se
             JOIN workflow_steps ws ON ws.id = se.step_id
             JOIN workflow_jobs j ON j.id = se.job_id
            WHERE j.job_code = %s AND ws.step_number = 1""", (code,))
    metadata = validated["output_data"]["metadata"]
    assert metadata["title"] == f"Quarterly{REPLACEMENT}report"
    assert metadata["author"] == f"Finance{REPLACEMENT}team"
    assert job["attempt"] == 1  # claimed once: never abandoned, rescued and re-run
    assert "abandoned" not in burst.stderr
