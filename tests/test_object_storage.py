"""Media in object storage, tried against a real S3-protocol server (moto in server mode on
127.0.0.1), the production client (boto3) unmocked: ``s3://`` inputs by every door, an
``s3://`` output root, fenced publishing, the sweep, and one-line errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from PIL import Image

import mediaq
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for
from tests.media_judge import audio_stream, duration_of, ffmpeg, needs_ffmpeg
from tests.s3_server import (
    CREDENTIALS,
    MOTO_SERVER,
    HoldingProxy,
    bucket_name,
    client,
    moto_server,
)

pytestmark = pytest.mark.skipif(not MOTO_SERVER.exists(), reason="needs moto_server")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@dataclass
class Store:
    mq: MediaqEnv
    endpoint: str
    s3: Any
    inputs: str  # bucket of inputs (s3://<inputs>/uploads/ is an input root)
    outputs: str  # bucket of outputs (s3://<outputs>/jobs/ is the output root)

    def put(self, key: str, data: bytes) -> str:
        self.s3.put_object(Bucket=self.inputs, Key=f"uploads/{key}", Body=data)
        return f"s3://{self.inputs}/uploads/{key}"

    def get(self, uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def final_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.outputs, Prefix="jobs/")
        return sorted(o["Key"] for o in listed.get("Contents", [])
                      if not o["Key"].startswith("jobs/.staging/"))

    def staged_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.outputs, Prefix="jobs/.staging/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def multipart_uploads(self) -> list[dict[str, Any]]:
        return list(self.s3.list_multipart_uploads(Bucket=self.outputs).get("Uploads", []))


def store_for(mq: MediaqEnv, endpoint: str) -> Store:
    s3 = client(endpoint)
    inputs, outputs = bucket_name("media-in"), bucket_name("media-out")
    for bucket in (inputs, outputs):
        s3.create_bucket(Bucket=bucket)
    # Versions show who wrote a final key, and how often.
    s3.put_bucket_versioning(Bucket=outputs, VersioningConfiguration={"Status": "Enabled"})
    mq.env.update({
        **CREDENTIALS,
        "MEDIAQ_S3_ENDPOINT_URL": endpoint,
        "MEDIAQ_INPUT_ROOTS": f"{mq.inputs},s3://{inputs}/uploads/",
        "MEDIAQ_OUTPUT_ROOT": f"s3://{outputs}/jobs/",
        "MEDIAQ_CACHE_DIR": str(mq.root / "cache"),
        "MEDIAQ_S3_SWEEP_SECONDS": "1",
        "MEDIAQ_S3_MULTIPART_MB": "5",
    })
    return Store(mq, endpoint, s3, inputs, outputs)


@pytest.fixture
def store(mq: MediaqEnv, endpoint: str) -> Store:
    return store_for(mq, endpoint)


def jpeg(width: int = 1200, height: int = 800) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 90, 40)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def check_outputs(store: Store, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every recorded output is an object at <root>/<job_code>/ whose bytes match the
    recorded size and SHA-256; the manifest (if any) says the same."""
    outputs = job["output_metadata"]["outputs"]
    assert outputs
    for output in outputs:
        assert output["path"].startswith(f"s3://{store.outputs}/jobs/{job['job_code']}/")
        data = store.get(output["path"])
        assert len(data) == output["size_bytes"]
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
    assert job["output_file_path"].startswith("s3://")
    manifests = [o for o in outputs if o["path"].endswith("_manifest.json")]
    for entry in manifests:  # finalize_job's manifest names the same objects
        manifest = json.loads(store.get(entry["path"]))
        assert {(o["path"], o["sha256"]) for o in manifest["outputs"]} <= {
            (o["path"], o["sha256"]) for o in outputs}
        assert all("local_path" not in o for o in manifest["outputs"])
    return list(outputs)


