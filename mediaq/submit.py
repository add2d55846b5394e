"""Submitting work from Python, inside the caller's own transaction if they like."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mediaq.errors import SubmissionRefused
from mediaq.queries import queries


def parse_param(text: str) -> tuple[str, str, Any]:
    """``step.key=value`` → (step, key, value); the value parsed as YAML (numbers, booleans)."""
    import yaml

    target, sep, raw = text.partition("=")
    step, dot, key = target.rpartition(".")
    if not sep or not dot or not step or not key:
        raise SubmissionRefused(f"bad --param {text!r}: expected STEP.KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return step, key, value


def params_from_pairs(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        step, key, value = parse_param(pair)
        params.setdefault(step, {})[key] = value
    return params


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
    with conn.cursor(row_factory=dict_row) as cur:
        try:
            with conn.transaction():  # a savepoint inside the caller's transaction
                cur.execute(queries["job_submit"], {
                    "workflow_code": workflow_code,
                    "input_file_path": str(input_path),
                    "priority": priority,
                    "params": Jsonb(params or {}),
                    "metadata": Jsonb(metadata) if metadata is not None else None,
                    "notify": list(notify),
                    "idempotency_key": idempotency_key,
                    "submitted_by": submitted_by,
                })
                row = cur.fetchone()
        except psycopg.errors.RaiseException as exc:
            raise SubmissionRefused(exc.diag.message_primary or str(exc)) from None
        except (psycopg.errors.NoDataFound, psycopg.errors.ObjectNotInPrerequisiteState,
                psycopg.errors.NotNullViolation, psycopg.errors.CheckViolation) as exc:
            raise SubmissionRefused(exc.diag.message_primary or str(exc)) from None
    assert row is not None
    return row
