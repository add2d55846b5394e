"""The per-task model across machines (issues 18, 20, 21): each step, and each item of a
fanned-out step, is a task any capable worker on any host claims. Three namespace hosts
share nothing but Debian's PostgreSQL and an S3-protocol server (moto) on the bridge;
inputs are `s3://` objects and the output root an `s3://` prefix, so a task on one host
reads what tasks on other hosts made only through the store.

- A three-rung ladder fanned out over two encoding hosts, checked by a fan-in on a third
  (issue 20: "a fan-in on host B gets the renditions made on hosts A and C").
- The seeded WF-VIDEO-CHUNKED on three hosts: chunks spread, the stitched film has the
  source's frames; `kill -9` of one host's worker mid-chunk redoes only its chunks
  (issue 21).
- WF-VIDEO-ANALYZE with a CPU-only host and a `gpu_ai` host with a VRAM budget:
  transcription beside scenes and thumbnails (issue 18).

Which host ran what comes from step_executions (joined to workers) and job_tasks; the
figures (hosts per task, rescue time after kill -9) are printed."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import signal
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.chunk_judge import decode_errors, frame_times
from tests.fleet.conftest import FULL, Figure, scaled
from tests.fleet.harness import Buckets, Fleet, Host, apply, hosts_on, start_workers
from tests.fleet.test_fleet_storage import AUDIO_VIDEO, IMAGES, TEXT, with_credentials
from tests.helpers import requires_tool, wait_for
from tests.media_judge import ffmpeg, ffprobe
from tests.s3_server import MOTO_SERVER

pytestmark = [pytest.mark.chaos, pytest.mark.slow,
              pytest.mark.skipif(not MOTO_SERVER.exists(), reason="needs moto_server")]

# Short in make test, longer in make chaos (MEDIAQ_CHAOS=full).
LADDER_SECONDS = 6 if FULL else 2
FILM_SECONDS = 60 if FULL else 6
CHUNK_SECONDS = 10 if FULL else 2
# A slow preset makes each chunk a few seconds of work on small frames: long enough for
# every host to pick some up, and for a kill -9 to land while one is being encoded.
CHUNK_SPEED = "slow" if FULL else "slower"


# -- what ran where ----------------------------------------------------------------------------


def executions(host: Host, code: str) -> list[dict[str, Any]]:
    """Every step execution of job ``code`` in order: step, item, status, times, worker,
    and the host that worker runs on."""
    return host.query(
        "SELECT ws.step_name, ws.step_number, se.item_index, se.status, se.error_class,"
        "       se.started_at, se.completed_at, se.worker_id, w.host, se.output_data"
        "  FROM step_executions se JOIN workflow_steps ws ON ws.id = se.step_id"
        "  JOIN workflow_jobs j ON j.id = se.job_id"
        "  LEFT JOIN workers w ON w.worker_id = se.worker_id"
        " WHERE j.job_code = %s ORDER BY se.id", (code,))


def tasks(host: Host, code: str) -> list[dict[str, Any]]:
    return host.query(
        "SELECT t.id, t.step_number, t.item_index, t.state, t.worker_id, t.attempt,"
        "       t.rescue_count, t.fused FROM job_tasks t JOIN workflow_jobs j ON j.id = t.job_id"
        " WHERE j.job_code = %s ORDER BY t.step_number, t.item_index NULLS FIRST", (code,))


def task_state(host: Host, code: str, step_number: int) -> str | None:
    """The state of job ``code``'s task of step ``step_number`` (a step that does not
    fan out)."""
    found = [t["state"] for t in tasks(host, code) if t["step_number"] == step_number]
    return found[0] if found else None


def completed_once(host: Host, code: str) -> list[dict[str, Any]]:
    """The job completed, every step (every item of a fanned-out step) with exactly one
    completed or skipped execution, and every task completed or skipped; the rows."""
    job = host.job(code)
    assert job["status"] == "completed", (job["status"], job["error_message"], story(host, code))
    rows = executions(host, code)
    done = Counter((r["step_name"], r["item_index"]) for r in rows
                   if r["status"] in ("completed", "skipped"))
    assert set(done.values()) == {1}, rows
    assert {t["state"] for t in tasks(host, code)} <= {"completed", "skipped"}
    return rows


def who_ran(rows: list[dict[str, Any]]) -> str:
    """``step[item]@host`` for each completed execution: the figure."""
    def name(row: dict[str, Any]) -> str:
        item = "" if row["item_index"] is None else f"[{row['item_index']}]"
        return f"{row['step_name']}{item}@{row['host']}"

    return ", ".join(name(r) for r in rows if r["status"] == "completed")


def story(host: Host, code: str) -> str:
    """Every execution (step[item] status/error class@host) and every task (step.item
    state, attempt, rescues) of job ``code``: what an assertion shows when it fails."""
    runs = ", ".join(
        f"{r['step_name']}{'' if r['item_index'] is None else [r['item_index']]} "
        f"{r['status']}{'/' + r['error_class'] if r['error_class'] else ''}@{r['host']}"
        for r in executions(host, code))
    rows = ", ".join(f"{t['step_number']}.{t['item_index']} {t['state']} a{t['attempt']}"
                     f" r{t['rescue_count']}" for t in tasks(host, code))
    return f"executions: {runs}; tasks: {rows}"


def wait_finished(host: Host, code: str, timeout: float) -> None:
    wait_for(lambda: host.job(code)["status"] in ("completed", "failed", "cancelled"),
             timeout=timeout, interval=0.3, message=f"job {code} to finish")


def frame_count(path: Path) -> int:
    """Frames of the first video stream as Debian's ffprobe decodes them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True, timeout=300)
    return int(out.stdout.strip().split(",")[0])


