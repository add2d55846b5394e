"""A workflow's steps as a graph: who waits for whom, conditions, fan-out, drawing.

Pure functions over step descriptions (no database, no I/O), used by three readers:
``mediaq.workflows`` refuses a graph that cannot run (a cycle, a need on a missing
step, a condition that does not parse), the worker walks it (``mediaq.worker.executor``)
and the CLI draws it.

- ``needs``: the steps (names or numbers) a step waits for. A step without ``needs``
  follows the step before it, so a plain ordered list, seed 000's INSERTs included, is a
  chain, as before.
- ``when``: a CEL expression (Google's Common Expression Language, through cel-python:
  no Python ``eval``, no side effects, no loops) over ``input``, ``params``, ``job`` and
  ``steps``; false records the step as skipped, and a skipped step counts as done.
- ``for_each``: ``{param: [values]}`` (each value sets that parameter) or a CEL
  expression giving a list of mappings (each merged into the parameters), for example
  ``steps.split.chunks``: one task per item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from mediaq.errors import WorkflowError


class GraphStep(Protocol):
    """What the graph needs of a step (``worker.job_run.Step`` and the YAML dicts'
    ``StepNode`` are ones)."""

    @property
    def number(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def needs(self) -> tuple[str | int, ...] | None: ...


@dataclass(frozen=True)
class StepNode:
    """A step as the graph sees it, for callers holding plain mappings."""

    number: int
    name: str
    needs: tuple[str | int, ...] | None = None


class ConditionError(Exception):
    """A condition or a fan-out list could not be evaluated (a missing field, a type
    mismatch); the message is one line."""


def slug(name: str) -> str:
    """A step name as an expression may write it: ``Extract Metadata`` -> ``extract_metadata``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


# -- who waits for whom -----------------------------------------------------------------


def resolve_needs(steps: Sequence[GraphStep]) -> dict[int, tuple[int, ...]]:
    """Each step's needed step numbers. WorkflowError names a need on a missing step or on
    the step itself."""
    by_name = {s.name: s.number for s in steps}
    by_slug = {slug(s.name): s.number for s in steps}
    numbers = {s.number for s in steps}
    resolved: dict[int, tuple[int, ...]] = {}
    previous: int | None = None
    for step in sorted(steps, key=lambda s: s.number):
        if step.needs is None:
            resolved[step.number] = (previous,) if previous is not None else ()
        else:
            found = []
            for need in step.needs:
                number = _find_step(need, by_name, by_slug, numbers)
                if number is None:
                    raise WorkflowError(f"step {step.number} '{step.name}': needs '{need}', "
                                        "which is not a step of this workflow")
                if number == step.number:
                    raise WorkflowError(f"step {step.number} '{step.name}': needs itself")
                found.append(number)
            resolved[step.number] = tuple(sorted(set(found)))
        previous = step.number
    return resolved


def _find_step(need: str | int, by_name: Mapping[str, int], by_slug: Mapping[str, int],
               numbers: set[int]) -> int | None:
    if isinstance(need, int) and not isinstance(need, bool):
        return need if need in numbers else None
    text = str(need)
    if text.isdigit():
        return int(text) if int(text) in numbers else None
    return by_name.get(text, by_slug.get(slug(text)))


def topological_order(steps: Sequence[GraphStep]) -> list[int]:
    """Step numbers, each after everything it needs, ties by step number. WorkflowError
    names a step on a cycle."""
    needs = resolve_needs(steps)
    remaining = {number: set(deps) for number, deps in needs.items()}
    order: list[int] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps)
        if not ready:
            on_cycle = min(remaining)
            names = {s.number: s.name for s in steps}
            raise WorkflowError(f"step {on_cycle} '{names[on_cycle]}': its needs form a cycle "
                                f"(through steps {', '.join(map(str, sorted(remaining)))})")
        for number in ready:
            order.append(number)
            del remaining[number]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def ancestors(needs: Mapping[int, tuple[int, ...]], number: int) -> set[int]:
    """Every step ``number`` waits for, directly or not."""
    seen: set[int] = set()
    stack = list(needs.get(number, ()))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(needs.get(current, ()))
    return seen


