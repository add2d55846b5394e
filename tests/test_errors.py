"""The two exception trees: what a person is shown, and what only steers the executor."""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from starlette.requests import Request

from mediaq import errors
from mediaq.actions import ActionContext
from mediaq.cli import MediaqGroup
from mediaq.config import Settings
from mediaq.errors import (
    Cancelled,
    ConfigError,
    Conflict,
    Interrupt,
    InvalidTransition,
    JobNotFound,
    LeaseLost,
    MediaqError,
    NotFound,
    Paused,
    PermanentError,
    Refused,
    SchemaOutdated,
    StepFailed,
    StepTimedOut,
    TransientError,
    Unavailable,
)
from mediaq.web.errors import install
from mediaq.worker.executor import Executor, JobRun, Step
from mediaq.worker.isolation import run_isolated
from mediaq.worker.job_handle import StopSignal
from tests.helpers import action_context

SIGNALS = (Cancelled, Paused, LeaseLost)


def all_classes() -> Iterator[type[BaseException]]:
    for _, value in inspect.getmembers(errors, inspect.isclass):
        if issubclass(value, BaseException) and value.__module__ == errors.__name__:
            yield value


def test_every_class_is_in_exactly_one_tree() -> None:
    for cls in all_classes():
        assert issubclass(cls, MediaqError) != issubclass(cls, Interrupt), cls


@pytest.mark.parametrize("signal", [*SIGNALS, StepFailed])
def test_a_signal_is_not_a_mediaq_error(signal: type[Interrupt]) -> None:
    assert issubclass(signal, Interrupt)
    assert not issubclass(signal, MediaqError)
    try:
        raise signal("permanent", "x") if signal is StepFailed else signal()
    except MediaqError:  # pragma: no cover - the point of the test
        pytest.fail(f"except MediaqError caught {signal.__name__}")
    except Interrupt:
        pass


def test_step_timeout_is_a_transient_step_failure_not_a_signal() -> None:
    # ActionContext.check raises it; the executor retries it like any transient failure.
    assert issubclass(StepTimedOut, TransientError)
    assert not issubclass(StepTimedOut, Interrupt)


def test_messages_default_to_the_docstring() -> None:
    assert Cancelled().message == "The job was cancelled by an operator."
    assert JobNotFound("job J-1 does not exist").message == "job J-1 does not exist"


