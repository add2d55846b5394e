"""Hostile input (issue 8, item 9): media that tries to read beyond itself.

HLS playlists with ``../`` and absolute segment paths and http segments, a master
playlist, ffconcat lists, a MOV whose data reference points at another file, and
playlists renamed ``.mp4``: every video action must fail them (or read only the file
itself). Canaries: an HTTP server on 127.0.0.1 counting requests, an inotify watch on
a folder outside the input roots counting opens and reads. A control run with FFmpeg's
defaults (no whitelist, drefs enabled) shows the files do escape when allowed to.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import numpy as np
import psycopg
import pytest

from mediaq.errors import InputRefused, PermanentError, TransientError
from tests.chaos import hostile_media as hm
from tests.chaos.hostile_escape import (
    MARKER,
    FileCanary,
    HttpCanary,
    ffconcat,
    hls_master,
    hls_playlist,
    mov_with_external_reference,
)
from tests.helpers import MediaqEnv, action_context, diagnostic_workflow

pytestmark = pytest.mark.chaos

ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("validate_video", {}),
    ("extract_video_metadata", {}),
    ("transcode_video", {"resolution": "32x24", "crf": 40, "preset": "ultrafast"}),
    ("generate_thumbnails", {"count": 2, "width": 32}),
]


def _red_video(path: Path, fmt: str, frames: int = 24) -> None:
    """The outside world: solid red frames (no hostile file's own frames are red)."""
    with av.open(str(path), mode="w", format=fmt) as out:
        stream: Any = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        red = np.zeros((48, 64, 3), dtype=np.uint8)
        red[:, :, 0] = 255
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(red, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with path.open("ab") as fh:  # bytes an output must never contain
        fh.write(MARKER)


def _hostile_files(inputs: Path, outside: Path, canary: HttpCanary) -> dict[str, Path]:
    secret_ts, secret_mp4 = outside / "secret.ts", outside / "secret.mp4"
    _red_video(secret_ts, "mpegts")
    _red_video(secret_mp4, "mp4")
    _red_video(outside / "secret.mov", "mov")
    hm._video(inputs / ".own.mov", "mov", "libx264", None)
    rel = f"../{outside.name}/secret.ts"
    files = {
        "hls_relative.m3u8": hls_playlist([rel, rel]),
        "hls_absolute.m3u8": hls_playlist([str(secret_ts)]),
        "hls_file_url.m3u8": hls_playlist([f"file://{secret_ts}"]),
        "hls_http.m3u8": hls_playlist([canary.url("seg0.ts"), canary.url("seg1.ts")]),
        "hls_master.m3u8": hls_master(canary.url("variant.m3u8")),
        "hls_renamed.mp4": hls_playlist([rel, canary.url("renamed.ts")]),
        "hls_master_renamed.mkv": hls_master(canary.url("variant2.m3u8")),
        "concat.ffconcat": ffconcat([str(secret_mp4), str(secret_mp4)]),
        "concat_relative.txt": ffconcat([f"../{outside.name}/secret.mp4"]),
        "concat_renamed.mp4": ffconcat([str(secret_mp4), canary.url("concat.mp4")]),
        "external_ref.mov": mov_with_external_reference(
            (inputs / ".own.mov").read_bytes(), str(outside / "secret.mov")),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = inputs / name
        paths[name].write_bytes(data)
    (inputs / ".own.mov").unlink()
    return paths


def _red_share(path: Path) -> float:
    """The share of an output's decoded frames (or image) that are mostly red."""
    if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
        from PIL import Image
        with Image.open(path) as im:
            arrays = [np.asarray(im.convert("RGB"))]
    elif path.suffix.lower() in (".mp4", ".mkv", ".mov", ".webm"):
        with av.open(str(path)) as container:
            arrays = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    else:
        return 0.0
    red = [a for a in arrays if a[:, :, 0].mean() > 200 and a[:, :, 1].mean() < 60]
    return len(red) / max(len(arrays), 1)


def _control(paths: dict[str, Path], outside: Path, canary: HttpCanary) -> tuple[int, int]:
    """FFmpeg left to its defaults (what open_media must not do): requests and opens."""
    before = len(canary.hits)
    with FileCanary(outside) as files:
        for name in ("hls_relative.m3u8", "hls_http.m3u8", "concat.ffconcat"):
            try:
                options = {"safe": "0"} if "concat" in name else {}
                with av.open(str(paths[name]), options=options) as container:
                    for _ in container.demux():
                        pass
            except av.error.FFmpegError:
                pass
        time.sleep(0.2)
        return len(canary.hits) - before, len(files.poll())


def test_media_cannot_reach_outside_its_file(tmp_path: Path, figure: Any) -> None:
    inputs, outside = tmp_path / "inputs", tmp_path / "outside"
    inputs.mkdir()
    outside.mkdir()
    with HttpCanary() as canary:
        paths = _hostile_files(inputs, outside, canary)
        control_hits, control_opens = _control(paths, outside, canary)
        with urllib.request.urlopen(canary.url("sanity")) as answer:
            canary_works = MARKER in answer.read() and canary.hits[-1] == "/sanity"
        canary.hits.clear()
        outcomes: dict[str, list[str]] = {}
        escaped: list[str] = []
        with FileCanary(outside) as files:
            for name, path in paths.items():
                for action, params in ACTIONS:
                    ctx = action_context(action, path, tmp_path / "stage" / name / action,
                                         params)
                    ctx.deadline = time.monotonic() + 60
                    try:
                        result = hm_get(action)(ctx)
                    except (PermanentError, TransientError, InputRefused) as exc:
                        assert "\n" not in exc.message
                        outcomes.setdefault(name, []).append(f"{action}: {exc.message}")
                        continue
                    for output in result.outputs:
                        data = output.staging_path.read_bytes()
                        if MARKER in data or _red_share(output.staging_path) > 0:
                            escaped.append(f"{name} {action} {output.staging_path.name}")
                    outcomes.setdefault(name, []).append(f"{action}: completed")
            time.sleep(0.2)
            opens = files.poll()
        hits = list(canary.hits)
    for name, lines in outcomes.items():
        print(f"  {name}: " + " | ".join(lines))
    figure(f"{len(paths)} escaping files x {len(ACTIONS)} actions: canary hits {len(hits)}, "
           f"outside opens/reads {len(opens)}, outputs with outside bytes or frames "
           f"{len(escaped)}; control run with FFmpeg defaults: {control_hits} hits, "
           f"{control_opens} outside opens")
    # The files are real escapes: left to its defaults FFmpeg follows the relative
    # playlist and the concat list out of the input folder. (Its HLS demuxer already
    # keeps a local playlist's segments local, so http is refused there too.)
    assert control_opens > 0
    assert canary_works
    assert hits == []
    assert opens == []
    assert escaped == []
    completed = [f"{n} {line}" for n, lines in outcomes.items() for line in lines
                 if line.endswith("completed")]
    # Only the MOV can complete (its own, internal samples are ignored once its
    # reference is refused); every playlist and list is refused outright.
    assert all(line.startswith("external_ref.mov") for line in completed), completed


def hm_get(action: str) -> Any:
    from mediaq.actions import get_action
    return get_action(action).fn


def test_worker_refuses_escaping_media(mq: MediaqEnv, figure: Any) -> None:
    outside = mq.root / "outside"
    outside.mkdir()
    with HttpCanary() as canary:
        paths = _hostile_files(mq.inputs, outside, canary)
        mq.apply_workflow(diagnostic_workflow(
            "ESCAPE", *[{"action": a, "parameters": p} for a, p in ACTIONS], retry_count=0))
        with psycopg.connect(mq.url, autocommit=True) as conn:
            for path in paths.values():
                conn.execute("SELECT mediaq.submit_job('ESCAPE', %s)", (str(path),))
        with FileCanary(outside) as files:
            mq.run_burst(timeout=300)
            time.sleep(0.2)
            opens = files.poll()
        hits = list(canary.hits)
    jobs = mq.query("SELECT input_file_path, status, error_message, output_metadata "
                    "FROM workflow_jobs ORDER BY id")
    escaped = []
    for job in jobs:
        for output in (job["output_metadata"] or {}).get("outputs", []):
            out = Path(output["path"])
            if MARKER in out.read_bytes() or _red_share(out) > 0:
                escaped.append(str(out))
    for job in jobs:
        print(f"  {Path(job['input_file_path']).name}: {job['status']} "
              f"{job['error_message'] or ''}")
    figure(f"{len(jobs)} escaping jobs through `mediaq worker --burst`: "
           f"{sum(j['status'] == 'failed' for j in jobs)} failed, canary hits {len(hits)}, "
           f"outside opens {len(opens)}, outputs with outside content {len(escaped)}")
    assert hits == [] and opens == [] and escaped == []
    assert all(j["status"] in ("failed", "completed") for j in jobs)
    assert all(j["status"] == "failed" for j in jobs
               if not j["input_file_path"].endswith(".mov"))
    assert all("\n" not in (j["error_message"] or "") for j in jobs)
