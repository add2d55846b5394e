"""mediaq.storage's parts on their own: s3:// parsing and roots, path mappings, the input
cache (against moto in server mode, boto3 unmocked), and a sweep of dead attempts."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mediaq.config import load_settings
from mediaq.errors import ConfigError, InputRefused, PermanentError, TransientError
from mediaq.storage import s3 as s3ops
from mediaq.storage.cache import InputCache
from mediaq.storage.remote import ObjectStorage
from mediaq.storage.uri import PathMap, S3Uri, check_s3_input
from tests.helpers import MediaqEnv, diagnostic_workflow
from tests.s3_server import CREDENTIALS, MOTO_SERVER, bucket_name, client, moto_server


def test_s3_uris_and_bucket_prefix_roots() -> None:
    uri = S3Uri.parse("s3://media-in/uploads/a/photo.jpg")
    assert (uri.bucket, uri.key, uri.name) == ("media-in", "uploads/a/photo.jpg", "photo.jpg")
    assert str(uri) == "s3://media-in/uploads/a/photo.jpg"
    assert check_s3_input(str(uri), ("s3://media-in/uploads/",)) == uri
    for text, reason in (("s3://media-in/other/x.jpg", "outside the input roots"),
                         ("s3://media-in/uploads/../x.jpg", "'..'"),
                         ("s3://Bad_Bucket/x", "not a valid bucket name"),
                         ("s3://media-in/uploads/", "names a folder")):
        with pytest.raises(InputRefused, match=reason) as refused:
            check_s3_input(text, ("s3://media-in/uploads/",))
        assert refused.value.message.startswith(text) and "\n" not in refused.value.message
    assert S3Uri.parse("s3://out/jobs", prefix=True).child("J-1", "a.webp").key == "jobs/J-1/a.webp"


def test_path_maps_translate_both_ways_longest_prefix_first() -> None:
    paths = PathMap.parse("/mnt/nas=/Volumes/nas, /mnt/nas/video=/Volumes/video")
    assert paths.to_local("/mnt/nas/in/a.mov") == "/Volumes/nas/in/a.mov"
    assert paths.to_local("/mnt/nas/video/b.mov") == "/Volumes/video/b.mov"
    assert paths.to_local("/mnt/nassy/c.mov") == "/mnt/nassy/c.mov"
    assert paths.to_canonical("/Volumes/video/b.mov") == "/mnt/nas/video/b.mov"
    assert paths.to_canonical(Path("/Volumes/nas/out/J/x.mp4")) == "/mnt/nas/out/J/x.mp4"
    with pytest.raises(ConfigError, match="CANONICAL=LOCAL"):
        PathMap.parse("relative=/x")


def test_settings_take_mixed_roots_and_mask_the_endpoint(tmp_path: Path) -> None:
    settings = load_settings({
        "MEDIAQ_HOME": str(tmp_path), "MEDIAQ_INPUT_ROOTS": f"{tmp_path}/in,s3://media-in/up",
        "MEDIAQ_OUTPUT_ROOT": "s3://media-out/jobs",
        "MEDIAQ_S3_ENDPOINT_URL": "https://key:very-secret@minio.example:9000"})
    storage = settings.storage
    assert storage.effective_input_roots == (tmp_path / "in",)
    assert storage.bucket_input_roots == ("s3://media-in/up/",)
    assert storage.remote_output_root == "s3://media-out/jobs/"
    assert storage.outputs == tmp_path / "outputs"  # where steps stage before uploading
    shown = settings.describe()["storage"]
    assert "very-secret" not in str(shown)
    assert shown["output_root"] == "s3://media-out/jobs/"
    with pytest.raises(ConfigError, match="only local folders and s3://"):
        load_settings({"MEDIAQ_HOME": str(tmp_path), "MEDIAQ_OUTPUT_ROOT": "gs://x/y"})


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    if not MOTO_SERVER.exists():
        pytest.skip("needs moto_server")
    os.environ.update(CREDENTIALS)
    with moto_server() as url:
        yield url


def test_cache_fetches_once_verifies_and_evicts_the_least_recently_used(
        endpoint: str, tmp_path: Path) -> None:
    s3 = client(endpoint)
    bucket = bucket_name("cache")
    s3.create_bucket(Bucket=bucket)
    for name in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=f"in/{name}.bin", Body=name.encode() * 400_000)
    settings = s3ops.ClientSettings(endpoint_url=endpoint)
    worker_client = s3ops.client(settings)
    cache = InputCache(tmp_path / "cache", max_bytes=1_000_000)  # room for two of three
    stages = []
    first = cache.fetch(worker_client, S3Uri.parse(f"s3://{bucket}/in/a.bin"), settings,
                        lambda fraction, stage: stages.append(stage))
    assert first.name == "a.bin" and first.read_bytes() == b"a" * 400_000
    assert set(stages) == {"downloading"}
    cache.fetch(worker_client, S3Uri.parse(f"s3://{bucket}/in/a.bin"), settings)
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    cache.fetch(worker_client, S3Uri.parse(f"s3://{bucket}/in/b.bin"), settings)
    os.utime(first.parent / ".data", (1, 1))  # a was used long ago
    cache.fetch(worker_client, S3Uri.parse(f"s3://{bucket}/in/c.bin"), settings)
    assert not first.exists()  # evicted, b and c stay
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2
    # A changed object is a new entry, never the old bytes.
    s3.put_object(Bucket=bucket, Key="in/c.bin", Body=b"new")
    fresh = cache.fetch(worker_client, S3Uri.parse(f"s3://{bucket}/in/c.bin"), settings)
    assert fresh.read_bytes() == b"new"


HOLDER = """
import fcntl, os, signal, sys, time
lock, entry, mode = sys.argv[1:]
fh = open(lock, "a")
fcntl.flock(fh, fcntl.LOCK_EX)
print("held", flush=True)
if mode == "frozen":
    os.kill(os.getpid(), signal.SIGSTOP)