def assert_written_only_by_the_committer(store: Store, job: dict[str, Any]) -> None:
    """Every version ever written at each final key holds the bytes the database
    recorded (the sleep action's bytes differ per worker process)."""
    for output in job["output_metadata"]["outputs"]:
        key = output["path"].removeprefix(f"s3://{store.outputs}/")
        versions = store.s3.list_object_versions(Bucket=store.outputs, Prefix=key)
        for version in versions.get("Versions", []):
            data = store.s3.get_object(Bucket=store.outputs, Key=key,
                                       VersionId=version["VersionId"])["Body"].read()
            assert hashlib.sha256(data).hexdigest() == output["sha256"], key


def head_type(store: Store, uri: str) -> str:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return str(store.s3.head_object(Bucket=bucket, Key=key)["ContentType"])


# -- the seeded workflows, s3:// in and out --------------------------------------------------


def test_image_workflow_from_every_door_into_an_s3_output_root(store: Store) -> None:
    mq = store.mq
    mq.seed()
    photo = store.put("photo.jpg", jpeg())
    by_cli = mq.submit("WF-IMAGE-PROCESS", photo)
    by_sql = mq.one("SELECT job_code FROM submit_job('WF-IMAGE-PROCESS', %s)",
                    (photo,))["job_code"]
    mq.query("INSERT INTO workflow_jobs (workflow_id, input_file_path) SELECT id, %s"
             " FROM workflow_definitions WHERE workflow_code = 'WF-IMAGE-PROCESS'", (photo,))
    by_insert = mq.one("SELECT job_code FROM workflow_jobs WHERE job_code NOT IN (%s, %s)",
                       (by_cli, by_sql))["job_code"]
    with psycopg.connect(mq.url, options="-c search_path=mediaq,public") as conn:
        by_python = mediaq.submit(conn, "WF-IMAGE-PROCESS", photo)["job_code"]
        conn.commit()
    mq.run_burst(timeout=240)
    for code in (by_cli, by_sql, by_insert, by_python):
        job = mq.job(code)
        assert job["status"] == "completed", job["error_message"]
        assert job["input_file_path"] == photo
        outputs = check_outputs(store, job)
        webp = next(o for o in outputs if o["path"].endswith(".webp"))
        assert head_type(store, webp["path"]) == "image/webp"
        with Image.open(io.BytesIO(store.get(webp["path"]))) as image:
            assert image.format == "WEBP" and image.size == (1200, 800)
        thumb = next(o for o in outputs if o["role"] == "thumbnail")
        with Image.open(io.BytesIO(store.get(thumb["path"]))) as image:
            assert max(image.size) <= 300
    # Four jobs, one input: fetched once on this host, three cache hits.
    entries = [p for p in (mq.root / "cache").iterdir() if p.is_dir()]
    assert len(entries) == 1
    # Nothing is left under the attempts' own keys, and no upload is unfinished.
    assert store.staged_keys() == []
    assert store.multipart_uploads() == []


@needs_ffmpeg
def test_audio_and_video_workflows_on_s3(store: Store) -> None:
    mq = store.mq
    mq.seed()
    wav, mp4 = mq.root / "tone.wav", mq.root / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2", wav)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000", "-t", "1", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", mp4)
    audio = mq.submit("WF-AUDIO-TRANSCODE", store.put("tone.wav", wav.read_bytes()))
    video = mq.submit("WF-VIDEO-TRANSCODE", store.put("clip.mp4", mp4.read_bytes()))
    mq.run_burst("--vram-mb", "8000", timeout=480)
    job = mq.job(audio)
    assert job["status"] == "completed", job["error_message"]
    assert any(o["path"].endswith("_manifest.json") for o in job["output_metadata"]["outputs"])
    for output in check_outputs(store, job):
        if output["path"].endswith(".mp3"):
            assert head_type(store, output["path"]) == "audio/mpeg"
            local = mq.root / "judge.mp3"
            local.write_bytes(store.get(output["path"]))
            assert audio_stream(local)["codec_name"] == "mp3"  # type: ignore[index]
            assert duration_of(local) == pytest.approx(2.0, abs=0.1)
    job = mq.job(video)
    assert job["status"] == "completed", job["error_message"]
    outputs = check_outputs(store, job)
    renditions = [o for o in outputs if o["role"] == "rendition"]
    assert renditions
    for rendition in renditions:
        local = mq.root / Path(rendition["path"]).name
        local.write_bytes(store.get(rendition["path"]))
        assert duration_of(local) == pytest.approx(1.0, abs=0.15)
    playlists = [o for o in outputs if o["path"].endswith(".m3u8")]
    for playlist in playlists:
        assert head_type(store, playlist["path"]) == "application/vnd.apple.mpegurl"


