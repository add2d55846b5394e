"""`mediaq demo`: real sample media through every seeded workflow, then the dashboard."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from mediaq import db
from mediaq.cli.render import console, table
from mediaq.config import Settings
from mediaq.samples import corrupt_samples, generate_samples
from mediaq.submit import submit
from mediaq.worker.daemon import Worker, WorkerOptions
from mediaq.worker.resources import CATEGORIES, DEFAULT_LIMITS

# Which sample goes to which workflow; a broken image shows what bad input gets.
SUBMISSIONS = (
    ("WF-IMAGE-PROCESS", "photo_landscape.jpg"),
    ("WF-IMAGE-PROCESS", "photo_small.png"),
    ("WF-IMAGE-PROCESS", "graphic.webp"),
    ("WF-IMAGE-PROCESS", "truncated.jpg"),
    ("WF-VIDEO-TRANSCODE", "clip.mp4"),
    ("WF-VIDEO-ANALYZE", "clip.mp4"),
    ("WF-AUDIO-TRANSCODE", "tone.wav"),
    ("WF-DOC-PROCESS", "document.pdf"),
)
# Without a GPU the GPU workflows still run (software encoders) within a declared budget.
DEMO_VRAM_MB = 16000


@dataclass(frozen=True)
class DemoResult:
    job_codes: list[str]
    processed: int


def prepare_samples(settings: Settings) -> dict[str, Path]:
    folder = settings.effective_input_roots[0] / "samples"
    return {**generate_samples(folder), **corrupt_samples(folder)}


def submit_samples(url: str, samples: dict[str, Path]) -> list[str]:
    with db.connect(url, application="mediaq-demo") as conn, conn.transaction():
        return [
            submit(conn, workflow, samples[name], submitted_by="demo")["job_code"]
            for workflow, name in SUBMISSIONS
        ]


def run_worker_with_progress(settings: Settings, url: str, job_codes: list[str]) -> int:
    """Run a burst worker in a thread while a bar shows how many demo jobs have ended."""
    worker = Worker(settings, url, WorkerOptions(
        categories=CATEGORIES, limits=dict(DEFAULT_LIMITS), vram_mb=DEMO_VRAM_MB, burst=True,
        worker_id=f"{settings.host_id}:demo"))
    thread = threading.Thread(target=worker.run, name="mediaq-demo-worker")
    thread.start()
    columns = (TextColumn("processing sample media"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as bar, db.connect(url, autocommit=True) as conn:
        task = bar.add_task("jobs", total=len(job_codes))
        while thread.is_alive():
            thread.join(0.3)
            ended = db.fetch_one(conn, "jobs_ended_count", {"job_codes": job_codes})
            bar.update(task, completed=ended["n"] if ended else 0)
    return worker.processed


def show_results(url: str, job_codes: list[str]) -> None:
    with db.connect(url) as conn:
        rows = db.fetch_all(conn, "jobs_dashboard",
                            {"status": None, "workflow_code": None, "limit": 50})
    table(rows, ["job_code", "workflow_name", "status", "current_step", "total_steps",
                 "progress_percent", "priority", "submitted_by", "submitted_at", "started_at",
                 "completed_at"], title="Job status dashboard")
    # failed jobs sort first on the dashboard, so this run's failures are among its rows
    failures = [r for r in rows if r["status"] == "failed" and r["job_code"] in job_codes]
    if failures:
        table(failures, ["job_code", "workflow_name", "error_message"], title="Why jobs failed")