def video_duration(path: Path) -> float:
    """The first video stream's duration (ffprobe), its container's when it has none."""
    probed = ffprobe(path)
    stream = next(s for s in probed["streams"] if s["codec_type"] == "video")
    return float(stream.get("duration") or probed["format"]["duration"])


def fetch(buckets: Buckets, location: str) -> bytes:
    return buckets.get(location) if location.startswith("s3://") else Path(location).read_bytes()


def judge(buckets: Buckets, job: dict[str, Any], scratch: Path) -> dict[str, int]:
    """Fetch every output the job records (from the bucket or the shared folder) and judge
    it: bytes as recorded (size, SHA-256), images decode (Pillow), audio and video probe
    (ffprobe), JSON parses; every manifest entry matches its file's bytes. How many of
    each kind were judged."""
    outputs = job["output_metadata"]["outputs"]
    assert outputs
    judged: Counter[str] = Counter()
    for output in outputs:
        location = output["path"]
        assert job["job_code"] in location, location
        data = fetch(buckets, location)
        assert len(data) == output["size_bytes"], location
        assert hashlib.sha256(data).hexdigest() == output["sha256"], location
        suffix = Path(location).suffix.lower()
        if suffix in IMAGES:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
            judged["image"] += 1
        elif suffix in AUDIO_VIDEO:
            local = scratch / f"{job['job_code']}-{Path(location).name}"
            local.write_bytes(data)
            assert ffprobe(local)["streams"], location
            judged["media"] += 1
        elif suffix in TEXT | {".csv", ".srt"}:
            text = data.decode("utf-8")
            if suffix == ".json":
                json.loads(text)
            judged["text"] += 1
        else:
            raise AssertionError(f"no judge for {location}")
    manifests = [o for o in outputs if o["path"].endswith("_manifest.json")]
    assert manifests
    for manifest in manifests:
        listed = json.loads(fetch(buckets, manifest["path"]))["outputs"]
        assert listed
        for entry in listed:
            assert hashlib.sha256(fetch(buckets, entry["path"])).hexdigest() == entry["sha256"]
    return dict(judged)


@pytest.fixture
def buckets(three_hosts_s3: Fleet) -> Buckets:
    assert three_hosts_s3.s3_endpoint is not None
    return Buckets.make(three_hosts_s3.s3_endpoint)


def setup(hosts: list[Host], fl: Fleet, buckets: Buckets, seed: bool = False) -> None:
    """Every host reads and writes only the buckets; the schema (and the seeded
    workflows) made from host 0."""
    assert fl.s3_endpoint is not None
    with_credentials(hosts, buckets, fl.s3_endpoint)
    hosts[0].cli("db", "upgrade")
    if seed:
        hosts[0].cli("workflows", "seed")


# -- issue 20: a fan-in on one host reads the renditions made on two others --------------------


