"""Workflows are data: YAML files in, versioned rows out.

A YAML workflow has the columns of ``workflow_definitions`` (plus
``resource_category``, ``vram_required``, ``queue_name``, ``sla_minutes``,
``notify``) and a ``steps:`` list with the columns of ``workflow_steps`` (a step's SLA
as ``sla_seconds``, or ``sla_minutes``, stored in seconds).
Applying a changed workflow makes a new version; jobs keep the version they
were submitted with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from psycopg.types.json import Jsonb

from mediaq import db, graph
from mediaq.actions import get_action
from mediaq.errors import ActionNotAvailable, InvalidParameters, WorkflowError

SEED_DIR = Path(__file__).resolve().parent / "seed_workflows"

DEFINITION_FIELDS: dict[str, Any] = {
    "workflow_name": None, "description": None, "workflow_type": None, "input_types": None,
    "output_types": None, "default_priority": 5, "timeout_minutes": 60, "retry_count": 3,
    "is_active": True, "created_by": None, "resource_category": "cpu", "vram_required": 0,
    "queue_name": None, "sla_minutes": None, "notify": {}, "dedupe_window_seconds": None,
}
STEP_FIELDS: dict[str, Any] = {
    "step_number": None, "step_name": None, "step_type": None, "action": None, "parameters": {},
    "required_inputs": None, "expected_outputs": None, "timeout_seconds": 300,
    "on_failure": "stop", "sla_seconds": None,
}
# A step's place in the graph (mediaq/graph.py) and its own resources; the defaults make
# a chain of steps that run where the workflow says.
GRAPH_DEFAULTS: dict[str, Any] = {
    "needs": None, "when": None, "for_each": None, "resource_category": None,
    "vram_required": None, "fallback": None, "fuse": "auto",
}
STEP_FIELDS.update(GRAPH_DEFAULTS)
# YAML key -> workflow_steps column, where the two differ (WHEN is an SQL keyword).
GRAPH_COLUMNS = {"when": "when_expr", "fallback": "fallback_category"}
FUSE = ("auto", "never")
CATEGORIES = ("cpu", "gpu_encode", "gpu_ai")
ON_FAILURE = ("stop", "continue", "retry")


@dataclass(frozen=True)
class ApplyResult:
    workflow_code: str
    version: int
    changed: bool


def normalise(doc: dict[str, Any], source: str = "workflow") -> dict[str, Any]:
    """Check a workflow document and fill defaults; WorkflowError names the problem."""
    if not isinstance(doc, dict):
        raise WorkflowError(f"{source}: expected a mapping at the top level")
    code = doc.get("workflow_code")
    if not isinstance(code, str) or not code.strip() or len(code) > 50:
        raise WorkflowError(f"{source}: workflow_code is required (at most 50 characters)")
    known = {"workflow_code", "steps", "steps_json", "version", *DEFINITION_FIELDS}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise WorkflowError(f"{source}: unknown keys: {', '.join(unknown)}")
    out: dict[str, Any] = {"workflow_code": code.strip()}
    for key, default in DEFINITION_FIELDS.items():
        out[key] = doc.get(key, default)
    if out["resource_category"] not in CATEGORIES:
        raise WorkflowError(f"{source}: resource_category must be one of {', '.join(CATEGORIES)}")
    if not isinstance(out["vram_required"], int) or out["vram_required"] < 0:
        raise WorkflowError(f"{source}: vram_required must be a whole number of MB ≥ 0")
    if not isinstance(out["default_priority"], int) or not 1 <= out["default_priority"] <= 10:
        raise WorkflowError(f"{source}: default_priority must be 1..10")
    for key in ("timeout_minutes", "retry_count", "sla_minutes"):
        value = out[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 0):
            raise WorkflowError(f"{source}: {key} must be a whole number ≥ 0")
    window = out["dedupe_window_seconds"]
    if window is not None and (not isinstance(window, int) or isinstance(window, bool)
                               or window <= 0):
        raise WorkflowError(f"{source}: dedupe_window_seconds must be a whole number > 0 "
                            "(identical inputs inside it share one job)")
    for key in ("workflow_name", "description", "workflow_type", "input_types",
                "output_types", "created_by", "queue_name"):
        if out[key] is not None and not isinstance(out[key], str):
            raise WorkflowError(f"{source}: {key} must be text")
    if not isinstance(out["notify"], dict):
        raise WorkflowError(f"{source}: notify must map event types to lists of recipients")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        raise WorkflowError(f"{source}: steps must be a non-empty list")
    out["steps"] = [_normalise_step(s, i, source) for i, s in enumerate(steps, start=1)]
    _check_steps(out, source)
    return out


def _check_steps(doc: dict[str, Any], source: str) -> None:
    """Refuse, before anything is written, what would fail every job of the workflow at
    run time: a step number or name used twice (a job's ``--param`` names a step by
    either), an action no installed plugin provides, parameters the action's schema
    refuses. Parameters are checked as the workflow gives them: a key the schema
    requires may be left to each job (``--param STEP.KEY=VALUE``), since jobs' parameters
    are merged over the step's when it runs and checked in full then."""
    prefix = "" if source == "workflow" else f"{source}: "
    seen_numbers: set[int] = set()
    seen_names: set[str] = set()
    for step in doc["steps"]:
        where = (f"{prefix}workflow {doc['workflow_code']}, "
                 f"step {step['step_number']} '{step['step_name']}'")
        if step["step_number"] in seen_numbers:
            raise WorkflowError(f"{where}: the number is used by an earlier step "
                                "(step numbers must be unique)")
        if step["step_name"] in seen_names:
            raise WorkflowError(f"{where}: the name is used by an earlier step "
                                "(step names must be unique)")
        seen_numbers.add(step["step_number"])
        seen_names.add(step["step_name"])
        _check_step_resources(step, where)
        try:
            registered = get_action(step["action"])
        except ActionNotAvailable as exc:
            broken = str(exc).partition("; ")[2]
            raise WorkflowError(
                f"{where}: unknown action '{step['action']}' (no installed plugin provides "
                "it; `mediaq actions` lists the actions)" + (f"; {broken}" if broken else "")
            ) from None
        try:
            registered.validate(step["parameters"], partial=True)
        except InvalidParameters as exc:
            detail = " ".join(str(exc).split())  # one line, whatever the value printed
            raise WorkflowError(f"{where}: parameters refused: {detail}") from None
    _check_graph(doc, prefix)