os.makedirs(entry, exist_ok=True)
with open(os.path.join(entry, ".partial.holder"), "ab") as out:
    for _ in range(60):  # 6 s of a download that moves
        out.write(b"x" * 1000)
        out.flush()
        time.sleep(0.1)
open(os.path.join(entry, "released"), "w").close()
os.unlink(os.path.join(entry, ".partial.holder"))
"""


@pytest.mark.parametrize("mode", ["frozen", "working"])
def test_a_neighbour_waits_for_a_working_cache_holder_and_passes_a_frozen_one(
        endpoint: str, tmp_path: Path, mode: str) -> None:
    """Processes of one host share the cache; one frozen (SIGSTOP) while it holds an
    entry's lock must not hold its neighbours forever: past the stall time they fetch
    without it. One that shows progress is waited for."""
    s3 = client(endpoint)
    bucket = bucket_name("cache-lock")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/x.bin", Body=b"z" * 5000)
    uri = S3Uri.parse(f"s3://{bucket}/in/x.bin")
    settings = s3ops.ClientSettings(endpoint_url=endpoint, timeout_seconds=2)
    info = s3ops.head(s3ops.client(settings), uri)
    digest = hashlib.sha256(f"{info.etag}:{info.size}".encode()).hexdigest()[:40]
    root = tmp_path / "cache"
    root.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root / f".{digest}.lock"),
                               str(root / digest), mode], stdout=subprocess.PIPE, text=True)
    pool = ThreadPoolExecutor(1)  # a fetch that never returns fails the test
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        fetched = pool.submit(InputCache(root, 1 << 20).fetch, s3ops.client(settings),
                              uri, settings).result(timeout=60)
        assert fetched.read_bytes() == b"z" * 5000
        # passed only while frozen: a working holder was waited for to the end
        assert (root / digest / "released").exists() is (mode == "working")
    finally:
        holder.kill()  # frees the lock of a fetch still waiting
        holder.wait(10)
        pool.shutdown()


def test_store_errors_are_one_line_and_classified(endpoint: str, tmp_path: Path) -> None:
    settings = s3ops.ClientSettings(endpoint_url=endpoint)
    cache = InputCache(tmp_path / "cache", max_bytes=1 << 20)
    with pytest.raises(InputRefused, match=r"^s3://no-such-bucket-x/a.bin: no such object$"):
        cache.fetch(s3ops.client(settings), S3Uri.parse("s3://no-such-bucket-x/a.bin"),
                    settings)
    nowhere = s3ops.ClientSettings(endpoint_url="http://127.0.0.1:9", timeout_seconds=2)
    with pytest.raises(TransientError, match=re.escape("cannot reach the S3 endpoint http://127.0.0.1:9")):
        cache.fetch(s3ops.client(nowhere), S3Uri.parse("s3://b-x/a.bin"), nowhere)
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as strict:
        guarded = s3ops.ClientSettings(endpoint_url=strict)
        with pytest.raises(PermanentError, match="access denied") as denied:
            cache.fetch(s3ops.client(guarded), S3Uri.parse("s3://b-x/a.bin"), guarded)
        assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in denied.value.message


def test_the_sweep_keeps_live_attempts_and_aborts_dead_uploads(
        endpoint: str, tmp_path: Path) -> None:
    s3 = client(endpoint)
    bucket = bucket_name("sweep")
    s3.create_bucket(Bucket=bucket)
    objects = ObjectStorage(s3ops.ClientSettings(endpoint_url=endpoint),
                            InputCache(tmp_path / "c", 1 << 20), f"s3://{bucket}/jobs/",
                            PathMap())
    for folder in ("J-1.a1.s1", "J-1.a2.s1", "J-2.a1.s3.i0"):
        s3.put_object(Bucket=bucket, Key=f"jobs/.staging/{folder}/out.bin", Body=b"x")
    s3.create_multipart_upload(Bucket=bucket, Key="jobs/.staging/J-3.a4.s1/big.bin")
    s3.put_object(Bucket=bucket, Key="jobs/J-1/out.bin", Body=b"final")
    asked: list[list[str]] = []

    def live(codes: list[str]) -> set[tuple[str, int]]:
        asked.append(codes)
        return {("J-1", 2)}

    report = objects.sweep(live)
    assert asked == [["J-1", "J-2", "J-3"]]
    assert (report.objects_removed, report.uploads_aborted) == (2, 1)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["jobs/.staging/J-1.a2.s1/out.bin", "jobs/J-1/out.bin"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_the_database_stores_canonical_paths_under_a_path_map(mq: MediaqEnv) -> None:
    """This host mounts the share that the database calls /mnt/mediaq-share at its own
    folder: inputs are read through the mapping, outputs recorded as canonical paths."""
    canonical_root = "/mnt/mediaq-share"
    mq.env["MEDIAQ_PATH_MAP"] = f"{canonical_root}={mq.root}"
    mq.apply_workflow(diagnostic_workflow(
        "T-MAP", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 100}},
        {"action": "finalize_job", "parameters": {"verify_checksums": True}}))
    mq.input_file("a.bin", b"abc")
    code = mq.submit("T-MAP", mq.inputs / "a.bin")  # the CLI stores the canonical path
    assert mq.job(code)["input_file_path"] == f"{canonical_root}/inputs/a.bin"
    mq.run_burst(timeout=60)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    for output in job["output_metadata"]["outputs"]:
        assert output["path"].startswith(f"{canonical_root}/outputs/{code}/")
        local = mq.root / output["path"].removeprefix(canonical_root + "/")
        assert local.stat().st_size == output["size_bytes"]
