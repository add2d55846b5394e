"""mediaq report: step performance, workflow analytics, cycle time, SLA misses, rework
loops, in-flight stages and dead letters, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import click

from mediaq import analytics
from mediaq.cli import Env, pass_env
from mediaq.cli.render import table

FORMATS = ("table", "json", "csv")


def plain(value: Any) -> Any:
    """A value for machines: full precision, timestamps in ISO 8601 with their zone."""
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def as_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps([{k: plain(v) for k, v in row.items()} for row in rows], indent=2,
                      default=str)


def as_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A header line, then one line per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else plain(row.get(c)) for c in columns])
    return out.getvalue()


def show_report(name: str, columns: list[str], rows: list[dict[str, Any]],
                output_format: str) -> None:
    if output_format == "json":
        click.echo(as_json(rows))
    elif output_format == "csv":
        click.echo(as_csv(rows, columns), nl=False)
    elif rows:
        table(rows, columns, title=analytics.TITLES[name])
    else:
        click.echo(f"{analytics.TITLES[name]}: nothing to show")


@click.command("report")
@click.argument("name", type=click.Choice(analytics.REPORTS), metavar="REPORT")
@click.option("--since", "since_text", metavar="DATE|AGE",
              help="Only history since a date (2026-11-01) or an age ago (30m, 12h, 7d, 2w).")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="table",
              show_default=True, help="Output format.")
@pass_env
def report(env: Env, name: str, since_text: str | None, output_format: str) -> None:
    """Analytics over the job history (the analytics views of mediaq/sql/schema.sql).

    \b
    REPORT is one of:
      steps         step performance: durations, failures, queue wait vs run time
      workflows     jobs per workflow: outcomes, durations, wait, workflow SLA misses
      cycle-time    cycle time p50/p90 per stage
      sla           SLA miss rate per stage
      rework        rework loops per stage (a stage started more than once for a job)
      in-flight     stages started and not completed, of jobs still under way
      dead-letters  jobs that failed for good
      eta           estimates recorded at start against what jobs took, per workflow
    """
    since = analytics.parse_since(since_text) if since_text else None
    with env.connect() as conn:
        columns, rows = analytics.run(conn, name, since)
    show_report(name, columns, rows, output_format)


COMMANDS: list[click.Command] = [report]
