"""What a step comes to before it runs: skipped (its condition is false), its items (one
task, or one per item of a ``for_each``), or a failure when neither can be worked out.

The expressions are evaluated here, over what the run knows (``JobRun.expression_variables``);
``mediaq.graph`` evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediaq import graph
from mediaq.errors import StepFailed
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
