"""Tables and values for the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mediaq import graph

console = Console(soft_wrap=False, width=200)

STATUS_STYLE = {
    "failed": "red", "processing": "yellow", "queued": "blue", "pending": "white",
    "completed": "green", "cancelled": "magenta", "paused": "cyan",
}


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    out = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        cells = []
        for column in columns:
            text = fmt(row.get(column))
            style = STATUS_STYLE.get(text) if column == "status" else None
            cells.append(f"[{style}]{text}[/{style}]" if style else text)
        out.add_row(*cells)
    console.print(out)


def as_json(data: Any) -> str:
    return json.dumps(data, default=fmt, indent=2)


def show_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str, *,
              as_json_output: bool) -> None:
    """A listing command's output: every column as JSON, or a table of ``columns``."""
    if as_json_output:
        click.echo(as_json(rows))
    else:
        table(rows, columns, title=title)


def draw_graph(steps: Sequence[dict[str, Any]], label: Callable[[dict[str, Any]], str],
               title: str = "Graph") -> None:
    """A workflow's (or a job's) steps as a graph, stage by stage: rows with
    ``step_number``, ``step_name`` and ``needs`` (as stored), each labelled by ``label``."""
    nodes = [(graph.StepNode(int(s["step_number"] or 0), str(s["step_name"]),
                             tuple(s["needs"]) if isinstance(s.get("needs"), list) else None),
              label(s)) for s in steps]
    console.print(f"[bold]{title}[/bold] (a step runs once every step after its '<-' is done)")
    for line in graph.draw(nodes):
        click.echo(line)


def resources_label(step: dict[str, Any]) -> str:
    """Where a step runs: its category (the workflow's when it names none), its VRAM and
    its fallback category."""
    category = step.get("resource_category") or "workflow's"
    vram = f" {step['vram_required']} MB" if step.get("vram_required") else ""
    fallback = f", else {step['fallback']}" if step.get("fallback") else ""
    return f"[{category}{vram}{fallback}]"
