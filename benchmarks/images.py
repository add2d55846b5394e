"""Image thumbnail figures, measured side by side in one run (report them as ratios).

4000x3000 JPEG (quality 90) -> 300 px JPEG thumbnails (quality 85), the same N files
for every method; thumbnails per second:

- naive Pillow: open, convert RGB, thumbnail((300, 300), LANCZOS), save
- Pillow with draft("RGB", (300, 300)) first (JPEG shrink-on-load), in 1 and 2 processes
- vipsthumbnail: one invocation for all files (libvips threads it itself), if installed
- mediaq's create_thumbnail (size 300, fit) in process, one validated ActionContext per
  file as the engine builds them, in 1 and 2 processes
- mediaq through the queue: N one-step jobs, one ``mediaq worker`` process (cpu=2 job
  threads) from its start until the database shows every job completed, on a throw-away
  embedded PostgreSQL (MEDIAQ_TEST_DATABASE_URL to use another server)

Every method runs BENCH_IMAGE_ROUNDS times over the files and keeps its best round.
The sources are made with Pillow: coarse and fine colour noise, gradients and grain,
so the decoder does a photograph's work (about 3.5 MB each).

Run: make bench (BENCH_IMAGES, default 20; BENCH_IMAGE_ROUNDS, default 3;
BENCH_IMAGE_PARALLEL, default 2: processes and worker job threads).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from PIL import Image, ImageChops, ImageOps

from benchmarks.common import table as common_table
from benchmarks.common import verdict
from mediaq import embedded, migrate
from mediaq.actions import ActionContext, get_action
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for, with_database

IMAGES = int(os.environ.get("BENCH_IMAGES", "20"))
ROUNDS = int(os.environ.get("BENCH_IMAGE_ROUNDS", "3"))
PARALLEL = int(os.environ.get("BENCH_IMAGE_PARALLEL", "2"))
RESULTS = Path(os.environ.get("BENCH_RESULTS", "benchmarks/results"))
SOURCE_SIZE = (4000, 3000)
THUMB = 300
PARAMS = {"size": THUMB, "mode": "fit"}


# ----------------------------------------------------------------------- sources


def make_sources(folder: Path, count: int) -> list[Path]:
    """``count`` different photograph-like JPEGs (quality 90), sharing one grain layer."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = SOURCE_SIZE
    ramp = Image.linear_gradient("L")
    gradient = Image.merge("RGB", (ramp.rotate(90), ramp, ImageOps.invert(ramp.rotate(90))))
    gradient = gradient.resize(SOURCE_SIZE, Image.Resampling.BILINEAR)
    grain = Image.effect_noise(SOURCE_SIZE, 5).convert("RGB")
    paths = []
    for index in range(count):
        rng = np.random.default_rng(index)
        coarse = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        fine = Image.fromarray(rng.integers(0, 256, (height // 10, width // 10, 3),
                                            dtype=np.uint8))
        picture = Image.blend(coarse.resize(SOURCE_SIZE, Image.Resampling.BICUBIC),
                              fine.resize(SOURCE_SIZE, Image.Resampling.BILINEAR), 0.3)
        picture = ImageChops.add(Image.blend(picture, gradient, 0.3), grain, offset=-128)
        path = folder / f"photo_{index:03d}.jpg"
        picture.save(path, quality=90)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------- methods


def pillow_one(source: Path, out: Path, draft: bool) -> None:
    with Image.open(source) as im:
        if draft:
            im.draft("RGB", (THUMB, THUMB))
        image = im.convert("RGB")
    image.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    image.save(out / f"tn_{source.stem}.jpg", quality=85)


def mediaq_one(source: Path, out: Path) -> None:
    action = get_action("create_thumbnail")
    action.fn(ActionContext(job_code="BENCH", step_number=1, step_name="thumbnail",
                            input_path=source, source_path=source,
                            params=action.validate(dict(PARAMS)),
                            staging_dir=out / source.stem))


def _pool_task(task: tuple[str, Path, Path]) -> None:
    method, source, out = task
    if method == "mediaq":
        mediaq_one(source, out)
    else:
        pillow_one(source, out, draft=method == "draft")


def in_pool(method: str, sources: list[Path], out: Path) -> None:
    """``method`` over ``sources`` in PARALLEL processes (their start is timed too)."""
    with ProcessPoolExecutor(PARALLEL) as pool:
        list(pool.map(_pool_task, [(method, source, out) for source in sources]))


def vipsthumbnail(sources: list[Path], out: Path) -> None:
    subprocess.run(["vipsthumbnail", "-s", str(THUMB), "-o", f"{out}/tn_%s.jpg[Q=85]",
                    *map(str, sources)], check=True)


@dataclass
class Queue:
    """A throw-away database with a one-step create_thumbnail workflow."""

    env: MediaqEnv
    sources: list[Path]

    @classmethod
    def create(cls, admin_url: str, root: Path, sources: list[Path]) -> Queue:
        name = f"mediaq_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = with_database(admin_url, name)
        migrate.upgrade(url)
        env = MediaqEnv.create(root, url)  # root/inputs holds the sources already
        env.apply_workflow(diagnostic_workflow("B-THUMB", {"action": "create_thumbnail",
                                                           "parameters": PARAMS}))
        return cls(env, sources)

    def drain(self) -> tuple[Figure, float]:
        """Insert one job per source, start a worker, wait until every job is completed
        (polling the database), stop the worker. The worker's start counts, its stop not;
        also the seconds from the first job's start to the last one's completion."""
        with self.env.connect() as conn:
            ids = [row["id"] for row in conn.execute(
                """INSERT INTO workflow_jobs (workflow_id, input_file_path)
                   SELECT (SELECT id FROM workflow_definitions
                            WHERE workflow_code = 'B-THUMB' AND is_current), path
                     FROM unnest(%s::text[]) AS path RETURNING id""",
                ([str(source) for source in self.sources],)).fetchall()]
        cpu, started = _cpu(), time.perf_counter()
        worker = self.env.start_worker("--categories", "cpu", "--limits", f"cpu={PARALLEL}")
        try:
            row = wait_for(lambda: self._finished(ids), timeout=600, interval=0.02,
                           message="the thumbnail jobs")
            figure = Figure(time.perf_counter() - started, _cpu() - cpu + _cpu_of(worker.pid))
            log = self.env.worker_log(worker)[-2000:]
        finally:
            self.env.stop_workers()
        assert row["done"] == len(ids), (row, log)
        return figure, float(row["steady"])

    def _finished(self, ids: list[int]) -> dict[str, Any] | None:
        row = self.env.one("""SELECT count(*) FILTER (WHERE status = 'completed') AS done,
                                     count(*) FILTER (WHERE status IN ('completed', 'failed',
                                                                       'cancelled')) AS over,
                                     extract(epoch FROM max(completed_at) - min(started_at))
                                       AS steady FROM workflow_jobs WHERE id = ANY(%s)""",
                           (ids,))
        return row if row["over"] == len(ids) else None


def _cpu_of(pid: int) -> float:
    """User + system seconds of a running process (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------- timing


@dataclass
class Figure:
    seconds: float
    cpu_seconds: float  # this process and its reaped children (not PostgreSQL)

    def per_second(self, count: int) -> float:
        return count / self.seconds


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_of(run: Callable[[Path], object], work: Path, name: str) -> Figure:
    """The fastest of ROUNDS runs, each writing into a fresh folder."""
    best: Figure | None = None
    for round_index in range(ROUNDS):
        out = work / f"{name}_{round_index}"
        out.mkdir(parents=True)
        cpu, started = _cpu(), time.perf_counter()
        run(out)
        figure = Figure(time.perf_counter() - started, _cpu() - cpu)
        if best is None or figure.seconds < best.seconds:
            best = figure
        shutil.rmtree(out, ignore_errors=True)
    assert best is not None
    return best


def check_thumbnail(path: Path) -> None:
    with Image.open(path) as im:
        assert max(im.size) == THUMB and im.format == "JPEG", (path, im.size, im.format)


# ----------------------------------------------------------------------- report


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mediaq-bench-images-"))
    os.chmod(work, 0o755)
    admin = os.environ.get("MEDIAQ_TEST_DATABASE_URL")
    cores = os.cpu_count() or 1
    has_vips = shutil.which("vipsthumbnail") is not None
    rows: list[tuple[str, str, Figure | None]] = []
    load_before = os.getloadavg()[0]
    try:
        sources = make_sources(work / "queue" / "inputs", IMAGES)
        # One untimed pass of each in-process method: imports, plugin loading, page cache.
        warm = work / "warm"
        warm.mkdir()
        pillow_one(sources[0], warm, draft=False)
        pillow_one(sources[0], warm, draft=True)
        mediaq_one(sources[0], warm)
        check_thumbnail(warm / f"tn_{sources[0].stem}.jpg")
        check_thumbnail(next((warm / sources[0].stem).glob("*.jpg")))

        def each(fn: Callable[[Path, Path], None]) -> Callable[[Path], None]:
            def run(out: Path) -> None:
                for source in sources:
                    fn(source, out)
            return run

        rows.append(("naive Pillow", "1", best_of(
            each(lambda s, o: pillow_one(s, o, draft=False)), work, "naive")))
        rows.append(("Pillow + draft", "1", best_of(
            each(lambda s, o: pillow_one(s, o, draft=True)), work, "draft")))
        rows.append((f"Pillow + draft, {PARALLEL} processes", str(PARALLEL), best_of(
            lambda out: in_pool("draft", sources, out), work, "draft_pool")))
        rows.append(("vipsthumbnail, one call", f"{cores} (threads)", best_of(
            lambda out: vipsthumbnail(sources, out), work, "vips") if has_vips else None))
        rows.append(("mediaq in process", "1", best_of(each(mediaq_one), work, "mediaq")))
        rows.append((f"mediaq in process, {PARALLEL} processes", str(PARALLEL), best_of(
            lambda out: in_pool("mediaq", sources, out), work, "mediaq_pool")))

        if not admin:
            admin = with_database(embedded.ensure_running(work / "pg"), "postgres")
        queue = Queue.create(admin, work / "queue", sources)
        drained = [queue.drain() for _ in range(ROUNDS)]
        worker = min((figure for figure, _ in drained), key=lambda figure: figure.seconds)
        steady = [seconds for _, seconds in drained]
        label = f"1 worker, {PARALLEL} threads"
        rows.append((f"mediaq queue, worker start to drained ({label})", f"{PARALLEL}+pg", worker))
        rows.append((f"mediaq queue, first start to last done ({label})", f"{PARALLEL}+pg",
                     Figure(min(steady), float("nan"))))
    finally:
        if not os.environ.get("MEDIAQ_TEST_DATABASE_URL") and (work / "pg").exists():
            embedded.stop(work / "pg")
        shutil.rmtree(work, ignore_errors=True)
    report(rows, cores, (load_before, os.getloadavg()[0]))


def report(rows: list[tuple[str, str, Figure | None]], cores: int,
           load: tuple[float, float]) -> None:
    rates = {name: figure.per_second(IMAGES) if figure else None for name, _, figure in rows}
    naive = rates["naive Pillow"]
    vips = rates["vipsthumbnail, one call"]

    def ratio(rate: float | None, base: float | None) -> str:
        return f"{rate / base:6.2f}x" if rate and base else "    n/a"

    print(f"\nThumbnails ({IMAGES} x {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} JPEG q90 -> {THUMB} px "
          f"JPEG q85, best of {ROUNDS} rounds, {cores} cores; load average {load[0]:.2f} "
          f"before, {load[1]:.2f} after: other work on the cores skews the figures)")
    print(f"  {'method':62} {'cores':>12} {'CPU/wall':>8} {'CPU ms':>7} {'thumbs/s':>9} "
          f"{'vs naive':>8} {'vs vips':>8}")
    table = []
    for name, used, figure in rows:
        rate = rates[name]
        busy = figure.cpu_seconds / figure.seconds if figure else float("nan")
        cpu_ms = figure.cpu_seconds * 1000 / IMAGES if figure else float("nan")
        shown = f"{rate:9.1f}" if rate else "      n/a"
        print(f"  {name:62} {used:>12} {busy:8.2f} {cpu_ms:7.1f} {shown} "
              f"{ratio(rate, naive):>8} {ratio(rate, vips):>8}")
        table.append({"method": name, "cores": used, "thumbnails_per_s": rate,
                      "seconds": figure.seconds if figure else None,
                      "cpu_per_wall": None if np.isnan(busy) else busy,
                      "cpu_ms_per_thumbnail": None if np.isnan(cpu_ms) else cpu_ms,
                      "vs_naive_pillow": rate / naive if rate and naive else None,
                      "vs_vipsthumbnail": rate / vips if rate and vips else None})
    print("  CPU/wall and CPU ms (per thumbnail) count this process and its children, "
          "not PostgreSQL.")
    # Issue 9's targets, read on the queue's steady figure (jobs through a worker, first
    # start to last done) and on the in-process action; vipsthumbnail threads itself.
    targets = []
    for name in (f"mediaq queue, first start to last done (1 worker, {PARALLEL} threads)",
                 "mediaq in process", f"mediaq in process, {PARALLEL} processes"):
        rate = rates.get(name)
        for base_name, base, limit in (("vipsthumbnail", vips, 1.2), ("naive Pillow", naive, 4)):
            value = rate / base if rate and base else None
            targets.append([f"{name} / {base_name}", value, f">= {limit:.2f}",
                            verdict(value is not None and value >= limit)])
    print()
    print(common_table("Images: targets (reported, not asserted)",
                       ["figure", "value", "target", ""], targets))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "images.json").write_text(json.dumps(
        {"images": IMAGES, "rounds": ROUNDS, "parallel": PARALLEL, "cores": cores,
         "source": f"{SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} JPEG q90", "thumbnail": THUMB,
         "load_average_before_after": list(load),
         "methods": table, "targets": {row[0]: row[3] for row in targets}},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
