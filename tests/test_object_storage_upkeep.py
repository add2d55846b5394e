"""Object storage beyond one job: watch folders on bucket prefixes, ``mediaq prune
--outputs`` on an ``s3://`` output root, and de-duplication of ``s3://`` inputs. Real
worker and triggers processes against a real S3-protocol server (moto in server mode on
127.0.0.1) and the production client (boto3) unmocked."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from boto3.s3.transfer import TransferConfig

import mediaq
from mediaq.errors import SubmissionRefused
from mediaq.triggers.objects import ObjectVersion, SettleTracker
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for
from tests.s3_server import MOTO_SERVER, moto_server
from tests.test_object_storage import Store, store_for

pytestmark = pytest.mark.skipif(not MOTO_SERVER.exists(), reason="needs moto_server")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def store(mq: MediaqEnv, endpoint: str) -> Store:
    return store_for(mq, endpoint)


def put_many(store: Store, bucket: str, keys: list[str], body: bytes = b"x") -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.s3.put_object(Bucket=bucket, Key=key, Body=body),
                      keys))


def keys_under(store: Store, bucket: str, prefix: str) -> list[str]:
    pages = store.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


# -- watch folders on bucket prefixes ---------------------------------------------------------


def _jobs_by_key(mq: MediaqEnv) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for row in mq.query("SELECT job_code, input_file_path, input_metadata, submitted_by, "
                        "status FROM workflow_jobs ORDER BY id"):
        found.setdefault(row["input_file_path"].rsplit("/drop/", 1)[-1], []).append(row)
    return found


def test_a_bucket_prefix_watched_by_two_hosts_submits_each_object_version_once(
        store: Store) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow("T-NOOP", {"action": "noop"}))
    prefix = f"s3://{store.inputs}/uploads/drop/"
    out = mq.cli("watch-folder", "add", prefix, "--workflow", "T-NOOP", "--settle-seconds",
                 "1", "--pattern", "*.mp4,*.MOV", "--recursive").stdout
    folder_id = int(out.split()[-1].lstrip("#"))
    listed = json.loads(mq.cli("watch-folder", "list", "--json").stdout)
    assert [f["path"] for f in listed] == [prefix]
    # 1,000 objects the patterns skip come first: the matching ones are on the listing's
    # second page.
    put_many(store, store.inputs, [f"uploads/drop/aaa/{i:04d}.txt" for i in range(1000)])
    for key, body in {"a.mp4": b"first", "sub/b.MOV": b"bee", "zz.mp4": b"last",
                      ".hidden.mp4": b"h", "sub/.cache/c.mp4": b"c", "c.mp4.part": b"p",
                      "empty.mp4": b"", "notes.txt": b"n"}.items():
        store.put(f"drop/{key}", body)
    store.put("elsewhere.mp4", b"outside the prefix")
    # Two hosts' triggers list the same prefix.
    for host in ("host-a", "host-b"):
        mq.start("triggers", watch_scan_seconds="0.3", host_id=host)
    wait_for(lambda: set(_jobs_by_key(mq)) == {"a.mp4", "sub/b.MOV", "zz.mp4"}, timeout=60,
             message="the three matching objects' jobs")

    # A key deleted and uploaded again with other content is a new version; the same
    # content again is not. The markers show that later listings saw each change.
    store.s3.delete_object(Bucket=store.inputs, Key="uploads/drop/a.mp4")
    store.put("drop/a.mp4", b"second")
    store.put("drop/marker1.mp4", b"m1")
    wait_for(lambda: len(_jobs_by_key(mq).get("a.mp4", [])) == 2
             and "marker1.mp4" in _jobs_by_key(mq), timeout=60,
             message="the re-uploaded object's job")
    store.put("drop/a.mp4", b"second")
    store.put("drop/marker2.mp4", b"m2")
    wait_for(lambda: "marker2.mp4" in _jobs_by_key(mq), timeout=60, message="marker2's job")

    jobs = _jobs_by_key(mq)
    assert {key: len(rows) for key, rows in jobs.items()} == {
        "a.mp4": 2, "sub/b.MOV": 1, "zz.mp4": 1, "marker1.mp4": 1, "marker2.mp4": 1}
    first, second = jobs["a.mp4"]
    assert first["input_file_path"] == f"{prefix}a.mp4"
    assert first["submitted_by"] == f"watch:{folder_id}"
    assert first["input_metadata"]["etag"] == hashlib.md5(b"first").hexdigest()
    assert second["input_metadata"]["etag"] == hashlib.md5(b"second").hexdigest()
    assert second["input_metadata"]["size_bytes"] == len(b"second")
    rows = mq.query("SELECT rel_path, etag FROM watch_files ORDER BY rel_path, seen_at")
    assert len(rows) == 6 and all(row["etag"] for row in rows)
    # Every job runs, reading its object through the cache.
    mq.stop_workers()
    mq.run_burst(timeout=120)
    assert {row["status"] for row in mq.query("SELECT status FROM workflow_jobs")} == {
        "completed"}


def test_adding_a_bucket_prefix_refuses_what_a_worker_would(store: Store) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow("T-NOOP", {"action": "noop"}))
    refused = {
        "outside the input roots' bucket prefixes": f"s3://{store.outputs}/jobs/",
        "no such bucket": "s3://no-such-bucket-here/x/",
        "is not a valid bucket name": "s3://A_B/x/",
    }
    mq.env["MEDIAQ_INPUT_ROOTS"] += ",s3://no-such-bucket-here/"
    for message, path in refused.items():
        result = mq.cli("watch-folder", "add", path, "--workflow", "T-NOOP", check=False)
        assert result.returncode == 1 and message in result.stderr, (path, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert mq.query("SELECT * FROM watch_folders") == []
    # A store that refuses the listing later, and a row edited by hand: each folder's
    # last_error says why in one line, and the watcher goes on.
    mq.cli("watch-folder", "add", f"s3://{store.inputs}/uploads/", "--workflow", "T-NOOP")
    mq.query("INSERT INTO watch_folders (path, workflow_code) VALUES ('s3://A_B/x/', 'T-NOOP')")
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as strict:
        mq.env["MEDIAQ_S3_ENDPOINT_URL"] = strict
        mq.cli("triggers", "--once")
    errors = [f["last_error"] for f in json.loads(
        mq.cli("watch-folder", "list", "--json").stdout)]
    assert errors[0].startswith(f"s3://{store.inputs}/uploads/: access denied")
    assert "is not a valid bucket name" in errors[1]


def test_an_object_settles_when_two_listings_a_settle_time_apart_agree() -> None:
    tracker = SettleTracker()

    def listing(size: int, etag: str) -> list[ObjectVersion]:
        return [ObjectVersion("a.mp4", size, etag, 0)]

    # First seen at t=0: not ready before t=5, even when listed again.
    assert tracker.ready(1, listing(10, "e1"), 5, now=0.0) == ([], 5.0)
    assert tracker.ready(1, listing(10, "e1"), 5, now=4.9) == ([], 5.0)
    # Overwritten at t=6 (a new ETag): the wait starts again.
    assert tracker.ready(1, listing(12, "e2"), 5, now=6.0) == ([], 11.0)
    ready, soonest = tracker.ready(1, listing(12, "e2"), 5, now=11.0)
    assert [o.etag for o in ready] == ["e2"] and soonest is None
    # Gone from the listing: forgotten, so it waits again if it comes back.
    assert tracker.ready(1, [], 5, now=12.0) == ([], None)
    assert tracker.ready(1, listing(12, "e2"), 5, now=13.0) == ([], 18.0)
    # No settle time: the first listing is enough.
    assert [o.rel_path for o in tracker.ready(2, listing(1, "x"), 0, now=0.0)[0]] == ["a.mp4"]


# -- mediaq prune --outputs on an s3:// output root ---------------------------------------------


def test_prune_outputs_deletes_exactly_the_pruned_jobs_objects(store: Store,
                                                             endpoint: str) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow(
        "T-OUT", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 1000}}))
    old, other_old, recent = (mq.submit("T-OUT", store.put(f"in{i}.bin", b"input"))
                              for i in range(3))
    mq.run_burst(timeout=120)
    assert {mq.job(c)["status"] for c in (old, other_old, recent)} == {"completed"}
    # A big package: 1,100 more objects in the old job's folder (two DeleteObjects
    # requests, two listing pages); neighbours whose names start like its folder's.
    root = "jobs/"
    put_many(store, store.outputs, [f"{root}{old}/hls/seg_{i:04d}.m4s" for i in range(1100)])
    neighbours = [f"{root}{old}x/keep.bin", f"{root}{old}.bin", f"{root}.staging/{old}.a1.s1/x",
                  f"{old}/outside-the-root.bin"]
    put_many(store, store.outputs, neighbours)
    mq.query("UPDATE workflow_jobs SET completed_at = now() - interval '40 days' "
             "WHERE job_code = ANY(%s)", ([old, other_old],))
    doomed = {key for key in keys_under(store, store.outputs, root)
              if key.startswith((f"{root}{old}/", f"{root}{other_old}/"))}
    assert len(doomed) > 1100
    before = keys_under(store, store.outputs, "")

    dry = mq.cli("prune", "--dry-run", "--older-than", "30d", "--outputs").stdout.splitlines()
    assert sorted(dry[:-1]) == sorted(f"would remove s3://{store.outputs}/{key}"
                                      for key in doomed)
    assert dry[-1].startswith("would prune 2 jobs")
    dry_json = json.loads(mq.cli("prune", "--dry-run", "--older-than", "30d", "--outputs",
                                 "--json").stdout)
    assert len(dry_json["would_remove"]) == len(doomed)
    assert keys_under(store, store.outputs, "") == before

    # A store that refuses: one line, and the jobs stay to be pruned again.
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as strict:
        mq.env["MEDIAQ_S3_ENDPOINT_URL"] = strict
        denied = mq.cli("prune", "--older-than", "30d", "--outputs", check=False)
    mq.env["MEDIAQ_S3_ENDPOINT_URL"] = endpoint
    assert denied.returncode == 1
    [line] = denied.stderr.strip().splitlines()
    assert f"s3://{store.outputs}/jobs/: access denied" in line
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == 3
    assert keys_under(store, store.outputs, "") == before

    report = json.loads(mq.cli("prune", "--older-than", "30d", "--outputs", "--json").stdout)
    assert (report["jobs"], report["outputs_removed"]) == (2, 2)
    assert keys_under(store, store.outputs, "") == sorted(set(before) - doomed)
    assert [r["job_code"] for r in mq.query("SELECT job_code FROM workflow_jobs")] == [recent]
    assert all(key in set(before) - doomed for key in neighbours)
    assert any(key.startswith(f"{root}{recent}/") for key in keys_under(store, store.outputs,
                                                                         root))


# -- de-duplicating s3:// inputs ----------------------------------------------------------------


def _cache_entries(mq: MediaqEnv) -> dict[str, int]:
    """Cache entry → the inode of its data (a new download replaces the inode)."""
    cache = mq.root / "cache"
    return {entry.name: (entry / ".data").stat().st_ino
            for entry in (cache.iterdir() if cache.is_dir() else []) if entry.is_dir()}


def test_the_same_content_under_two_keys_is_one_job(store: Store,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow("T-DD", {"action": "noop"},
                                          dedupe_window_seconds=3600))
    content = os.urandom(6 * 1024 * 1024)
    single = store.put("single.bin", content)
    # The same bytes as a multipart upload: another ETag ("...-2"), and a SHA-256
    # checksum of the parts' checksums, neither of which is the content's.
    store.s3.upload_fileobj(
        io.BytesIO(content), store.inputs, "uploads/multi.bin",
        ExtraArgs={"ChecksumAlgorithm": "SHA256"},
        Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    multi = f"s3://{store.inputs}/uploads/multi.bin"
    etags = {store.s3.head_object(Bucket=store.inputs, Key=k)["ETag"]
             for k in ("uploads/single.bin", "uploads/multi.bin")}
    assert len(etags) == 2
    first = mq.submit("T-DD", single)
    assert mq.submit("T-DD", multi) == first
    # Uploaded with a whole-object SHA-256: the store's checksum is used, nothing fetched.
    entries = _cache_entries(mq)
    store.s3.put_object(Bucket=store.inputs, Key="uploads/summed.bin", Body=content,
                        ChecksumAlgorithm="SHA256")
    assert mq.submit("T-DD", f"s3://{store.inputs}/uploads/summed.bin") == first
    assert _cache_entries(mq) == entries
    other = mq.submit("T-DD", store.put("other.bin", content + b"!"))
    assert other != first
    digest = hashlib.sha256(content).hexdigest()
    assert mq.job(first)["content_hash"] == f"sha256:{digest}"
    # The worker on this host finds the submitted objects in the cache: no new download.
    entries = _cache_entries(mq)
    mq.run_burst(timeout=120)
    assert {mq.job(c)["status"] for c in (first, other)} == {"completed"}
    assert {name: ino for name, ino in _cache_entries(mq).items() if name in entries} == entries
    # A missing object: one line naming it.
    missing = mq.cli("submit", "T-DD", f"s3://{store.inputs}/uploads/nope.bin", check=False)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "nope.bin" in missing.stderr
    # Outside the input roots: refused before anything is fetched to be hashed.
    store.s3.put_object(Bucket=store.outputs, Key="secret.bin", Body=b"not an input")
    entries = _cache_entries(mq)
    for name, value in mq.env.items():  # mediaq.submit reads the process's settings
        if name.startswith(("MEDIAQ_", "AWS_")):
            monkeypatch.setenv(name, value)
    with pytest.raises(SubmissionRefused, match="outside the input roots"), psycopg.connect(
            mq.url, options="-c search_path=mediaq,public") as conn:
        mediaq.submit(conn, "T-DD", f"s3://{store.outputs}/secret.bin")
    assert _cache_entries(mq) == entries
