"""What the executor knows about one claimed job: its steps and what this run accumulates.

Loaded once per attempt (``load_run``); the executor's decisions and the completer's
writes both read it, so it lives apart from either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaq import db
from mediaq.worker.job_handle import JobHandle
from mediaq.worker.outcomes import JobCompleted


@dataclass(frozen=True)
class Step:
    id: int
    number: int
    name: str
    action: str
    parameters: dict[str, Any]
    timeout_seconds: int
    on_failure: str


@dataclass
class JobRun:
    """What one run of a job knows and accumulates."""

    context: db.Row
    steps: list[Step]
    history: dict[int, db.Row]
    input_path: Path | None = None
    source_path: Path | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    failed_steps: list[dict[str, Any]] = field(default_factory=list)
    job_deadline: float = 0.0
    completed: JobCompleted | None = None  # written with the last step's commit

    def percent(self, step: Step, *, done: bool) -> float:
        """The job's progress at the start (or the end) of ``step``."""
        return 100.0 * (self.steps.index(step) + (1 if done else 0)) / len(self.steps)

    def step_overrides(self, step: Step) -> dict[str, Any]:
        """Per-job parameters for a step, keyed by step number, name or action."""
        params = self.context["params"]
        if not isinstance(params, dict):  # a hand-written INSERT may store anything
            return {}
        merged: dict[str, Any] = {}
        for key in (step.action, step.name, str(step.number)):
            value = params.get(key)
            if isinstance(value, dict):
                merged.update(value)
        return merged

    def completion(self) -> JobCompleted:
        """The job's completion as its outputs stand now."""
        return JobCompleted(outputs=tuple(self.outputs), failed_steps=tuple(self.failed_steps),
                            workflow_code=self.context["workflow_code"],
                            workflow_version=self.context["workflow_version"])


def load_run(handle: JobHandle, workflow_id: int) -> JobRun:
    # The job is ours and a workflow version never changes: the reads need no
    # transaction around them (each is its own, with no BEGIN and COMMIT to wait for).
    with handle.pool.connection() as conn:
        context = db.fetch_one(conn, "job_context", {"job_id": handle.job_id})
        step_rows = db.fetch_all(conn, "workflow_steps_of", {"workflow_id": workflow_id})
        history = db.fetch_all(conn, "step_history_of_job", {"job_id": handle.job_id})
    assert context is not None
    steps = [
        Step(
            id=r["id"], number=r["step_number"] or 0,
            name=r["step_name"] or f"step {r['step_number']}",
            action=r["action"] or "", parameters=r["parameters"] or {},
            timeout_seconds=r["timeout_seconds"] or 300, on_failure=r["on_failure"] or "stop",
        )
        for r in step_rows
    ]
    run = JobRun(context=context, steps=steps, history={h["step_id"]: h for h in history})
    run.job_deadline = time.monotonic() + float(context["seconds_left"])
    return run
