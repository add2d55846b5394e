"""Upload figures, from one run: a tus upload (``tuspy``, 64 MB PATCHes) of a 2 GB file
(BENCH_QUICK: 256 MB) into one ``mediaq web`` process on a throw-away database, the web
process's RSS sampled every 50 ms.

Reported: throughput, and the web process's memory as a ratio: its peak RSS during the
upload over its RSS before (flat is about 1.0; holding the file would be 1 + size/RSS).
The source is a WAV header over a sparse file, so reading it costs the client little.

Run: make bench (or python -m benchmarks.uploads).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import psutil
from tusclient import client as tus

from benchmarks.common import QUICK, scaled, server, table, write_results
from benchmarks.common import fresh_env as make_env

SIZE = scaled(2 * 1000**3, 256 * 1000**2)


def wav_over_sparse(path: Path, size: int) -> None:
    header = (b"RIFF" + (size + 36).to_bytes(4, "little") + b"WAVEfmt "
              + (16).to_bytes(4, "little") + (1).to_bytes(2, "little")
              + (2).to_bytes(2, "little") + (48000).to_bytes(4, "little")
              + (192000).to_bytes(4, "little") + (4).to_bytes(2, "little")
              + (16).to_bytes(2, "little") + b"data" + size.to_bytes(4, "little"))
    with path.open("wb") as out:
        out.write(header)
        out.truncate(len(header) + size)


def main() -> None:
    with server("uploads") as (admin, root):
        env = make_env(admin, root)
        env.env["MEDIAQ_UPLOAD_MAX_SIZE"] = "0"
        token = env.cli("tokens", "create", "--role", "submitter").stdout.split()[-1]
        web, base = env.start_web()
        source = root / "source.wav"
        wav_over_sparse(source, SIZE)
        process = psutil.Process(web.pid)
        time.sleep(1.0)  # let the server settle after its first requests
        before = process.memory_info().rss
        samples = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                samples.append(process.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        uploader = tus.TusClient(f"{base}/api/media/uploads",
                                 headers={"Authorization": f"Bearer {token}"}).uploader(
            str(source), chunk_size=64 * 2**20, metadata={"filename": "source.wav"})
        started = time.monotonic()
        try:
            uploader.upload()
        finally:
            stop.set()
            sampler.join()
        seconds = time.monotonic() - started
        upload_id = uploader.url.rsplit("/", 1)[1]
        landed = Path(env.one("SELECT landed_path FROM uploads WHERE id = %s",
                              (upload_id,))["landed_path"])
        same = landed.stat().st_size == source.stat().st_size and _head(landed) == _head(source)
        landed.unlink()
        env.stop_workers()
    peak = max(samples)
    data = {"bytes": SIZE, "seconds": seconds, "mb_per_s": SIZE / 1e6 / seconds,
            "rss_before": before, "rss_peak": peak, "rss_peak_over_before": peak / before,
            "growth_over_size": (peak - before) / SIZE, "landed_intact": same,
            "samples": len(samples), "quick": QUICK}
    text = table("tus upload into mediaq web (memory flat = peak/before near 1.0)",
                 ["bytes", "s", "MB/s", "RSS before MiB", "RSS peak MiB", "peak/before",
                  "growth/size", "landed intact"],
                 [[SIZE, seconds, data["mb_per_s"], before / 2**20, peak / 2**20,
                   data["rss_peak_over_before"], data["growth_over_size"], same]])
    write_results("uploads", data, text)


def _head(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.sha256(handle.read(1 << 20)).hexdigest()


if __name__ == "__main__":
    os.environ.setdefault("MEDIAQ_LOG_LEVEL", "warning")
    main()
