"""Media in and out over HTTP, against real `mediaq web` processes: RFC 9457 problems with
request ids, DELETE to cancel, progress as JSON and server-sent events, multipart uploads
that become jobs, signed download links (ranges, types, ETag, expiry, revocation,
deletion, webhooks), rate limits shared by two web processes. (tus uploads:
tests/test_web_uploads.py.)"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from mediaq import db, download_links
from tests.helpers import MediaqEnv, diagnostic_workflow, skip_without_tool, wait_for
from tests.test_notifications import Receiver
from tests.test_web_api import assert_one_line_error, start_web

pytestmark = pytest.mark.slow


def jpeg(mq: MediaqEnv, name: str = "photo.jpg", size: str = "640x480") -> Path:
    """A real JPEG made by ImageMagick (an independent maker of the source)."""
    skip_without_tool("convert")
    path = mq.root / name
    subprocess.run(["convert", "-size", size, "gradient:red-blue", str(path)], check=True,
                   timeout=60)
    return path


def thumbs(mq: MediaqEnv, code: str = "WF-THUMB") -> None:
    mq.apply_workflow(diagnostic_workflow(code, {"action": "create_thumbnail",
                                                 "parameters": {"sizes": [64, 128]}}))


def web_log(mq: MediaqEnv) -> str:
    return "".join(mq.worker_log(proc) for proc in mq.workers)


# -- problems, request ids, DELETE, progress -------------------------------------------------


def test_problems_carry_the_request_id_that_the_log_has(mq: MediaqEnv) -> None:
    web = start_web(mq)
    missing = web.get("/api/media/jobs/JOB-1999-000001", role="viewer")
    detail = assert_one_line_error(missing, 404)
    body = missing.json()
    assert body["instance"] == "/api/media/jobs/JOB-1999-000001" and "does not exist" in detail
    rid = body["requestId"]
    assert len(rid) == 32
    # the same id is on the server's log line for that request
    line = wait_for(lambda: next((x for x in web_log(mq).splitlines() if rid in x), None),
                    message="the problem's log line")
    assert "web:problem" in line and "404" in line and "does not exist" in line
    # a client's own id is kept, a forged one is replaced
    mine = web.get("/api/media/jobs/nope", headers={"X-Request-Id": "client-1234-abcd"})
    assert mine.json()["requestId"] == "client-1234-abcd"
    forged = web.get("/api/media/jobs/nope", headers={"X-Request-Id": "x\" injected"})
    assert forged.json()["requestId"] != "x\" injected"
    # validation errors, 401s and successes carry an id too
    assert_one_line_error(web.get("/api/media/jobs", params={"page": 0}), 422)
    assert_one_line_error(web.get("/api/media/jobs", role=None), 401)
    assert len(web.get("/api/media/jobs").headers["x-request-id"]) == 32


def test_delete_cancels_and_progress_streams_to_the_end(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("WF-SLOW", {"action": "sleep",
                                                      "parameters": {"seconds": 30}}))
    mq.apply_workflow(diagnostic_workflow("WF-TWO", {"action": "sleep",
                                                     "parameters": {"seconds": 1}},
                                          {"action": "noop"}))
    web = start_web(mq)
    photo = mq.input_file("a.jpg")
    code = web.post("/api/media/jobs", json={"type": "WF-SLOW",
                                             "inputPath": str(photo)}).json()["id"]
    assert_one_line_error(web.call("DELETE", f"/api/media/jobs/{code}", role="submitter"), 403)
    gone = web.call("DELETE", f"/api/media/jobs/{code}", role="operator")
    assert gone.status_code == 200 and gone.json()["status"] == "cancelled"
    assert mq.job(code)["status"] == "cancelled"
    assert_one_line_error(web.call("DELETE", f"/api/media/jobs/{code}"), 409)
    assert_one_line_error(web.call("DELETE", "/api/media/jobs/JOB-1999-000001"), 404)

    progress = web.get(f"/api/media/jobs/{code}/progress", role="viewer")
    assert progress.headers["content-type"] == "application/json"
    assert progress.json()["status"] == "cancelled" and progress.json()["id"] == code
    assert_one_line_error(web.get("/api/media/jobs/JOB-1999-000001/progress"), 404)

    two = web.post("/api/media/jobs", json={"type": "WF-TWO",
                                            "inputPath": str(photo)}).json()["id"]
    numeric = mq.job(two)["id"]
    assert web.get(f"/api/media/jobs/{numeric}/progress").json()["status"] == "pending"
    events: list[tuple[str, dict[str, Any]]] = []

    def listen() -> None:
        with requests.get(f"{web.base}/api/media/jobs/{two}/progress", stream=True,
                          timeout=120, headers={"Accept": "text/event-stream",
                                                "Authorization": f"Bearer {web.tokens['viewer']}"}
                          ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = ""
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))

    listener = threading.Thread(target=listen)
    listener.start()
    wait_for(lambda: events, message="the first event")
    mq.run_burst()
    listener.join(60)
    assert not listener.is_alive()  # the stream ended by itself once the job had
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "progress" and kinds[-1] == "end", kinds
    statuses = [data["status"] for _, data in events]
    assert statuses[0] == "pending" and statuses[-1] == "completed"
    assert events[-1][1]["progress"] == 100


# -- downloads ----------------------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1."""
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_outputs_download_through_signed_links(mq: MediaqEnv, hook: Receiver) -> None:
    mq.apply_workflow(diagnostic_workflow("WF-THUMB", {"action": "create_thumbnail",
                                                       "parameters": {"sizes": [64, 128]}},
                                          notify={"job.completed": [hook.url()]}))
    mq.env["MEDIAQ_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
    web = start_web(mq)
    mq.env["MEDIAQ_WEB_PUBLIC_URL"] = web.base  # what the notifier puts in webhooks
    source = jpeg(mq)
    # a multipart upload that names a workflow becomes a job
    with source.open("rb") as handle:
        posted = web.post("/api/media/uploads", role="submitter", files={
            "file": ("holiday photo.jpg", handle, "image/jpeg")},
            data={"workflow": "WF-THUMB", "priority": "7"})
    assert posted.status_code == 201, posted.text
    upload = posted.json()
    assert upload["contentType"] == "image/jpeg" and upload["status"] == "complete"
    landed = Path(upload["path"])
    assert landed.is_relative_to(mq.inputs) and landed.name == "holiday_photo.jpg"
    assert landed.read_bytes() == source.read_bytes()
    code = upload["jobId"]
    assert posted.headers["mediaq-job"] == code and mq.job(code)["priority"] == 7
    mq.run_burst()
    job = web.get(f"/api/media/jobs/{code}", role="viewer").json()
    assert job["status"] == "completed"
    outputs = {o["name"]: o for o in job["outputs"]}
    assert set(outputs) == {"holiday_photo_thumb_64.jpg", "holiday_photo_thumb_128.jpg"}
    out = outputs["holiday_photo_thumb_128.jpg"]
    on_disk = Path(out["path"]).read_bytes()
    assert out["contentType"] == "image/jpeg"

    # the whole file, by anyone holding the link (no token), with type, length, ETag
    whole = requests.get(out["url"], timeout=30)
    assert whole.status_code == 200 and whole.content == on_disk
    assert whole.headers["content-type"] == "image/jpeg"
    assert int(whole.headers["content-length"]) == len(on_disk)
    etag = whole.headers["etag"]
    assert etag and whole.headers["accept-ranges"] == "bytes"
    # a range
    part = requests.get(out["url"], headers={"Range": "bytes=100-299"}, timeout=30)
    assert part.status_code == 206 and part.content == on_disk[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(on_disk)}"
    assert requests.head(out["url"], timeout=30).headers["etag"] == etag
    cached = requests.get(out["url"], headers={"If-None-Match": etag}, timeout=30)
    assert cached.status_code == 304 and cached.content == b""

    # tampering: another path, another expiry, another signature → 403, nothing read
    split = urlsplit(out["url"])
    other = out["url"].replace("thumb_128", "thumb_64")
    assert requests.get(other, timeout=30).status_code == 403
    later = out["url"].replace(split.query.split("&")[0], "expires=99999999999")
    assert requests.get(later, timeout=30).status_code == 403
    traversal = f"{web.base}{split.path.rsplit('/', 2)[0]}/../../etc/passwd?{split.query}"
    assert requests.get(traversal, timeout=30).status_code in (403, 404)
    # links signed with the job's real secret still cannot leave the job's output folder,
    # and expire
    with db.connect(mq.url) as conn:
        job_row = {"id": mq.job(code)["id"], "job_code": code}
        signer = download_links.Signer.for_job(conn, job_row, None, mq.outputs, web.base, 60)
        conn.commit()
    assert signer.url("/etc/passwd") is None and signer.url(mq.inputs / "a.jpg") is None
    forged = signer.url(out["path"]).replace(  # type: ignore[union-attr]
        f"{code}/holiday_photo_thumb_128.jpg", "..%2F..%2Fetc%2Fpasswd")
    assert requests.get(forged, timeout=30).status_code in (403, 404)
    expired = signer.url(out["path"], now=time.time() - 3600)
    answer = requests.get(expired, timeout=30)  # type: ignore[arg-type]
    assert answer.status_code == 403 and "expired" in answer.json()["detail"]

    # webhooks carry links too (made by the notifier with web.public_url)
    mq.cli("notifier", "--until-idle")
    [delivered] = [json.loads(r.body) for r in hook.received()]
    hooked = {Path(o["path"]).name: o for o in delivered["job"]["output_metadata"]["outputs"]}
    assert requests.get(hooked["holiday_photo_thumb_64.jpg"]["url"], timeout=30).content == \
        Path(outputs["holiday_photo_thumb_64.jpg"]["path"]).read_bytes()

    # revoking the token that asked for the link ends it; the webhook's link lives on
    viewer_id = next(t["id"] for t in json.loads(mq.cli("tokens", "list", "--json").stdout)
                     if t["role"] == "viewer")
    mq.cli("tokens", "revoke", str(viewer_id))
    assert requests.get(out["url"], timeout=30).status_code == 403
    assert requests.get(hooked["holiday_photo_thumb_64.jpg"]["url"], timeout=30).ok
    # deleting the job ends every link
    mq.query("DELETE FROM workflow_jobs WHERE job_code = %s", (code,))
    assert requests.get(hooked["holiday_photo_thumb_64.jpg"]["url"], timeout=30
                        ).status_code == 404


# -- rate limits ---------------------------------------------------------------------------------


def test_submits_are_rate_limited_across_two_web_processes(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("WF-QUICK", {"action": "noop"}))
    mq.env.update({"MEDIAQ_SUBMIT_RATE_LIMIT": "30/m,admin=0",
                   "MEDIAQ_RATE_LIMIT": "100000/m", "MEDIAQ_ADDRESS_RATE_LIMIT": "100000/m"})
    web = start_web(mq)
    _, second = mq.start_web()  # a second process on the same database
    bases = [web.base, second]
    photo = str(mq.input_file("a.jpg"))
    body = {"type": "WF-QUICK", "inputPath": photo}
    token = web.tokens["submitter"]
    local = threading.local()

    def submit(i: int) -> requests.Response:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(f"{bases[i % 2]}/api/media/jobs", json=body, timeout=60,
                                  headers={"Authorization": f"Bearer {token}"})

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(1000)))
    seconds = time.monotonic() - started
    counts = Counter(a.status_code for a in answers)
    assert set(counts) == {201, 429}, counts
    # a bucket of 30 refilled at 30 a minute: at most 30 + what refilled meanwhile
    assert 30 <= counts[201] <= 30 + int(seconds / 2) + 1, (counts, seconds)
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs")["n"] == counts[201]
    refused = next(a for a in answers if a.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert refused.headers["content-type"] == "application/problem+json"
    assert "too many requests" in refused.json()["detail"]
    # both processes refused (the limit is shared, not per process)
    by_process = Counter((urlsplit(a.url).port, a.status_code) for a in answers)
    assert all(by_process[(urlsplit(b).port, 429)] > 0 for b in bases), by_process
    # another token goes through at once; reads by the limited token too
    other = web.post("/api/media/jobs", role="operator", json=body)
    assert other.status_code == 201
    assert web.get("/api/media/jobs", role="submitter").status_code == 200
    assert web.post("/api/media/jobs", role="admin", json=body).status_code == 201
    print(f"\n1000 submits in {seconds:.2f} s over two processes: {dict(counts)}")


def test_the_address_limit_covers_requests_without_a_token(mq: MediaqEnv) -> None:
    mq.env["MEDIAQ_ADDRESS_RATE_LIMIT"] = "20/h"
    web = start_web(mq)
    answers = [web.get("/api/media/jobs", role=None) for _ in range(25)]
    counts = Counter(a.status_code for a in answers)
    assert counts == {401: 20, 429: 5}, counts
    assert int(answers[-1].headers["retry-after"]) > 60
    assert "this address" in answers[-1].json()["detail"]


def test_openapi_describes_the_new_routes(mq: MediaqEnv) -> None:
    web = start_web(mq)
    schema = web.get("/openapi.json").json()
    paths = schema["paths"]
    assert "delete" in paths["/api/media/jobs/{job_id}"]
    assert "text/event-stream" in paths["/api/media/jobs/{job_id}/progress"]["get"][
        "responses"]["200"]["content"]
    assert {"post", "options"} <= set(paths["/api/media/uploads"])
    assert {"head", "patch", "delete", "get"} <= set(paths["/api/media/uploads/{upload_id}"])
    assert "multipart/form-data" in paths["/api/media/uploads"]["post"]["requestBody"][
        "content"]
    assert "/api/media/downloads/{key_id}/{path}" in paths
    answer = paths["/api/media/jobs"]["post"]["responses"]["429"]
    assert "Retry-After" in answer["headers"]
    assert answer["content"]["application/problem+json"]["schema"]["$ref"].endswith("Problem")