# -- refusals and errors ---------------------------------------------------------------------


def test_refusals_are_one_line(store: Store, endpoint: str) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow("T-S3", {"action": "noop"}))
    outside = mq.cli("submit", "T-S3", f"s3://{store.outputs}/x.bin", check=False)
    assert outside.returncode != 0
    assert "outside the input roots" in outside.stderr.strip().splitlines()[-1]
    missing = mq.cli("submit", "T-S3", f"s3://{store.inputs}/uploads/nope.bin", check=False)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1].endswith("no such object")
    assert len(missing.stderr.strip().splitlines()) == 1
    # Past the doors that look (SQL, Python), the worker says the same, for good.
    code = mq.one("SELECT job_code FROM submit_job('T-S3', %s)",
                  (f"s3://{store.inputs}/uploads/nope.bin",))["job_code"]
    bad_bucket = mq.one("SELECT job_code FROM submit_job('T-S3', %s)",
                        (f"s3://{store.inputs}-gone/uploads/x.bin",))["job_code"]
    mq.run_burst(timeout=60)
    job = mq.job(code)
    assert (job["status"], job["error_class"]) == ("failed", "permanent")
    assert job["error_message"] == f"s3://{store.inputs}/uploads/nope.bin: no such object"
    job = mq.job(bad_bucket)
    assert (job["status"], job["error_class"]) == ("failed", "permanent")
    assert "outside the input roots" in job["error_message"]


def test_denied_and_unreachable(store: Store) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow("T-S3", {"action": "noop"}))
    source = store.put("a.bin", b"abc")
    with moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as strict:
        code = mq.one("SELECT job_code FROM submit_job('T-S3', %s)", (source,))["job_code"]
        env_before = dict(mq.env)
        mq.env["MEDIAQ_S3_ENDPOINT_URL"] = strict
        mq.run_burst(timeout=60)
        mq.env.clear()
        mq.env.update(env_before)
    job = mq.job(code)
    assert (job["status"], job["error_class"]) == ("failed", "permanent")
    assert job["error_message"].startswith(f"{source}: access denied")
    assert "testing-secret-key" not in json.dumps(mq.query("SELECT log FROM workflow_jobs"))
    # Nothing listens at the endpoint: a transient failure, retried with back-off.
    unreachable = mq.one("SELECT job_code FROM submit_job('T-S3', %s)", (source,))["job_code"]
    mq.env["MEDIAQ_S3_ENDPOINT_URL"] = "http://127.0.0.1:9"
    mq.env["MEDIAQ_S3_TIMEOUT_SECONDS"] = "2"
    mq.run_burst(timeout=120)
    execution = mq.one("SELECT se.error_class, se.error_message FROM step_executions se"
                       " JOIN workflow_jobs j ON j.id = se.job_id WHERE j.job_code = %s"
                       " ORDER BY se.id LIMIT 1", (unreachable,))
    assert execution["error_class"] == "transient"
    assert execution["error_message"] == (f"{source}: cannot reach the S3 endpoint "
                                          "http://127.0.0.1:9")