LADDER = {
    "workflow_code": "F-LADDER", "workflow_name": "F-LADDER", "workflow_type": "video",
    "resource_category": "cpu", "vram_required": 0, "retry_count": 3,
    "steps": [
        {"step_number": 1, "step_name": "Validate", "action": "validate_video",
         "parameters": {"check_codec": True, "check_duration": True},
         "resource_category": "cpu"},
        # One task per rung, never one fused pass: the rungs go to whichever encoding
        # host is free.
        {"step_number": 2, "step_name": "Ladder", "action": "transcode_video",
         "parameters": {"codec": "h264"},
         "for_each": {"resolution": ["360p", "240p", "144p"]}, "fuse": "never",
         "needs": ["Validate"], "resource_category": "gpu_encode", "vram_required": 1000},
        # The fan-in reads every rung back (size and SHA-256) and writes the manifest.
        {"step_number": 3, "step_name": "Checksums", "action": "finalize_job",
         "parameters": {"verify_checksums": True}, "needs": ["Ladder"],
         "resource_category": "cpu"},
    ],
}


@requires_tool("ffmpeg", "ffprobe")
def test_a_fan_in_on_one_host_reads_the_renditions_made_on_two_others(
        three_hosts_s3: Fleet, buckets: Buckets, tmp_path: Path, figure: Figure) -> None:
    """Hosts 0 and 2 serve only `gpu_encode` (software encoding on a GPU slot: no GPU
    here), host 1 only `cpu`: the rungs run on hosts 0 and 2, the checksum fan-in on host
    1, which has none of their files but what it downloads from the store."""
    fl = three_hosts_s3
    source = tmp_path / "ladder.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25,noise=alls=8:allf=t",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", str(LADDER_SECONDS), "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", source)
    with hosts_on(fl, tmp_path) as hosts:
        setup(hosts, fl, buckets)
        apply(hosts[1], LADDER)
        code = hosts[1].submit("F-LADDER", buckets.put("ladder.mp4", source.read_bytes()))
        start_workers([hosts[1]], "--categories", "cpu", "--limits", "cpu=1",
                      "--no-triggers")
        start_workers([hosts[0], hosts[2]], "--categories", "gpu_encode", "--limits",
                      "gpu_encode=1", "--vram-mb", "4000", "--no-triggers")
        wait_finished(hosts[1], code, timeout=600 if FULL else 300)
        rows = completed_once(hosts[1], code)
        done = [r for r in rows if r["status"] == "completed"]
        items = sorted((r for r in done if r["step_name"] == "Ladder"),
                       key=lambda r: r["item_index"])
        (fan_in,) = [r for r in done if r["step_name"] == "Checksums"]
        assert [r["item_index"] for r in items] == [0, 1, 2]
        item_hosts = {r["host"] for r in items}
        # At least two hosts made the rungs, none of them the fan-in's.
        assert len(item_hosts) >= 2 and item_hosts <= {"host-0", "host-2"}, who_ran(rows)
        assert fan_in["host"] == "host-1"
        assert fan_in["started_at"] >= max(r["completed_at"] for r in items)
        # The tasks say the same: each rung its own task, claimed by its host's worker.
        rungs = [t for t in tasks(hosts[1], code) if t["step_number"] == 2
                 and t["item_index"] is not None]
        assert [t["worker_id"] for t in rungs] == [r["worker_id"] for r in items]
        assert not any(t["fused"] for t in rungs)
        # The fan-in got the three renditions, in item order, and checked them.
        job = hosts[1].job(code)
        renditions = [o for o in job["output_metadata"]["outputs"] if o["role"] == "rendition"]
        heights = []
        for rendition in renditions:
            local = tmp_path / Path(rendition["path"]).name
            local.write_bytes(buckets.get(rendition["path"]))
            stream = next(s for s in ffprobe(local)["streams"] if s["codec_type"] == "video")
            heights.append(stream["height"])
        assert heights == [360, 240, 144]
        judged = judge(buckets, job, tmp_path)
        assert judged["media"] >= 3
        # No host's disk holds the others' work: host 1 made no rendition, it fetched them.
        assert not list((hosts[1].root / "outputs").rglob("*.mp4"))
    figure(f"{who_ran(rows)}; fan-in started "
           f"{(fan_in['started_at'] - items[-1]['completed_at']).total_seconds():.2f} s after "
           f"the last rung; {sum(judged.values())} objects judged, manifest checksums match")


# -- issue 21: chunks of one film on three hosts ----------------------------------------------


# Both forms: chunks and stitch read each other's outputs from a folder every host
# mounts, or through the store (a fan-in's needs get this host's copies).
STORAGE = [pytest.param("shared", id="shared-folder"), pytest.param("s3", id="s3")]


def film(tmp_path: Path) -> Path:
    """A grainy film with audio and 1 s GOPs (Debian's ffmpeg): keyframes to cut at."""
    path = tmp_path / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25,noise=alls=8:allf=t",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", str(FILM_SECONDS), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path)
    return path