def _check_step_resources(step: dict[str, Any], where: str) -> None:
    for key in ("resource_category", "fallback"):
        if step[key] is not None and step[key] not in CATEGORIES:
            raise WorkflowError(f"{where}: {key} must be one of {', '.join(CATEGORIES)}")
    vram = step["vram_required"]
    if vram is not None and (not isinstance(vram, int) or isinstance(vram, bool) or vram < 0):
        raise WorkflowError(f"{where}: vram_required must be a whole number of MB ≥ 0")
    if step["fuse"] not in FUSE:
        raise WorkflowError(f"{where}: fuse must be one of {', '.join(FUSE)}")


def _check_graph(doc: dict[str, Any], prefix: str) -> None:
    """Refuse a graph that cannot run: a need on a missing step, a cycle, a condition or
    fan-out list that does not parse."""
    where = f"{prefix}workflow {doc['workflow_code']}"
    nodes = [graph.StepNode(s["step_number"], s["step_name"],
                            tuple(s["needs"]) if s["needs"] is not None else None)
             for s in doc["steps"]]
    try:
        graph.topological_order(nodes)
    except WorkflowError as exc:
        raise WorkflowError(f"{where}, {exc}") from None
    for step in doc["steps"]:
        named = f"{where}, step {step['step_number']} '{step['step_name']}'"
        for key, check in (("when", graph.check_expression), ("for_each", graph.check_for_each)):
            if step[key] is not None:
                try:
                    check(step[key])
                except WorkflowError as exc:
                    raise WorkflowError(f"{named}: {key}: {exc}") from None


