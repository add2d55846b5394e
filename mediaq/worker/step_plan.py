"""What a step comes to before it runs: skipped (its condition is false), its items (one
task, or one per item of a ``for_each``), or a failure when neither can be worked out;
and which steps run together in one decode-once pass.

The expressions are evaluated here, over what the run knows (``JobRun.expression_variables``);
``mediaq.graph`` evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediaq import graph
from mediaq.actions import get_action
from mediaq.errors import ActionNotAvailable, StepFailed
from mediaq.worker.job_run import SINGLE, Item, JobRun, Step
from mediaq.worker.outcomes import ErrorClass


@dataclass(frozen=True)
class Skip:
    """The step's condition is false: it is recorded as skipped and counts as done."""

    reason: str


def plan_items(step: Step, run: JobRun) -> Skip | StepFailed | list[Item]:
    """The step's tasks in order; Skip when its ``when`` is false; StepFailed (permanent:
    the same expression over the same results gives the same answer) when its ``when`` or
    ``for_each`` cannot be evaluated."""
    if step.when is None and step.for_each is None:
        return [SINGLE]
    variables = run.expression_variables()
    try:
        if step.when is not None and not graph.condition_holds(step.when, variables):
            return Skip(f"its condition is false (when: {step.when})")
        if step.for_each is None:
            return [SINGLE]
        items = graph.items_of(step.for_each, variables)
    except graph.ConditionError as exc:
        return StepFailed(ErrorClass.PERMANENT, f"step {step.number} '{step.name}': {exc}")
    return [Item(index, params, len(items)) for index, params in enumerate(items)]


def fused_groups(run: JobRun) -> list[list[Step]]:
    """The steps in graph order, in groups: unstarted sibling steps of one fusable action
    that read the same source form a group (one pass); others stand alone."""
    groups: list[list[Step]] = []
    for step in run.order:
        previous = groups[-1][-1] if groups else None
        if (previous is not None and _may_fuse(run, previous, step)
                and _may_fuse(run, step, previous)
                and _same_source(run, groups[-1][0], step)):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _may_fuse(run: JobRun, step: Step, other: Step) -> bool:
    """Whether ``step`` may run in one pass with ``other``: the same fusable action,
    unconditional, not fanned out, not started yet, not opted out (``fuse: never``)."""
    return (step.action == other.action and _fusable(step.action) and step.fuse == "auto"
            and step.when is None and step.for_each is None
            and (step.id, None) not in run.history)


def _same_source(run: JobRun, first: Step, step: Step) -> bool:
    """Whether ``step`` reads what the group starting at ``first`` reads: it needs what
    ``first`` needs, or it follows the group in a chain (no ``needs`` of its own; a
    fusable action's outputs are renditions, never the next step's source)."""
    needs = run.needs.get(step.number, ())
    return needs == run.needs.get(first.number, ()) or (
        step.needs is None and len(needs) == 1 and needs[0] >= first.number)


def _fusable(action_name: str) -> bool:
    try:
        return get_action(action_name).fuse is not None
    except ActionNotAvailable:
        return False
