"""A job's states (and its step executions'), in Python.

The database defines the state machine: the states are the rows of
``mediaq.job_statuses`` (and the CHECK on ``workflow_jobs.status``), the moves between
them the rows of ``mediaq.job_status_transitions``, and a trigger refuses any other
move, whoever makes it. ``JobStatus`` mirrors the states; tests/test_job_transitions.py
fails when the two (or the lists the web and CLI layers keep) drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple


class JobStatus(StrEnum):
    """The value of ``workflow_jobs.status``."""

    PENDING = "pending"
    """Claimable: new, resumed, retried, handed back or rescued (a ``retry_after`` in the
    future holds it until then)."""
    QUEUED = "queued"
    """Claimable, but a worker found too little free VRAM (``waiting_reason`` says why)."""
    PROCESSING = "processing"
    """Owned by one worker (``worker_id``, ``attempt``) until its lease runs out."""
    PAUSED = "paused"
    """Held by an operator until resumed."""
    COMPLETED = "completed"
    """Done."""
    FAILED = "failed"
    """A dead letter (``error_class`` says why), until an operator retries it."""
    CANCELLED = "cancelled"
    """Stopped by an operator, until an operator retries it."""

    @property
    def terminal(self) -> bool:
        """No worker touches the job again (an operator may retry a failed or cancelled one)."""
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """Waiting for a worker or running on one (what ETAs and live views follow)."""
        return self in ACTIVE

    @property
    def claimable(self) -> bool:
        """A worker may claim the job (once its ``retry_after``, if any, has passed)."""
        return self in CLAIMABLE


TERMINAL: tuple[JobStatus, ...] = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE: tuple[JobStatus, ...] = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.PROCESSING)
CLAIMABLE: tuple[JobStatus, ...] = (JobStatus.PENDING, JobStatus.QUEUED)
INITIAL = JobStatus.PENDING  # the column default: every submission starts here


class StepStatus(StrEnum):
    """The value of ``step_executions.status`` (its CHECK lists the same ones): one
    execution of one step, within one attempt of the job."""

    PENDING = "pending"
    """Not started (the column default; the worker inserts executions already running)."""
    RUNNING = "running"
    """Started by the job's owner (``step_start``), not closed yet."""
    COMPLETED = "completed"
    """Its outputs are published; a later attempt skips the step."""
    FAILED = "failed"
    """The step failed (``error_class`` says how), or a rescue found it running."""
    CANCELLED = "cancelled"
    """Stopped by a cancel, a pause or a drain, or closed after a failed one-pass run."""
    SKIPPED = "skipped"
    """Its condition (``when``) was false: never ran, counts as done for the steps that
    need it; ``output_data.skipped`` says why."""


class TaskState(StrEnum):
    """The value of ``job_tasks.state`` (the rows of ``mediaq.task_states``; the moves:
    ``mediaq.task_state_transitions``, enforced by a trigger): one runnable step of a
    job, or one item of a fanned-out step."""

    WAITING = "waiting"
    """Some steps it needs are unfinished (``pending_needs`` counts them)."""
    READY = "ready"
    """Claimable by any capable worker (once its ``retry_after``, if any, has passed)."""
    RUNNING = "running"
    """Owned by one worker (``worker_id``, ``attempt``) until its lease runs out."""
    COMPLETED = "completed"
    """Its step (item) committed, or its items were made (a fan-out)."""
    SKIPPED = "skipped"
    """Its condition was false: counts as done for the steps that need it."""
    FAILED = "failed"
    """Given up on; under ``on_failure: continue`` it counts as done."""
    CANCELLED = "cancelled"
    """The job ended (cancelled, failed) before the task finished."""

    @property
    def terminal(self) -> bool:
        """No worker touches the task again (a retry of its job may reset it)."""
        return self in TASK_TERMINAL


TASK_TERMINAL: tuple[TaskState, ...] = (TaskState.COMPLETED, TaskState.SKIPPED,
                                        TaskState.FAILED, TaskState.CANCELLED)


class Transition(NamedTuple):
    """One row of ``mediaq.job_status_transitions``."""

    from_status: str
    to_status: str
    description: str = ""


def as_transitions(rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[Transition]:
    """Rows of ``job_status_transitions`` (dicts, or tuples in column order) as Transitions."""
    found = []
    for row in rows:
        if isinstance(row, Mapping):
            found.append(Transition(row["from_status"], row["to_status"],
                                    row.get("description") or ""))
        else:
            found.append(Transition(*row))
    return found


# A description names the statements of mediaq/sql/queries.sql that make the move, each
# clause as "name[, name...]: why", clauses separated by "; ".
_NAMES = re.compile(r"(?:^|;\s+)([a-z][a-z0-9_]*(?:,\s*[a-z][a-z0-9_]*)*):")


def statements_of(description: str) -> list[str]:
    """The statement names a transition's description gives, in order, once each."""
    names: list[str] = []
    for group in _NAMES.findall(description):
        for name in (n.strip() for n in group.split(",")):
            if name not in names:
                names.append(name)
    return names


def mermaid(rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> str:
    """The transitions as a mermaid ``stateDiagram-v2``: an arrow per move, labelled with
    the statements that make it; ``[*]`` into the initial state and out of the states
    that no move leaves.

    >>> print(mermaid([("pending", "processing", "job_claim_next: a worker claims it"),
    ...                ("processing", "completed", "job_complete: done")]))
    stateDiagram-v2
        [*] --> pending
        pending --> processing : job_claim_next
        processing --> completed : job_complete
        completed --> [*]
    """
    moves = as_transitions(rows)
    order = {status.value: i for i, status in enumerate(JobStatus)}

    def rank(status: str) -> tuple[int, str]:
        return (order.get(status, len(order)), status)

    moves.sort(key=lambda t: (rank(t.from_status), rank(t.to_status)))
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL}"]
    for move in moves:
        label = ", ".join(statements_of(move.description))
        lines.append(f"    {move.from_status} --> {move.to_status}"
                     + (f" : {label}" if label else ""))
    left = {t.from_status for t in moves}
    seen = sorted({t.to_status for t in moves} - left, key=rank)
    lines.extend(f"    {status} --> [*]" for status in seen)
    return "\n".join(lines)


def mermaid_edges(text: str) -> set[tuple[str, str]]:
    """The (from, to) arrows between states of a mermaid state diagram (``[*]`` left out):
    what a drawing of the machine must agree with ``job_status_transitions`` on."""
    edges = set()
    for line in text.splitlines():
        match = re.match(r"\s*([\w\[\]*]+)\s*-->\s*([\w\[\]*]+)", line)
        if match and "[*]" not in match.groups():
            edges.add((match.group(1), match.group(2)))
    return edges