@pytest.mark.parametrize("cls", sorted(all_classes(), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_class_survives_a_process_boundary(cls: type[BaseException]) -> None:
    # A step run in a child process sends its exception back pickled.
    exc = cls("transient", "it broke") if cls is StepFailed else cls("it broke")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == "it broke"
    if isinstance(back, StepFailed):
        assert back.error_class == "transient"


# -------------------------------------------------------------------------- web


def answer(exc: Exception) -> tuple[int, dict[str, str]]:
    """What the app answers when a route raises ``exc``: the handler of the nearest
    class in its MRO, as Starlette chooses it."""
    app = FastAPI()
    install(app)
    handler = next(app.exception_handlers[cls] for cls in type(exc).__mro__
                   if cls in app.exception_handlers)
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    response = asyncio.run(handler(request, exc))
    return response.status_code, json.loads(bytes(response.body))


def make(name: str) -> Exception:
    cls = getattr(errors, name)
    exc: Exception = cls("permanent", "m") if cls is StepFailed else cls("m")
    return exc


@pytest.mark.parametrize(("name", "status"), [
    ("Refused", 400), ("SubmissionRefused", 400), ("WorkflowError", 400),
    ("SignatureError", 400), ("TargetRefused", 400), ("ReportRefused", 400),
    ("NotFound", 404), ("JobNotFound", 404),
    ("Conflict", 409), ("InvalidTransition", 409),
    ("Unavailable", 503), ("SchemaOutdated", 503),
    ("ConfigError", 500),
    ("PermanentError", 400), ("InputRefused", 400), ("InvalidParameters", 400),
    ("TransientError", 503), ("StepTimedOut", 503),
    ("MediaqError", 400),
])
def test_each_family_has_its_status(name: str, status: int) -> None:
    code, body = answer(make(name))
    assert code == status
    assert body["status"] == status and body["detail"].endswith("m")  # an RFC 9457 problem


@pytest.mark.parametrize("name", ["Cancelled", "Paused", "LeaseLost", "StepFailed", "Interrupt"])
def test_a_signal_is_never_a_bad_request(name: str) -> None:
    assert answer(make(name)) == (500, {"type": "about:blank", "title": "Internal Server Error",
                                        "status": 500, "detail": "internal error",
                                        "instance": "/"})


def test_families_are_distinct() -> None:
    families = (Refused, NotFound, Conflict, Unavailable, ConfigError, PermanentError,
                TransientError)
    for cls in all_classes():
        owners = [f for f in families if issubclass(cls, f)]
        assert len(owners) <= 1, (cls, owners)
    assert issubclass(JobNotFound, NotFound) and issubclass(InvalidTransition, Conflict)
    assert issubclass(SchemaOutdated, Unavailable)
    assert issubclass(PermanentError, errors.StepError)


# -------------------------------------------------------------------------- CLI


def cli_raising(exc: BaseException) -> MediaqGroup:
    group = MediaqGroup()

    @group.command()
    def boom() -> None:
        raise exc

    return group


@pytest.mark.parametrize("exc", [JobNotFound("job J-1 does not exist"),
                                 InvalidTransition("job J-1 is completed: cannot cancel it"),
                                 SchemaOutdated("run `mediaq db upgrade`"),
                                 PermanentError("bad input")])
def test_cli_prints_one_line_and_exits_1(exc: MediaqError) -> None:
    result = CliRunner().invoke(cli_raising(exc), ["boom"])
    assert result.exit_code == 1
    assert result.output == f"error: {exc.message}\n"


def test_cli_names_configuration_problems() -> None:
    result = CliRunner().invoke(cli_raising(ConfigError("lease_seconds must be at least 2")),
                                ["boom"])
    assert result.exit_code == 1
    assert result.output == "error: configuration: lease_seconds must be at least 2\n"


def test_cli_reports_an_escaped_signal_as_a_bug() -> None:
    result = CliRunner().invoke(cli_raising(Cancelled()), ["boom"])
    assert result.exit_code == 70
    assert result.output.startswith("error: internal error: Cancelled escaped")


# -------------------------------------------------------------------------- executor


def a_step(on_failure: str = "stop") -> Step:
    return Step(id=1, number=1, name="s", action="noop", parameters={}, timeout_seconds=5,
                on_failure=on_failure)


def a_run() -> JobRun:
    run = JobRun(context={"timeout_minutes": 60}, steps=[a_step()], history={})
    run.job_deadline = time.monotonic() + 3600
    return run


def classified(exc: BaseException, on_failure: str = "stop") -> BaseException:
    def call() -> None:
        raise exc

    with pytest.raises(BaseException) as caught:
        Executor(Settings())._classified(a_step(on_failure), a_run(), call)
    return caught.value


@pytest.mark.parametrize("signal", [Cancelled(), Paused(), LeaseLost("elsewhere")])
def test_the_executor_passes_signals_on_unclassified(signal: Interrupt) -> None:
    assert classified(signal) is signal


@pytest.mark.parametrize(("exc", "error_class"), [
    (PermanentError("bad input"), "permanent"),
    (errors.InputRefused("outside the roots"), "permanent"),
    (TransientError("busy"), "transient"),
    (StepTimedOut("too slow"), "transient"),
    (RuntimeError("a bug"), "permanent"),
])
def test_the_executor_classifies_step_errors(exc: Exception, error_class: str) -> None:
    failed = classified(exc)
    assert isinstance(failed, StepFailed) and failed.error_class == error_class


def test_a_stop_request_from_ctx_check_is_a_signal() -> None:
    stop = StopSignal()
    stop.stop(Paused())
    ctx = ActionContext(job_code="J", step_number=1, step_name="s", input_path=Path("/i"),
                        source_path=Path("/i"), params={}, staging_dir=Path("/s"),
                        cancel_event=stop)
    with pytest.raises(Paused) as caught:
        ctx.check()
    assert not isinstance(caught.value, MediaqError)
    late = ActionContext(job_code="J", step_number=1, step_name="s", input_path=Path("/i"),
                         source_path=Path("/i"), params={}, staging_dir=Path("/s"),
                         deadline=time.monotonic() - 1)
    with pytest.raises(StepTimedOut):  # a step failure the executor retries, not a signal
        late.check()


# -------------------------------------------------------------------------- isolation


def test_errors_and_signals_cross_the_process_boundary_intact(tmp_path: Path) -> None:
    """A step run in a child process: its step errors come back pickled, as the same
    class and message; a stop request is raised in the worker, not in the child."""
    source = tmp_path / "in.bin"
    source.write_bytes(b"x")
    isolated = Settings().replace(step_isolation=True)

    def context(name: str, params: dict[str, object], **extra: object) -> ActionContext:
        return action_context(name, source, tmp_path / name, params, **extra)

    with pytest.raises(TransientError, match=r"^try later$") as failed:
        run_isolated("fail", [context("fail", {"kind": "transient", "message": "try later"})],
                     fused=False, settings=isolated)
    assert type(failed.value) is TransientError
    with pytest.raises(StepTimedOut):
        run_isolated("sleep", [context("sleep", {"seconds": 5},
                                       deadline=time.monotonic() + 0.5)],
                     fused=False, settings=isolated)
    stop = StopSignal()
    stop.stop(Cancelled())
    with pytest.raises(Cancelled):
        run_isolated("sleep", [context("sleep", {"seconds": 5}, cancel_event=stop)],
                     fused=False, settings=isolated)


def test_an_isolated_step_asks_the_worker_for_what_it_reads(tmp_path: Path) -> None:
    """A step in a child gets its source, and any earlier output, from the worker when it
    opens it (the worker's resolver runs in the parent), and only then; it sees its
    needed steps' results."""
    stored = tmp_path / "store" / "made.bin"
    stored.parent.mkdir()
    stored.write_bytes(b"made by another host")
    asked: list[str] = []

    def fetch(output: dict[str, object]) -> Path:  # the worker's side: a "download"
        asked.append(str(output["path"]))
        return stored

    record = {"path": "s3://bucket/jobs/J/made.bin", "step": 1}
    ctx = ActionContext(
        job_code="TEST-1", step_number=2, step_name="checksum", input_path=stored,
        source_path=lambda: fetch(record), source_location=str(record["path"]),
        params={}, staging_dir=tmp_path / "stage", resolve_output=fetch,
        previous_outputs=[record, {"path": "s3://bucket/jobs/J/other.bin", "step": 1}],
        needs_outputs={"make": {"outputs": [record], "value": 7}}, item_index=None)
    isolated = Settings().replace(step_isolation=True)
    (result,) = run_isolated("checksum", [ctx], fused=False, settings=isolated)
    assert asked == [record["path"]]  # the source alone, not the other output
    assert result.data["source"] == record["path"]
    assert result.data["size_bytes"] == stored.stat().st_size
    (echoed,) = run_isolated("echo", [ActionContext(
        job_code="TEST-1", step_number=2, step_name="echo", input_path=stored,
        source_path=lambda: fetch(record), params={"value": 1},
        staging_dir=tmp_path / "stage", resolve_output=fetch,
        needs_outputs={"make": {"outputs": [record], "value": 7}})],
        fused=False, settings=isolated)
    assert echoed.data["received"] == {"make": 7}
    assert asked == [record["path"]]  # echo opened nothing
