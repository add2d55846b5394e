"""mediaq worker, mediaq demo."""

from __future__ import annotations

import dataclasses

import click

from mediaq import logs, migrate
from mediaq.cli import Env, pass_env, run_in_foreground
from mediaq.worker.autoscale import Supervisor, parse_range
from mediaq.worker.daemon import Worker, WorkerOptions
from mediaq.worker.resources import parse_categories, parse_limits


@click.command("worker")
@click.option("--categories", help="cpu,gpu_encode,gpu_ai (default: all).")
@click.option("--limits", help="Per-machine limits, e.g. cpu=5,gpu_encode=2,gpu_ai=1.")
@click.option("--vram-mb", type=int, help="VRAM budget in MB (default: the GPU's, via NVML).")
@click.option("--queues", help="Only these queues (comma-separated).")
@click.option("--burst", is_flag=True, help="Exit when no work is left.")
@click.option("--id", "worker_id", help="Worker id (default: host:pid:random).")
@click.option("--no-notifier", is_flag=True,
              help="Do not deliver notifications here (run `mediaq notifier` elsewhere).")
@click.option("--no-triggers", is_flag=True,
              help="Do not watch folders or fire schedules here (run `mediaq triggers`).")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Most jobs at once in this process (default: the machine's limits).")
@click.option("--autoscale", metavar="MIN:MAX",
              help="Supervise MIN..MAX one-job worker processes that follow the queue.")
@click.option("--scale-down-after", type=float, default=15.0, show_default=True,
              help="With --autoscale: seconds without waiting work before a process drains.")
@pass_env
def worker(env: Env, categories: str | None, limits: str | None, vram_mb: int | None,
           queues: str | None, burst: bool, worker_id: str | None, no_notifier: bool,
           no_triggers: bool, jobs: int | None, autoscale: str | None,
           scale_down_after: float) -> None:
    """Run a worker daemon (it also delivers notifications, watches folders and fires
    schedules unless told not to)."""
    if autoscale:
        _supervise(env, autoscale, scale_down_after, categories, limits, vram_mb, queues)
        return
    settings = env.settings
    if no_notifier:
        settings = settings.replace(notifier=False)
    if no_triggers:
        settings = settings.replace(triggers=False)
    logs.configure(settings.logging.format, settings.logging.level)
    migrate.require_current_schema(env.url)
    options = WorkerOptions(
        categories=parse_categories(categories), limits=parse_limits(limits), vram_mb=vram_mb,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
        burst=burst, worker_id=worker_id, jobs=jobs,
    )
    daemon = Worker(settings, env.url, options)
    daemon.install_signal_handlers()
    processed = daemon.run()
    click.echo(f"worker {daemon.worker_id} stopped after {processed} job(s)")
    if burst and daemon.left_processing:
        # A burst run is done when its queue is: one that leaves jobs to a lease is not.
        left = daemon.left_processing
        click.echo(f"{len(left)} job(s) left processing after a database error, for their"
                   f" lease to hand on: {', '.join(left[:10])}", err=True)
        raise SystemExit(1)


def _supervise(env: Env, autoscale: str, scale_down_after: float, categories: str | None,
               limits: str | None, vram_mb: int | None, queues: str | None) -> None:
    try:
        policy = dataclasses.replace(parse_range(autoscale), quiet_s=scale_down_after)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    parsed_categories, parsed_limits = parse_categories(categories), parse_limits(limits)
    passed = [(f"--{name}", value) for name, value in (
        ("categories", categories), ("limits", limits), ("queues", queues),
        ("vram-mb", None if vram_mb is None else str(vram_mb))) if value is not None]
    supervisor = Supervisor(
        settings=env.settings, url=env.url, policy=policy,
        worker_args=[item for pair in passed for item in pair],
        categories=parsed_categories,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
        machine_limit=sum(parsed_limits.get(c, 0) for c in parsed_categories))
    run_in_foreground(env, supervisor, supervisor.run)
    click.echo(f"autoscale stopped ({supervisor.restarts} process(es) replaced)")


@click.command("demo")
@pass_env
def demo(env: Env) -> None:
    """Generate sample media, submit it to every seeded workflow, process it, show it."""
    from mediaq import demo as demo_module

    settings = env.settings
    logs.configure(settings.logging.format, "warning")
    migrate.require_current_schema(env.url)
    samples = demo_module.prepare_samples(settings)
    codes = demo_module.submit_samples(env.url, samples)
    click.echo(f"submitted {len(codes)} jobs: {', '.join(codes)}")
    processed = demo_module.run_worker_with_progress(settings, env.url, codes)
    click.echo(f"worker processed {processed} job(s); outputs are in {settings.storage.outputs}")
    demo_module.show_results(env.url, codes)


COMMANDS = [worker, demo]
