"""mediaq assets: list and search the media library, show one asset, register a folder,
and draw a reproducible random selection for compile_random."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mediaq import catalog
from mediaq.cli import Env, pass_env
from mediaq.cli.render import show_rows, table
from mediaq.errors import Refused
from mediaq.outputs import check_input
from mediaq.submit import submit

COLUMNS = ["id", "kind", "orientation", "duration", "width", "height", "video_codec",
           "tags", "path"]


def filter_options(command: Any) -> Any:
    """The filters shared by list and random."""
    for option in reversed([
        click.option("--orientation", type=click.Choice(catalog.ORIENTATIONS)),
        click.option("--min-duration", type=float, help="Seconds, at least."),
        click.option("--max-duration", type=float, help="Seconds, at most."),
        click.option("--tag", help="Only assets with this tag."),
        click.option("--min-score", type=float, default=0.0, show_default=True,
                     help="With --tag: the tag's score at least this (0..1)."),
    ]):
        command = option(command)
    return command


@click.group("assets", invoke_without_command=True)
@click.pass_context
def assets(ctx: click.Context) -> None:
    """The media library: every file mediaq has seen or made."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_assets)


@assets.command("list")
@filter_options
@click.option("--kind", type=click.Choice(catalog.KINDS))
@click.option("--under", "path_prefix", help="Only paths starting with this folder.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json_output", is_flag=True)
@pass_env
def list_assets(env: Env, orientation: str | None = None, min_duration: float | None = None,
                max_duration: float | None = None, tag: str | None = None,
                min_score: float = 0.0, kind: str | None = None,
                path_prefix: str | None = None, limit: int = 100,
                as_json_output: bool = False) -> None:
    """List assets, newest first, e.g. ``--orientation landscape --min-duration 30 --tag beach``."""
    filters = catalog.Filters(kind=kind, orientation=orientation, min_duration=min_duration,
                              max_duration=max_duration, tag=tag, min_score=min_score,
                              path_prefix=path_prefix, limit=limit)
    with env.connect() as conn:
        rows = catalog.search(conn, filters)
    for row in rows:
        row["tags"] = ", ".join(row["tags"][:5]) if not as_json_output else row["tags"]
    show_rows(rows, COLUMNS, "Assets", as_json_output=as_json_output)


@assets.command("show")
@click.argument("asset_id", type=int)
@click.option("--json", "as_json_output", is_flag=True)
@pass_env
def show_asset(env: Env, asset_id: int, as_json_output: bool) -> None:
    """One asset with every fact, its tags and its jobs."""
    with env.connect() as conn:
        row = catalog.get(conn, asset_id)
    if row is None:
        raise Refused(f"asset {asset_id}: no such asset")
    if as_json_output:
        from mediaq.cli.render import as_json
        click.echo(as_json(row))
        return
    table([{"fact": k, "value": v} for k, v in row.items() if k != "tag_scores"],
          ["fact", "value"], title=f"Asset {asset_id}")
    if row["tag_scores"]:
        table(row["tag_scores"], ["tag", "score", "source"], title="Tags")


@assets.command("scan")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--hash", "content_hash", is_flag=True,
              help="Also compute each file's SHA-256 (reads every byte).")
@pass_env
def scan_assets(env: Env, folder: Path, content_hash: bool) -> None:
    """Register the media files under FOLDER (probing their headers)."""
    with env.connect() as conn:
        count = catalog.scan_folder(conn, folder.resolve(), content_hash=content_hash)
    click.echo(f"{folder}: {count} asset(s) registered")


@assets.command("random")
@filter_options
@click.option("--count", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--submit", "workflow_code", metavar="WORKFLOW",
              help="Also submit a job of WORKFLOW whose compile_random step compiles them.")
@pass_env
def random_assets(env: Env, count: int, seed: int, workflow_code: str | None = None,
                  orientation: str | None = None,
                  min_duration: float | None = None, max_duration: float | None = None,
                  tag: str | None = None, min_score: float = 0.0) -> None:
    """The videos compile_random would pick: the same seed picks the same ones again.
    Prints one path a line (feed it to ``--param compile_random.candidates=...``)."""
    filters = catalog.Filters(orientation=orientation, min_duration=min_duration,
                              max_duration=max_duration, tag=tag, min_score=min_score)
    with env.connect() as conn:
        paths = catalog.draw_random(conn, filters, count=count, seed=seed)
        if not paths:
            raise Refused("no video in the library matches these filters")
        job = None
        if workflow_code:
            roots = env.settings.storage.effective_input_roots
            for path in paths:  # the library may list files from outside today's roots
                check_input(path, roots)
            job = submit(conn, workflow_code, paths[0], params={"compile_random": {
                "candidates": paths, "count": count, "seed": seed}})
    for path in paths:
        click.echo(path)
    if job is not None:
        click.echo(f"submitted {job['job_code']}")


COMMANDS = [assets]
