"""Submitting work from Python, inside the caller's own transaction if they like."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mediaq import dedupe
from mediaq.errors import SubmissionRefused
from mediaq.queries import queries
from mediaq.storable import storable


def parse_param(text: str) -> tuple[str, str, Any]:
    """``step.key=value`` → (step, key, value); the value parsed as YAML (numbers, booleans)."""
    import yaml

    target, sep, raw = text.partition("=")
    step, dot, key = target.rpartition(".")
    if not sep or not dot or not step or not key:
        raise SubmissionRefused(f"bad --param {text!r}: expected STEP.KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw else ""
        json.dumps(value, allow_nan=False)  # parameters are stored as JSON
    except (yaml.YAMLError, TypeError, ValueError):
        value = raw  # dates, sets, NaN, odd tags: keep the text as typed
    return step, key, value


def params_from_pairs(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        step, key, value = parse_param(pair)
        params.setdefault(step, {})[key] = value
    return params


REFUSALS = (psycopg.errors.RaiseException, psycopg.errors.NoDataFound,
            psycopg.errors.ObjectNotInPrerequisiteState, psycopg.errors.NotNullViolation,
            psycopg.errors.CheckViolation, psycopg.errors.ForeignKeyViolation)


@contextlib.contextmanager
def _savepoint(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Keep the caller's transaction usable after a refusal, and never commit it.

    psycopg's ``conn.transaction()`` would commit when no transaction is open yet; a
    plain SAVEPOINT instead opens the caller's implicit transaction and leaves the
    commit to them. In autocommit mode the statement is its own transaction.
    """
    if conn.autocommit:
        yield
        return
    conn.execute(queries["submit_savepoint"])
    try:
        yield
    except BaseException:
        conn.execute(queries["submit_rollback_to_savepoint"])
        raise
    conn.execute(queries["submit_release_savepoint"])


def submit(
    conn: psycopg.Connection[Any],
    workflow_code: str,
    input_path: str | Path,
    *,
    priority: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    notify: Sequence[str] = (),
    idempotency_key: str | None = None,
    submitted_by: str | None = None,
) -> dict[str, Any]:
    """Create a job (or return the one with the same idempotency key).

    Runs on ``conn`` without committing: the job exists once the caller's transaction
    commits, and disappears with it if the caller rolls back.
    """
    if priority is not None and not 1 <= priority <= 10:
        raise SubmissionRefused(f"priority {priority} is outside 1..10")
    params_row = {
        "workflow_code": workflow_code,
        "input_file_path": str(input_path),
        "priority": priority,
        # A caller's metadata may quote a file's own tags: made storable (no NUL).
        "params": Jsonb(storable(params or {})),
        "metadata": Jsonb(storable(metadata)) if metadata is not None else None,
        "notify": list(notify),
        "idempotency_key": idempotency_key,
        "submitted_by": submitted_by,
    }
    # The caller's connection may return tuples: every statement here reads dicts.
    with conn.cursor(row_factory=dict_row) as cur:
        plan = _dedupe_plan(cur, workflow_code, input_path, params or {})
    with conn.cursor(row_factory=dict_row) as cur, _savepoint(conn):
        if plan is not None:
            holder = dedupe.claim_or_find(cur, plan.key, plan.window_s)
            if holder is not None:
                return holder
        try:
            cur.execute(queries["job_submit"], params_row)
        except REFUSALS as exc:
            raise SubmissionRefused(exc.diag.message_primary or str(exc)) from None
        row = cur.fetchone()
        assert row is not None
        _record_input_bytes(cur, row["id"], input_path)
        if plan is not None:
            row = cur.execute(queries["dedupe_attach"], {
                "key": plan.key, "job_id": row["id"], "content_hash": plan.digest}).fetchone()
            assert row is not None
    return row


def _record_input_bytes(cur: psycopg.Cursor[dict[str, Any]], job_id: int,
                        input_path: str | Path) -> None:
    """Note the input's size so the job's estimate can scale with it (files only)."""
    size = _file_size(str(input_path))
    if size is not None:
        cur.execute(queries["job_set_input_bytes"], {"job_id": job_id, "input_bytes": size})


@dataclass(frozen=True)
class DedupePlan:
    key: str
    digest: str
    window_s: int


def _dedupe_plan(cur: psycopg.Cursor[dict[str, Any]], workflow_code: str,
                 input_path: str | Path, params: dict[str, Any]) -> DedupePlan | None:
    """The key of this submission when its workflow de-duplicates, else None."""
    workflow = cur.execute(queries["workflow_dedupe_window"],
                           {"workflow_code": workflow_code}).fetchone()
    if workflow is None or not workflow["dedupe_window_seconds"]:
        return None  # an unknown workflow is refused by the submission itself
    digest = dedupe.input_hash(input_path)
    return DedupePlan(dedupe.dedupe_key(workflow_code, workflow["version"], digest, params),
                      digest, workflow["dedupe_window_seconds"])


def submit_batch(
    conn: psycopg.Connection[Any],
    workflow_code: str,
    input_paths: Sequence[str | Path],
    *,
    priority: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    submitted_by: str | None = None,
) -> list[str]:
    """Many jobs of one workflow in one INSERT ... SELECT FROM unnest; their job codes,
    in the order of ``input_paths``. Like :func:`submit`, nothing is committed here.

    The fast path for bulk loads (one statement instead of one function call per job);
    a de-duplicating workflow takes its inputs through :func:`submit` one at a time,
    since each needs its content hashed and its key claimed.
    """
    if priority is not None and not 1 <= priority <= 10:
        raise SubmissionRefused(f"priority {priority} is outside 1..10")
    texts = [str(path) for path in input_paths]
    if any(not text for text in texts):
        raise SubmissionRefused("an input file path is required")
    with conn.cursor(row_factory=dict_row) as cur:
        workflow = cur.execute(queries["workflow_submittable"],
                               {"workflow_code": workflow_code}).fetchone()
        if workflow is None:
            raise SubmissionRefused(f"workflow {workflow_code} does not exist")
        if not workflow["is_active"]:
            raise SubmissionRefused(f"workflow {workflow_code} is disabled")
        if workflow["dedupe_window_seconds"]:
            return [submit(conn, workflow_code, text, priority=priority, params=params,
                           submitted_by=submitted_by)["job_code"] for text in texts]
        sizes: dict[str, int | None] = {}
        for text in texts:
            if text not in sizes:
                sizes[text] = _file_size(text)
        with _savepoint(conn):
            rows = cur.execute(queries["jobs_submit_batch"], {
                "workflow_code": workflow_code, "paths": texts,
                "sizes": [sizes[text] for text in texts], "priority": priority,
                "params": Jsonb(storable(params or {})), "submitted_by": submitted_by,
            }).fetchall()
    return [row["job_code"] for row in rows]


def _file_size(text: str) -> int | None:
    """A file's size for the job's estimate; None for folders and unreadable paths (and
    a NUL in the path: the worker refuses those)."""
    try:
        path = Path(text)
        return path.stat().st_size if path.is_file() else None
    except (OSError, ValueError):
        return None
