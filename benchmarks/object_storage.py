"""Object-storage figures, measured side by side in one run (report them as ratios).

Against moto in server mode on 127.0.0.1, the same BENCH_S3_MB object (random bytes):

- download: boto3's own ``download_file`` of the object (a plain client copy) vs
  mediaq's input cache fetching it (HEAD, the same transfer manager, MD5 check against
  the ETag, the named link); then a second fetch (a cache hit)
- upload: boto3's ``upload_file`` vs mediaq publishing it as a step's output (upload
  under the attempt's key + server-side copy to the final key, as a step's commit and
  its publication after it do)

Each runs BENCH_S3_ROUNDS times and keeps its best round. Run: python -m
benchmarks.object_storage (BENCH_S3_MB, default 64; BENCH_S3_ROUNDS, default 3).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mediaq.outputs import sha256_of
from mediaq.storage import s3 as s3ops
from mediaq.storage.cache import InputCache
from mediaq.storage.remote import ObjectStorage
from mediaq.storage.uri import PathMap, S3Uri
from tests.s3_server import CREDENTIALS, client, moto_server


def best(rounds: int, run: Callable[[], object], before: Callable[[], object] = lambda: None
         ) -> float:
    times = []
    for _ in range(rounds):
        before()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    size_mb = int(os.environ.get("BENCH_S3_MB", "64"))
    rounds = int(os.environ.get("BENCH_S3_ROUNDS", "3"))
    os.environ.update(CREDENTIALS)
    work = Path(tempfile.mkdtemp(prefix="mediaq-bench-s3-"))
    try:
        with moto_server() as endpoint:
            s3 = client(endpoint)
            s3.create_bucket(Bucket="bench-in")
            s3.create_bucket(Bucket="bench-out")
            source = work / "source.bin"
            source.write_bytes(os.urandom(size_mb << 20))
            s3.upload_file(str(source), "bench-in", "in/source.bin")
            settings = s3ops.ClientSettings(endpoint_url=endpoint)
            ours = s3ops.client(settings)
            cache_dir = work / "cache"
            cache = InputCache(cache_dir, max_bytes=4 * (size_mb << 20))
            uri = S3Uri.parse("s3://bench-in/in/source.bin")

            plain_down = best(rounds, lambda: s3.download_file(
                "bench-in", "in/source.bin", str(work / "plain.bin")))
            mediaq_down = best(rounds, lambda: cache.fetch(ours, uri, settings),
                               before=lambda: shutil.rmtree(cache_dir, ignore_errors=True))
            hit = best(rounds, lambda: cache.fetch(ours, uri, settings))

            plain_up = best(rounds, lambda: s3.upload_file(str(source), "bench-out",
                                                           "plain/source.bin"))
            objects = ObjectStorage(settings, cache, "s3://bench-out/jobs/", PathMap())
            stage_dir = work / "JOB-1.a1.s1"

            digest = sha256_of(source)

            def publish() -> None:  # as after a step's commit: staged, then copied
                for staged in objects.stage([source], stage_dir, "JOB-1"):
                    objects.publish(str(staged.staged), str(staged.final),
                                    source.stat().st_size, digest)

            mediaq_up = best(rounds, publish)
            staged_only = best(rounds, lambda: objects.stage([source], stage_dir, "JOB-1"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = float(size_mb)
    print(f"object storage, {size_mb} MB against moto on 127.0.0.1, best of {rounds}:")
    print(f"  download: plain boto3 {mb / plain_down:.0f} MB/s, mediaq cache fetch "
          f"{mb / mediaq_down:.0f} MB/s (ratio {plain_down / mediaq_down:.2f}); "
          f"a cache hit {hit * 1000:.1f} ms")
    print(f"  upload: plain boto3 {mb / plain_up:.0f} MB/s, mediaq stage "
          f"{mb / staged_only:.0f} MB/s (ratio {plain_up / staged_only:.2f}), stage + final "
          f"copy {mb / mediaq_up:.0f} MB/s (ratio {plain_up / mediaq_up:.2f})")
    print(f"  cache: {cache.stats.hits} hits, {cache.stats.misses} misses")


if __name__ == "__main__":
    main()