def film_hosts(hosts: list[Host], fl: Fleet, buckets: Buckets, storage: str,
               shared: Path) -> None:
    """`s3`: outputs to the bucket, as inputs; `shared`: inputs from the bucket, outputs
    to one folder every host mounts at the same path (NFS, as many fleets run)."""
    setup(hosts, fl, buckets, seed=True)
    if storage == "shared":
        shared.mkdir(exist_ok=True)
        for host in hosts:
            host.env["MEDIAQ_OUTPUT_ROOT"] = str(shared)


def submit_film(host: Host, buckets: Buckets, source: Path, name: str) -> str:
    return host.submit("WF-VIDEO-CHUNKED", buckets.put(name, source.read_bytes()),
                       "--param", f"Split.chunk_seconds={CHUNK_SECONDS}",
                       "--param", f"Encode Chunks.speed={CHUNK_SPEED}")


def judge_film(host: Host, buckets: Buckets, code: str, source: Path,
               tmp_path: Path) -> tuple[int, float]:
    """The stitched film, fetched from where the job says: no decode error, exactly the
    source's frames at strictly increasing times, its duration within one frame of the
    source's; every output judged (``judge``). (frames, duration)"""
    job = host.job(code)
    outputs = job["output_metadata"]["outputs"]
    (output,) = [o for o in outputs if o["role"] == "rendition"]
    local = tmp_path / f"{code}-stitched.mp4"
    local.write_bytes(fetch(buckets, output["path"]))
    assert hashlib.sha256(local.read_bytes()).hexdigest() == output["sha256"]
    assert decode_errors(local) == ""
    frames = frame_count(local)
    assert frames == frame_count(source)
    duration = video_duration(local)
    assert abs(duration - video_duration(source)) < 1 / 25
    times = frame_times(local)
    assert all(b > a for a, b in itertools.pairwise(times))
    judge(buckets, job, tmp_path)
    return frames, duration


def chunk_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["step_name"] == "Encode Chunks"]


@requires_tool("ffmpeg", "ffprobe")
@pytest.mark.parametrize("storage", STORAGE)
def test_the_seeded_chunked_workflow_spreads_its_chunks_over_three_hosts(
        three_hosts_s3: Fleet, buckets: Buckets, tmp_path: Path, figure: Figure,
        storage: str) -> None:
    fl = three_hosts_s3
    source = film(tmp_path)
    with hosts_on(fl, tmp_path) as hosts:
        film_hosts(hosts, fl, buckets, storage, tmp_path / "shared")
        code = submit_film(hosts[0], buckets, source, "film.mp4")
        start_workers(hosts, "--categories", "cpu", "--limits", "cpu=1", "--no-triggers")
        wait_finished(hosts[0], code, timeout=900 if FULL else 300)
        rows = completed_once(hosts[0], code)
        chunks = [r for r in chunk_rows(rows) if r["status"] == "completed"]
        (split,) = [r for r in rows if r["step_name"] == "Split"]
        assert len(chunks) == split["output_data"]["chunk_count"] >= 3
        per_host = Counter(r["host"] for r in chunks)
        assert len(per_host) >= 2, who_ran(rows)
        (stitch,) = [r for r in rows if r["step_name"] == "Stitch"]
        assert stitch["started_at"] >= max(r["completed_at"] for r in chunks)
        frames, duration = judge_film(hosts[0], buckets, code, source, tmp_path)
    figure(f"{storage}: {len(chunks)} chunks of a {FILM_SECONDS} s film: "
           f"{dict(sorted(per_host.items()))}; stitch on {stitch['host']}; {frames} frames, "
           f"{duration:.3f} s as the source")


# Found here (1 kill in about 8, before the fix): around the kill, a LIVING worker's
# heartbeat failed ("deadlock detected ... while locking tuple in relation job_tasks"),
# its task's lease ran out, and the rescue took that task from it too. The heartbeat held
# its workers row while it waited for its task rows, a rescue held task rows while it
# waited for workers rows (tests/test_lease_locks.py replays that cycle). Renewals now
# never wait for a row and retry within 0.2 s, and a rescue re-checks the lease on the
# row's latest version: a kill costs only the victim's chunks.


