"""mediaq workflows …, mediaq actions."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from mediaq import db, workflows
from mediaq.actions import available_actions
from mediaq.cli import Env, pass_env
from mediaq.cli.render import draw_graph, fmt, resources_label, table


@click.group("workflows")
def workflows_group() -> None:
    """Workflow definitions (versioned data)."""


def _report(results: list[workflows.ApplyResult]) -> None:
    for r in results:
        state = f"version {r.version}" + ("" if r.changed else " (unchanged)")
        click.echo(f"{r.workflow_code}: {state}")


@workflows_group.command("seed")
@pass_env
def seed(env: Env) -> None:
    """Install the built-in workflows (video, chunked video, image, audio, document,
    analysis; idempotent)."""
    with env.connect() as conn:
        _report(workflows.seed(conn))


@workflows_group.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@pass_env
def apply(env: Env, files: tuple[Path, ...]) -> None:
    """Create or update workflows from YAML files (a change makes a new version)."""
    docs = [workflows.load_file(f) for f in files]  # all valid before any is applied
    with env.connect() as conn:
        _report([workflows.apply(conn, d) for d in docs])


@workflows_group.command("list")
@pass_env
def list_workflows(env: Env) -> None:
    """List current workflows."""
    with env.connect() as conn:
        rows = db.fetch_all(conn, "workflows_list")
    table(rows, ["workflow_code", "workflow_name", "version", "is_active", "resource_category",
                 "vram_required", "default_priority", "queue_name", "steps", "jobs"])


@workflows_group.command("show")
@click.argument("code")
@pass_env
def show(env: Env, code: str) -> None:
    """Show a workflow and its steps."""
    with env.connect() as conn:
        doc = workflows.export(conn, code)
    steps = doc.pop("steps")
    for key, value in doc.items():
        click.echo(f"{key:18} {value}")
    table(steps, ["step_number", "step_name", "action", "parameters", "timeout_seconds",
                  "on_failure"])
    draw_graph(steps, lambda s: " ".join(filter(None, (
        s["action"], resources_label(s),
        f"when {s['when']}" if s["when"] else "",
        f"for each {fmt(s['for_each'])}" if s["for_each"] is not None else ""))))


@workflows_group.command("export")
@click.argument("code")
@pass_env
def export(env: Env, code: str) -> None:
    """Print a workflow as YAML (edit it and `apply` it to make a new version)."""
    with env.connect() as conn:
        doc = workflows.export(conn, code)
    doc.pop("version", None)
    # A step's graph keys left at their defaults are left out, as a hand-written file has.
    doc["steps"] = [{k: v for k, v in step.items()
                     if k not in workflows.GRAPH_DEFAULTS or v != workflows.GRAPH_DEFAULTS[k]}
                    for step in doc["steps"]]
    click.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)


def _activation_command(name: str, active: bool, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("code")
    @pass_env
    def command(env: Env, code: str) -> None:
        with env.connect() as conn:
            workflows.set_active(conn, code, active)
        click.echo(f"{code}: {name}d")

    return command


workflows_group.add_command(_activation_command(
    "disable", False, "Refuse new submissions to a workflow (queued jobs still run)."))
workflows_group.add_command(_activation_command(
    "enable", True, "Accept submissions to a workflow again."))


@click.command("actions")
def actions() -> None:
    """List the actions steps can use, with their parameters."""
    rows = [
        {"action": name, "parameters": ", ".join(a.schema.get("properties", {})),
         "description": a.description}
        for name, a in available_actions().items()
    ]
    table(rows, ["action", "parameters", "description"])


COMMANDS = [workflows_group, actions]
