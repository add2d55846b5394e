"""What the executor knows about one claimed job: its steps and what this run accumulates.

Loaded once per attempt (``load_run``); the executor's decisions and the completer's
writes both read it, so it lives apart from either.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaq import db, graph
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
    needs: tuple[str | int, ...] | None = None  # None: follows the step before
    when: str | None = None
    for_each: Any = None
    fuse: str = "auto"


@dataclass(frozen=True)
class Item:
    """One task of a step: the step itself, or one item of a fanned-out step."""

    index: int | None  # None: the step is not fanned out
    params: dict[str, Any]
    count: int = 1  # how many items the step has

    @property
    def label(self) -> str:
        return "" if self.index is None else f" [item {self.index + 1}/{self.count}]"


SINGLE = Item(None, {})


@dataclass
class JobRun:
    """What one run of a job knows and accumulates."""

    context: db.Row
    steps: list[Step]
    history: dict[tuple[int, int | None], db.Row]  # by (step id, item index)
    input_path: Path | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    failed_steps: list[dict[str, Any]] = field(default_factory=list)
    job_deadline: float = 0.0
    completed: JobCompleted | None = None  # written with the last step's commit
    # The graph: each step's needed step numbers, and the steps in an order that runs
    # everything after what it needs (mediaq.graph).
    needs: dict[int, tuple[int, ...]] = field(default_factory=dict)
    order: list[Step] = field(default_factory=list)
    # What finished steps gave, by step number: output_data, or the list of a fanned-out
    # step's items' output_data. Failed (continue) and skipped steps are absent.
    results: dict[int, Any] = field(default_factory=dict)
    # Step number -> its primary output's record (where it is recorded, size, SHA-256):
    # read, fetched where it lives in a store, only by a step that opens its source.
    primaries: dict[int, dict[str, Any]] = field(default_factory=dict)

    def percent(self, step: Step, *, done: bool, item: Item = SINGLE) -> float:
        """The job's progress at the start (or the end) of ``step`` (of one of its items)."""
        position = self.order.index(step) if self.order else self.steps.index(step)
        share = 1.0 / item.count
        within = (item.index or 0) * share + (share if done else 0.0)
        return 100.0 * (position + within) / len(self.steps)

    def is_last(self, step: Step, item: Item) -> bool:
        """The task whose commit completes the job."""
        last = self.order[-1] if self.order else self.steps[-1]
        return step is last and (item.index is None or item.index == item.count - 1)

    def source_output(self, step: Step) -> dict[str, Any] | None:
        """What ``step`` reads: the primary output of the latest step it (indirectly)
        needs that made one (in a chain: the last primary so far), None for the job's
        input."""
        before = graph.ancestors(self.needs, step.number) if self.needs else set()
        position = {s.number: i for i, s in enumerate(self.order)}
        made = [n for n in self.primaries if n in before]
        if not made:
            return None
        return self.primaries[max(made, key=lambda n: position.get(n, n))]

    def source_for(self, step: Step) -> str:
        """Where ``step``'s source is recorded (an earlier primary output's location,
        which may be an s3:// object), else the job's input as read here."""
        assert self.input_path is not None
        output = self.source_output(step)
        return str(self.input_path) if output is None else str(output["path"])

    def expression_variables(self) -> dict[str, Any]:
        """What a ``when`` or ``for_each`` expression sees: the job's input and
        parameters, and the finished steps' outputs by name and by slug."""
        by_number = {s.number: s for s in self.steps}
        steps: dict[str, Any] = {}
        for number, result in self.results.items():
            name = by_number[number].name
            steps[name] = steps[graph.slug(name)] = result
        input_path = Path(str(self.context["input_file_path"]))
        metadata = self.context.get("input_metadata")
        params = self.context["params"]
        return {
            "input": {**(metadata if isinstance(metadata, dict) else {}),
                      "path": str(input_path), "name": input_path.name,
                      "extension": input_path.suffix.lower().lstrip("."),
                      "size_bytes": self.context.get("input_bytes") or 0},
            "params": params if isinstance(params, dict) else {},
            "job": {"code": self.context.get("job_code"),
                    "workflow": self.context.get("workflow_code")},
            "steps": steps,
        }

    def needs_outputs(self, step: Step) -> dict[str, Any]:
        """The results of the steps ``step`` needs, by slug (``extract_metadata``)."""
        by_number = {s.number: s for s in self.steps}
        return {graph.slug(by_number[number].name): self.results[number]
                for number in self.needs.get(step.number, ()) if number in self.results}

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
            needs=tuple(r["needs"]) if isinstance(r["needs"], list) else None,
            when=r["when_expr"], for_each=r["for_each"], fuse=r["fuse"] or "auto",
        )
        for r in step_rows
    ]
    run = JobRun(context=context, steps=steps,
                 history={(h["step_id"], h["item_index"]): h for h in history})
    run.job_deadline = time.monotonic() + float(context["seconds_left"])
    return run


def plan_graph(run: JobRun) -> None:
    """Resolve the steps' needs and the order to run them in. A graph that cannot run
    (only a hand-written INSERT makes one: `workflows apply` refuses them) raises
    WorkflowError, naming the step."""
    run.needs = graph.resolve_needs(run.steps)
    by_number = {s.number: s for s in run.steps}
    run.order = [by_number[n] for n in graph.topological_order(run.steps)]