def test_a_stalled_download_is_transient(store: Store) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow("T-S3", {"action": "noop"}))
    source = store.put("stall.bin", b"x" * 1000)
    proxy = HoldingProxy(store.endpoint,
                         hold=lambda method, path: method == "GET" and "stall.bin" in path)
    proxy.start()
    try:
        code = mq.one("SELECT job_code FROM submit_job('T-S3', %s)", (source,))["job_code"]
        mq.env.update({"MEDIAQ_S3_ENDPOINT_URL": proxy.endpoint,
                       "MEDIAQ_S3_TIMEOUT_SECONDS": "1"})
        worker = mq.start_worker("--id", "w1")
        execution = wait_for(lambda: mq.query(
            "SELECT se.error_class, se.error_message FROM step_executions se JOIN workflow_jobs j"
            " ON j.id = se.job_id WHERE j.job_code = %s AND se.status = 'failed'", (code,)),
            timeout=120, message="the stalled download to fail")[0]
        assert execution["error_class"] == "transient"
        assert execution["error_message"].startswith(f"{source}: the transfer stalled")
        worker.terminate()
    finally:
        proxy.stop()


# -- fencing: kill -9 mid-upload, SIGSTOP past the lease --------------------------------------


def test_kill_9_mid_upload_leaves_no_final_object(store: Store) -> None:
    mq = store.mq
    size = 12 * 1024 * 1024  # three parts of 5 MB
    mq.apply_workflow(diagnostic_workflow(
        "T-UP", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": size}}))
    code = mq.submit("T-UP", store.put("in.bin", b"input"))
    # The victim talks to the store through a proxy that holds its second part forever.
    proxy = HoldingProxy(store.endpoint,
                         hold=lambda method, path: method == "PUT" and "partNumber=2" in path)
    proxy.start()
    try:
        victim = mq.start_worker("--id", "victim", s3_endpoint_url=proxy.endpoint)
        assert proxy.held.wait(120), "the victim never reached its second part"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        assert store.final_keys() == []
        assert len(store.multipart_uploads()) == 1  # the victim's, unfinished
        survivor = mq.start_worker("--id", "survivor")
        wait_for(lambda: mq.job(code)["status"] == "completed", timeout=120,
                 message="the survivor to complete the job")
        job = mq.job(code)
        assert job["worker_id"] == "survivor"
        check_outputs(store, job)
        # Every version of every final key is the survivor's (its bytes differ from
        # the victim's); the orphan upload is aborted by the sweep.
        assert_written_only_by_the_committer(store, job)
        try:
            wait_for(lambda: store.multipart_uploads() == [] and store.staged_keys() == [],
                     timeout=30, message="the sweep of the killed attempt")
        except AssertionError:
            raise AssertionError(f"{store.multipart_uploads()} {store.staged_keys()} "
                                 + mq.worker_log(survivor)[-3000:]) from None
    finally:
        proxy.stop()


def test_a_worker_stopped_past_its_lease_publishes_nothing(store: Store) -> None:
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow(
        "T-STOP", {"action": "sleep", "parameters": {"seconds": 2, "output_bytes": 1000}}))
    code = mq.submit("T-STOP", store.put("in.bin", b"input"))
    # Both workers share the host's cache: the stale one may be frozen holding the input's
    # entry lock, which the fresh one passes once it has been still this long.
    mq.env["MEDIAQ_S3_TIMEOUT_SECONDS"] = "5"
    stale = mq.start_worker("--id", "stale")
    wait_for(lambda: mq.job(code)["status"] == "processing"
             and mq.job(code)["worker_id"] == "stale")
    os.kill(stale.pid, signal.SIGSTOP)
    mq.start_worker("--id", "fresh")
    wait_for(lambda: mq.job(code)["status"] == "completed", timeout=60,
             message="the fresh worker to complete the job")
    finals = store.final_keys()
    assert finals
    os.kill(stale.pid, signal.SIGCONT)
    wait_for(lambda: "job:lease_lost" in mq.worker_log(stale), timeout=60,
             message="the stale worker to find its lease gone")
    assert store.final_keys() == finals
    job = mq.job(code)
    assert_written_only_by_the_committer(store, job)
    assert job["worker_id"] == "fresh"
    check_outputs(store, job)
    wait_for(lambda: store.staged_keys() == [], timeout=60,
             message="the sweep of the stale attempt's staged objects")


def test_the_http_api_takes_s3_inputs_and_shows_s3_outputs(store: Store) -> None:
    from tests.test_web_api import assert_one_line_error, start_web

    mq = store.mq
    mq.apply_workflow(diagnostic_workflow(
        "T-API", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 64}}))
    web = start_web(mq)
    source = store.put("api.bin", b"from the api")
    created = web.post("/api/media/jobs", role="submitter",
                       json={"type": "T-API", "inputPath": source})
    assert created.status_code == 201, created.text
    missing = web.post("/api/media/jobs", role="submitter",
                       json={"type": "T-API", "inputPath": source + ".nope"})
    assert assert_one_line_error(missing, 400).endswith("no such object")
    mq.run_burst(timeout=60)
    detail = web.get(f"/api/media/jobs/{created.json()['id']}").json()
    assert detail["status"] == "completed"
    assert [o["path"] for o in detail["outputs"]] == [
        f"s3://{store.outputs}/jobs/{detail['id']}/{detail['id']}_sleep1.bin"]
    # Its download link is a presigned URL of the store's: it reads the object, with no
    # token, and nothing else (a signature made for one key opens no other).
    (output,) = detail["outputs"]
    assert "Signature=" in output["url"] and "Expires=" in output["url"]
    fetched = requests.get(output["url"], timeout=30)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == output["sha256"]
    other = output["url"].replace("_sleep1.bin", "_other.bin")
    assert requests.get(other, timeout=30).status_code == 403