def held_chunk(host: Host, code: str) -> dict[str, Any] | None:
    """A chunk being encoded now (its execution running, not only its task claimed: a
    task claimed on a host without the input in its cache is downloading it first), with
    the host of its worker."""
    rows = host.query(
        "SELECT se.item_index, se.worker_id, w.host FROM step_executions se"
        "  JOIN workflow_steps ws ON ws.id = se.step_id JOIN workflow_jobs j ON j.id = se.job_id"
        "  JOIN workers w ON w.worker_id = se.worker_id"
        " WHERE j.job_code = %s AND ws.step_name = 'Encode Chunks' AND se.status = 'running'"
        " ORDER BY se.item_index", (code,))
    return rows[0] if rows else None


@requires_tool("ffmpeg", "ffprobe")
def test_kill_9_of_one_hosts_worker_mid_chunk_redoes_only_its_chunks(
        three_hosts_s3: Fleet, buckets: Buckets, tmp_path: Path, figure: Figure) -> None:
    """On a shared output folder."""
    fl = three_hosts_s3
    source = film(tmp_path)
    rescues: list[float] = []
    redos: list[float] = []
    kills = 0
    redone_total = 0
    for run in range(scaled(3, 1)):
        with hosts_on(fl, tmp_path / f"run-{run}") as hosts:
            film_hosts(hosts, fl, buckets, "shared", tmp_path / f"shared-{run}")
            code = submit_film(hosts[0], buckets, source, f"film-{run}.mp4")
            procs = start_workers(hosts, "--categories", "cpu", "--limits", "cpu=1",
                                  "--no-triggers")
            held: list[dict[str, Any]] = []

            def chunk_running(hosts: list[Host] = hosts, code: str = code,
                              held: list[dict[str, Any]] = held) -> bool:
                row = held_chunk(hosts[0], code)
                held[:] = [row] if row else []
                return row is not None

            wait_for(chunk_running, timeout=300, interval=0.1, message="a chunk running")
            victim_id = held[0]["worker_id"]
            victim_host = next(h for h in hosts if h.name == held[0]["host"])
            victim_host.kill9(procs[victim_id])
            killed_at: datetime = hosts[0].one("SELECT now() AS at")["at"]
            wait_finished(hosts[0], code, timeout=900 if FULL else 300)
            rows = completed_once(hosts[0], code)
            chunks = chunk_rows(rows)
            lost = [r for r in rows if r["status"] == "failed"]
            # Only the victim's executions failed, as lost ('system'), and all of them
            # chunks it held when it died; every other chunk ran once.
            assert lost and all(r["worker_id"] == victim_id and r["error_class"] == "system"
                                and r["step_name"] == "Encode Chunks"
                                for r in lost), story(hosts[0], code)
            redone = {r["item_index"] for r in lost}
            assert held[0]["item_index"] in redone
            runs = Counter(r["item_index"] for r in chunks)
            assert {i for i, n in runs.items() if n > 1} == redone
            assert set(runs.values()) <= {1, 2}
            # The redone chunks ran on the living hosts, after the kill.
            again = [r for r in chunks if r["item_index"] in redone
                     and r["status"] == "completed"]
            assert all(r["worker_id"] != victim_id and r["started_at"] > killed_at
                       for r in again)
            # Rescued when the rescue closed the lost execution; redone when a free slot
            # on a living host took it (they encode their own chunks meanwhile).
            rescues += [(r["completed_at"] - killed_at).total_seconds() for r in lost]
            redos += [(r["started_at"] - killed_at).total_seconds() for r in again]
            redone_total += len(redone)
            # Every other step once.
            assert Counter(r["step_name"] for r in rows if r["status"] == "completed"
                           and r["step_name"] != "Encode Chunks") == {
                "Validate Input": 1, "Split": 1, "Encode Audio": 1, "Stitch": 1,
                "Finalize Output": 1}
            # No other task rescued (a bystander's task, with or without an execution).
            rescued = [t for t in tasks(hosts[0], code) if t["rescue_count"]]
            assert {(t["step_number"], t["item_index"]) for t in rescued} == {
                (3, i) for i in redone}, story(hosts[0], code)
            kills += 1
            judge_film(hosts[0], buckets, code, source, tmp_path)
    figure(f"{kills} kill -9 mid-chunk: {redone_total} chunk(s) redone, no other chunk "
           f"twice, no other task rescued; rescued {min(rescues):.2f}-{max(rescues):.2f} s "
           f"and redone {min(redos):.2f}-{max(redos):.2f} s after the kill; last run: "
           f"{who_ran(rows)}")


# -- issue 18: transcription on the GPU host beside the CPU steps ----------------------------