def depths(needs: Mapping[int, tuple[int, ...]]) -> dict[int, int]:
    """Each step's stage: 1 + the longest chain of needs before it."""
    depth: dict[int, int] = {}

    def of(number: int) -> int:
        if number not in depth:
            depth[number] = 1 + max((of(n) for n in needs.get(number, ())), default=0)
        return depth[number]

    for number in needs:
        of(number)
    return depth


# -- conditions and fan-out lists (CEL) ---------------------------------------------------


@lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    import celpy  # imported on first use: it loads a grammar (lark)
    from celpy.celparser import CELParseError

    env = celpy.Environment()
    try:
        return env.program(env.compile(expression))
    except CELParseError as exc:
        detail = " ".join(str(exc).split())
        raise WorkflowError(f"'{expression}' does not parse as a CEL expression ({detail})"
                            ) from None


def check_expression(expression: str) -> None:
    """WorkflowError when ``expression`` does not parse."""
    _program(expression)


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    """The expression's value (plain Python: bool, int, float, str, list, dict) over
    ``variables``; ConditionError says why it has none."""
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    program = _program(expression)
    activation = {key: json_to_cel(value) for key, value in variables.items()}
    try:
        value = program.evaluate(activation)
    except CELEvalError as exc:
        raise ConditionError(_eval_reason(expression, exc)) from None
    if isinstance(value, CELEvalError):
        raise ConditionError(_eval_reason(expression, value))
    return _plain(value)


def _eval_reason(expression: str, exc: Exception) -> str:
    detail = exc.args[0] if exc.args else str(exc)
    return f"'{expression}' cannot be evaluated: {detail}"


def _plain(value: Any) -> Any:
    """A CEL value as plain Python (celpy's types subclass the Python ones; its BoolType
    is an int)."""
    from celpy import celtypes

    if isinstance(value, bool | celtypes.BoolType):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def condition_holds(expression: str, variables: Mapping[str, Any]) -> bool:
    value = evaluate(expression, variables)
    if not isinstance(value, bool):
        raise ConditionError(f"'{expression}' gave {value!r}, not true or false")
    return value


def check_for_each(for_each: Any) -> None:
    """WorkflowError unless ``for_each`` is ``{param: [values...]}`` (one parameter, a
    non-empty list) or a CEL expression."""
    if isinstance(for_each, str):
        check_expression(for_each)
        return
    if (not isinstance(for_each, dict) or len(for_each) != 1
            or not isinstance(next(iter(for_each.values())), list)
            or not next(iter(for_each.values()))):
        raise WorkflowError("it must be {parameter: [values, ...]} or an expression "
                            "giving a list of mappings (for example steps.split.chunks)")


def items_of(for_each: Any, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The parameters each item of a fanned-out step adds, in order."""
    if isinstance(for_each, dict):
        (param, values), = for_each.items()
        return [{param: value} for value in values]
    value = evaluate(str(for_each), variables)
    if not isinstance(value, list):
        raise ConditionError(f"for_each '{for_each}' gave {type(value).__name__}, not a list")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConditionError(f"for_each '{for_each}': item {index} is "
                                 f"{type(item).__name__}, not a mapping of parameters")
    return value


# -- drawing ------------------------------------------------------------------------------


def draw(steps: Iterable[tuple[GraphStep, str]],
         notes: Mapping[int, str] | None = None) -> list[str]:
    """The graph as text, one line per step, grouped by stage (steps of one stage may run
    side by side): the step, its ``label`` (its action, its state…), what it waits for,
    and its note (keyed by step number)."""
    pairs = sorted(steps, key=lambda pair: pair[0].number)
    needs = resolve_needs([step for step, _ in pairs])
    depth = depths(needs)
    width = max(len(f"{step.number} {step.name}") for step, _ in pairs)
    lines: list[str] = []
    for stage in sorted(set(depth.values())):
        head = f"stage {stage}"
        for step, label in (pair for pair in pairs if depth[pair[0].number] == stage):
            waits = ", ".join(map(str, needs[step.number]))
            note = (notes or {}).get(step.number)
            lines.append(f"{head:<9}{f'{step.number} {step.name}':<{width}}  {label}"
                         + (f"  <- {waits}" if waits else "") + (f"  {note}" if note else ""))
            head = ""
    return lines