def test_a_job_resumed_on_another_host_reads_earlier_outputs_from_the_store(
        store: Store) -> None:
    """Host A commits step 1 and is killed in step 2; host B (its own MEDIAQ_HOME, no
    shared folder) resumes at step 2, and finalize_job checks step 1's object through
    B's cache."""
    mq = store.mq
    mq.apply_workflow(diagnostic_workflow(
        "T-HOSTS", {"action": "sleep", "parameters": {"seconds": 0, "output_bytes": 5000}},
        {"action": "sleep", "parameters": {"seconds": 30}},
        {"action": "finalize_job", "parameters": {"verify_checksums": True}}))
    code = mq.submit("T-HOSTS", store.put("in.bin", b"input"))
    host_a = mq.start_worker("--id", "host-a", home=str(mq.root / "host-a"))
    wait_for(lambda: mq.query("SELECT 1 FROM step_executions se JOIN workflow_jobs j ON"
                              " j.id = se.job_id WHERE j.job_code = %s AND se.step_id ="
                              " (SELECT id FROM workflow_steps ws WHERE ws.step_number = 2"
                              " AND ws.workflow_id = j.workflow_id)", (code,)),
             timeout=60, message="host A to start step 2")
    os.kill(host_a.pid, signal.SIGKILL)
    host_a.wait(10)
    mq.query("UPDATE workflow_steps SET parameters = '{\"seconds\": 0}'"
             " WHERE step_number = 2 AND workflow_id = (SELECT id FROM workflow_definitions"
             " WHERE workflow_code = 'T-HOSTS')")
    mq.start_worker("--id", "host-b", home=str(mq.root / "host-b"),
                    cache_dir=str(mq.root / "host-b" / "cache"))
    wait_for(lambda: mq.job(code)["status"] in ("completed", "failed"), timeout=120,
             message="host B to finish the job")
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    outputs = check_outputs(store, job)
    assert any(o["path"].endswith("_manifest.json") for o in outputs)
    assert list((mq.root / "host-b" / "cache").iterdir())  # step 1's object came this way