def _normalise_step(step: Any, index: int, source: str) -> dict[str, Any]:
    if not isinstance(step, dict):
        raise WorkflowError(f"{source}: step {index} must be a mapping")
    unknown = sorted(set(step) - set(STEP_FIELDS) - {"sla_minutes"})
    if unknown:
        raise WorkflowError(f"{source}: step {index}: unknown keys: {', '.join(unknown)}")
    out = {key: step.get(key, default) for key, default in STEP_FIELDS.items()}
    out["sla_seconds"] = _step_sla_seconds(step, index, source)
    for key in ("step_number", "timeout_seconds", "sla_seconds"):
        value = out[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise WorkflowError(f"{source}: step {index}: {key} must be a whole number ≥ 1")
    for key in ("step_name", "step_type", "action", "required_inputs", "expected_outputs"):
        if out[key] is not None and not isinstance(out[key], str):
            raise WorkflowError(f"{source}: step {index}: {key} must be text")
    out["step_number"] = out["step_number"] or index
    out["step_name"] = out["step_name"] or f"Step {out['step_number']}"
    if not out["action"]:
        raise WorkflowError(f"{source}: step {index}: action is required")
    if out["on_failure"] not in ON_FAILURE:
        raise WorkflowError(f"{source}: step {index}: on_failure must be one of "
                            f"{', '.join(ON_FAILURE)}")
    if not isinstance(out["parameters"], dict):
        raise WorkflowError(f"{source}: step {index}: parameters must be a mapping")
    out["needs"] = _step_needs(out["needs"], index, source)
    if out["when"] is not None and not isinstance(out["when"], str):
        raise WorkflowError(f"{source}: step {index}: when must be an expression (text)")
    return out


def _step_needs(needs: Any, index: int, source: str) -> list[str | int] | None:
    """``needs`` as a list of step names or numbers (one may be given bare)."""
    if needs is None:
        return None
    if isinstance(needs, str | int) and not isinstance(needs, bool):
        needs = [needs]
    if not isinstance(needs, list) or not all(
            isinstance(n, str | int) and not isinstance(n, bool) for n in needs):
        raise WorkflowError(f"{source}: step {index}: needs must list step names or numbers")
    return needs


def _step_sla_seconds(step: dict[str, Any], index: int, source: str) -> Any:
    """A step's SLA is stored in seconds; YAML may give it as ``sla_minutes`` instead."""
    minutes = step.get("sla_minutes")
    if minutes is None:
        return step.get("sla_seconds")
    if step.get("sla_seconds") is not None:
        raise WorkflowError(f"{source}: step {index}: give sla_minutes or sla_seconds, not both")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1:
        raise WorkflowError(f"{source}: step {index}: sla_minutes must be a whole number ≥ 1")
    return minutes * 60


def load_file(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise WorkflowError(f"{path}: not valid YAML ({where}{problem})") from None
    return normalise(doc, str(path))


def export(conn: db.Connection, workflow_code: str) -> dict[str, Any]:
    """The current version of a workflow as a YAML-ready document."""
    current = db.fetch_one(conn, "workflow_current", {"workflow_code": workflow_code})
    if current is None:
        raise WorkflowError(f"workflow {workflow_code} does not exist")
    doc: dict[str, Any] = {"workflow_code": current["workflow_code"]}
    doc.update({k: current[k] for k in DEFINITION_FIELDS})
    steps = db.fetch_all(conn, "workflow_steps_full", {"workflow_id": current["id"]})
    doc["steps"] = [{k: s[GRAPH_COLUMNS.get(k, k)] for k in STEP_FIELDS} for s in steps]
    doc["version"] = current["version"]
    return doc


def _comparable(doc: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in doc.items() if k != "version"}, sort_keys=True,
                      default=str)


def apply(conn: db.Connection, doc: dict[str, Any]) -> ApplyResult:
    """Create or update a workflow (a new version only when something changed)."""
    code = doc["workflow_code"]
    current = db.fetch_one(conn, "workflow_current", {"workflow_code": code})
    if current is not None:
        if _comparable(export(conn, code)) == _comparable(doc):
            return ApplyResult(code, int(current["version"]), changed=False)
        db.execute(conn, "workflow_retire_current", {"workflow_code": code})
    version = int(current["version"]) + 1 if current else 1
    steps_json = json.dumps(doc["steps"])
    row = db.fetch_one(conn, "workflow_insert", {
        **{k: doc[k] for k in DEFINITION_FIELDS if k != "notify"},
        "workflow_code": code, "version": version, "steps_json": steps_json,
        "notify": Jsonb(doc["notify"] or {}), "fallback_category": fallback_category(doc),
    })
    assert row is not None
    for step in doc["steps"]:
        db.execute(conn, "workflow_step_insert", {
            **{GRAPH_COLUMNS.get(k, k): v for k, v in step.items()},
            "workflow_id": row["id"], "parameters": Jsonb(step["parameters"] or {}),
            "needs": Jsonb(step["needs"]) if step["needs"] is not None else None,
            "for_each": Jsonb(step["for_each"]) if step["for_each"] is not None else None,
        })
    return ApplyResult(code, version, changed=True)


def fallback_category(doc: dict[str, Any]) -> str | None:
    """Where the workflow's jobs may run when no live worker serves its category: the
    fallback every step that needs a GPU names (``fallback: cpu``), if they all name the
    same one; None (the jobs wait) otherwise, and for a CPU workflow."""
    own = doc["resource_category"]
    on_gpu = [s for s in doc["steps"] if (s["resource_category"] or own) != "cpu"]
    fallbacks = {s["fallback"] for s in on_gpu}
    if own == "cpu" or not on_gpu or len(fallbacks) != 1 or None in fallbacks:
        return None
    (fallback,) = fallbacks
    return str(fallback) if fallback != own else None


def seed(conn: db.Connection) -> list[ApplyResult]:
    """Install (or update) the built-in workflows of ``mediaq/seed_workflows/``."""
    return [apply(conn, load_file(path)) for path in sorted(SEED_DIR.glob("*.yaml"))]


def set_active(conn: db.Connection, workflow_code: str, active: bool) -> None:
    if db.fetch_one(conn, "workflow_set_active",
                    {"workflow_code": workflow_code, "active": active}) is None:
        raise WorkflowError(f"workflow {workflow_code} does not exist")
