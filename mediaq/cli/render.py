"""Tables and values for the terminal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.table import Table

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