# pocketsphinx decodes a whole utterance in one call that holds the GIL (5.75 s for a
# 9.2 s utterance here): transcribe_audio runs in a child process of its own, so the
# worker's lease renewals go on meanwhile.
UTTERANCES = [
    pytest.param(1, id="one-sentence"),
    pytest.param(3, id="long-utterance", marks=[
        pytest.mark.skipif(not FULL, reason="make chaos only (MEDIAQ_CHAOS=full)")]),
]


@requires_tool("espeak-ng", "ffmpeg")
@pytest.mark.parametrize("sentences", UTTERANCES)
def test_analysis_runs_transcription_on_the_gpu_host_beside_the_cpu_host(
        three_hosts_s3: Fleet, buckets: Buckets, tmp_path: Path, figure: Figure,
        sentences: int) -> None:
    """Host 0 serves only `cpu`, host 1 only `gpu_ai` with an 8,000 MB VRAM budget:
    transcription runs on host 1 while scenes and thumbnails run on host 0, at the same
    time."""
    fl = three_hosts_s3
    speech = tmp_path / "speech.wav"
    # Sentences spoken without a pause: one utterance for the recogniser.
    subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "140", "-w", str(speech),
                    "please call me tomorrow morning at nine o'clock " * sentences],
                   check=True, timeout=60)
    source = tmp_path / "talk.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=640x360:rate=25:d=2",
           "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:d={60 if FULL else 30}",
           "-i", speech, "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
           "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", source)
    # The product's default lease with one sentence; the tests' 3 s lease with a long
    # utterance checks that transcription (in its own process) keeps the lease.
    with hosts_on(fl, tmp_path, lease_seconds="10" if sentences == 1 else "3") as hosts:
        setup(hosts, fl, buckets, seed=True)
        cpu_host, gpu_host = hosts[0], hosts[1]
        # The GPU host first: with only a CPU host live, transcription would take its
        # fallback.
        start_workers([gpu_host], "--categories", "gpu_ai", "--vram-mb", "8000",
                      "--no-triggers")
        (_, cpu_worker), = start_workers([cpu_host], "--categories", "cpu", "--limits",
                                         "cpu=2", "--no-triggers").items()
        code = cpu_host.submit("WF-VIDEO-ANALYZE", buckets.put("talk.mp4", source.read_bytes()))
        # Side by side, whatever the machine's speed: the CPU host is frozen once its
        # scene detection runs, and the GPU host must claim transcription meanwhile (a
        # transcription that waited for the CPU side would never start: the wait fails).
        wait_for(lambda: task_state(cpu_host, code, 3) == "running", timeout=120,
                 interval=0.05, message="the CPU host to start scene detection")
        os.kill(cpu_worker.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: task_state(cpu_host, code, 5) == "running", timeout=120,
                     interval=0.05, message="the GPU host to claim transcription")
        finally:
            os.kill(cpu_worker.pid, signal.SIGCONT)
        wait_finished(cpu_host, code, timeout=600 if FULL else 300)
        rows = completed_once(cpu_host, code)
        done = {r["step_name"]: r for r in rows if r["status"] == "completed"}
        transcribe = done["Transcribe Audio"]
        cpu_side = [done["Detect Scenes"], done["Generate Thumbnails"]]
        assert transcribe["host"] == gpu_host.name, story(cpu_host, code)
        assert {r["host"] for r in cpu_side} == {cpu_host.name}, story(cpu_host, code)
        assert done["Finalize Output"]["host"] == cpu_host.name
        # Side by side: each side started before the other ended.
        assert transcribe["started_at"] < max(r["completed_at"] for r in cpu_side)
        assert min(r["started_at"] for r in cpu_side) < transcribe["completed_at"]
        overlap = (min(transcribe["completed_at"], max(r["completed_at"] for r in cpu_side))
                   - max(transcribe["started_at"], min(r["started_at"] for r in cpu_side)))
        judge(buckets, cpu_host.job(code), tmp_path)
    origin = done["Extract Metadata"]["completed_at"]
    spans = "; ".join(
        f"{name} {(r['started_at'] - origin).total_seconds():.2f}-"
        f"{(r['completed_at'] - origin).total_seconds():.2f} s"
        for name, r in (("scenes", cpu_side[0]), ("thumbnails", cpu_side[1]),
                        ("transcription", transcribe)))
    figure(f"{who_ran(rows)}; after the metadata: {spans}; overlap "
           f"{overlap.total_seconds():.2f} s")