def downloads(log: str) -> list[tuple[int | None, str]]:
    """What a worker fetched into its cache, in order: (the step whose action asked for
    it, None for the job's input), the object's URI; from its JSON log lines."""
    fetched = []
    for line in log.splitlines():
        if '"cache:downloaded"' in line:
            event = json.loads(line)
            fetched.append((event.get("step"), event["uri"]))
    return fetched


def test_a_late_step_on_another_host_fetches_only_the_output_it_reads(store: Store) -> None:
    """Host A makes three objects (steps 1-3) and is killed in step 4; host B (its own
    MEDIAQ_HOME and cache, no shared folder) runs step 4, which needs step 2 and reads
    its object alone: B fetches the job's input and that object, not the two others,
    until finalize_job (verify_checksums) reads every output."""
    mq = store.mq
    made = [{"action": "sleep", "step_name": f"make {n}",
             "parameters": {"seconds": 0, "output_bytes": 4000 + n}} for n in (1, 2, 3)]
    mq.apply_workflow(diagnostic_workflow(
        "T-LAZY", *made,
        {"action": "sleep", "step_name": "read", "needs": [2], "parameters": {"seconds": 30}},
        {"action": "finalize_job", "needs": [3, 4], "parameters": {"verify_checksums": True}}))
    code = mq.submit("T-LAZY", store.put("lazy.bin", b"input"))

    def states() -> dict[int, str]:
        return {r["step_number"]: r["status"] for r in mq.query(
            "SELECT ws.step_number, se.status FROM step_executions se JOIN workflow_jobs j"
            " ON j.id = se.job_id JOIN workflow_steps ws ON ws.id = se.step_id"
            " WHERE j.job_code = %s", (code,))}

    host_a = mq.start_worker("--id", "host-a", home=str(mq.root / "host-a"))
    wait_for(lambda: states().get(3) == "completed" and states().get(4) == "running",
             timeout=60, message="host A to make three objects and start step 4",
             otherwise=states)
    os.kill(host_a.pid, signal.SIGKILL)
    host_a.wait(10)
    mq.query("UPDATE workflow_steps SET action = 'checksum', parameters = '{}'"
             " WHERE step_number = 4 AND workflow_id = (SELECT id FROM workflow_definitions"
             " WHERE workflow_code = 'T-LAZY')")
    host_b = mq.start_worker("--id", "host-b", home=str(mq.root / "host-b"),
                             cache_dir=str(mq.root / "host-b" / "cache"))
    wait_for(lambda: mq.job(code)["status"] in ("completed", "failed"), timeout=120,
             message="host B to finish the job")
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    outputs = check_outputs(store, job)  # finalize_job verified every checksum on B
    objects = {o["step"]: o for o in outputs}
    read = mq.one("SELECT se.output_data FROM step_executions se JOIN workflow_jobs j ON"
                  " j.id = se.job_id JOIN workflow_steps ws ON ws.id = se.step_id WHERE"
                  " j.job_code = %s AND ws.step_number = 4 AND se.status = 'completed'",
                  (code,))["output_data"]
    assert (read["source"], read["sha256"]) == (objects[2]["path"], objects[2]["sha256"])
    fetched = downloads(mq.worker_log(host_b))
    # Nothing fetched ahead of an action's read: the input alone came without a step.
    assert [uri for step, uri in fetched if step is None] == [
        f"s3://{store.inputs}/uploads/lazy.bin"]
    assert [uri for step, uri in fetched if step == 4] == [objects[2]["path"]]
    # finalize_job read the two others (step 2's object was in B's cache already).
    assert sorted(uri for step, uri in fetched if step == 5) == sorted(
        [objects[1]["path"], objects[3]["path"]])
    assert len(fetched) == 4
    assert len([e for e in (mq.root / "host-b" / "cache").iterdir() if e.is_dir()]) == 4
