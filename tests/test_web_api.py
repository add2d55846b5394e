"""`mediaq web` as a real process, spoken to over HTTP: tokens and roles on every route,
the job API under /api/media, one-line errors, /metrics, and schemathesis finding no 5xx."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mediaq import db
from mediaq.web.auth import create_token
from tests.helpers import MediaqEnv, diagnostic_workflow, skip_without_tool, wait_for

pytestmark = pytest.mark.slow

SECRETS = {
    "webhook_secret": "whsec_c2VjcmV0LXNob3VsZC1uZXZlci1sZWFr",
    "smtp_password": "smtp-pass-never-shown-42",
    "smtp_url": "smtp://mailer:smtp-url-pass-never-shown@127.0.0.1:2525",
}
METRIC_NAMES = {
    "media_jobs_total", "media_jobs_pending", "media_jobs_running", "media_vram_used_bytes",
    "media_vram_total_bytes", "media_queue_depth", "media_queue_oldest_age_seconds",
    "media_queue_eligible", "media_queue_oldest_eligible_age_seconds",
    "media_step_duration_seconds", "media_job_retries_total", "media_job_rescues_total",
    "media_jobs_dead_lettered", "media_notifications_total",
    "media_notification_breaker_open", "media_workers", "mediaq_jobs_finished_15m",
    "mediaq_disk_free_bytes", "mediaq_disk_total_bytes", "mediaq_worker_rss_bytes",
    "mediaq_host_load1",
}
SLACK_HOOK = "slack+https://hooks.slack.com/services/T000/B000/slack-secret-never-shown"
ROLES = ("viewer", "submitter", "operator", "admin")
# The least role each route needs.
NEEDS = {
    ("post", "/api/media/jobs"): "submitter",
    ("patch", "/api/media/jobs/{job_id}"): "operator",
    ("post", "/api/media/jobs/retry"): "operator",
    ("post", "/api/media/jobs/cancel"): "operator",
    ("post", "/api/media/jobs/{job_id}/retry"): "operator",
    ("post", "/api/media/jobs/{job_id}/cancel"): "operator",
    ("post", "/api/media/jobs/{job_id}/pause"): "operator",
    ("post", "/api/media/jobs/{job_id}/resume"): "operator",
    ("post", "/api/media/notifications/{notification_id}/retry"): "operator",
    ("post", "/api/media/workflows"): "admin",
    ("delete", "/api/media/jobs/{job_id}"): "operator",
    ("post", "/api/media/uploads"): "submitter",
    ("head", "/api/media/uploads/{upload_id}"): "submitter",
    ("patch", "/api/media/uploads/{upload_id}"): "submitter",
    ("delete", "/api/media/uploads/{upload_id}"): "submitter",
    ("get", "/api/media/uploads/{upload_id}"): "submitter",
    ("post", "/api/media/breakers/{action}/close"): "operator",
    ("post", "/api/media/hosts/{host}/pause"): "operator",
    ("post", "/api/media/hosts/{host}/resume"): "operator",
}
# Routes open without a token: tus discovery, and downloads (the signed link is the
# credential; tests/test_web_transfer.py checks those).
PUBLIC = {"/healthz", "/api/media/uploads", "/api/media/downloads/{key_id}/{path}",
          "/api/media/downloads/{key_id}/folder/{expires}/{sig}/{path}"}  # signed links



@dataclass
class Web:
    base: str
    tokens: dict[str, str]
    responses: list[str]

    def call(self, method: str, path: str, role: str | None = "admin",
             **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        response = requests.request(method, self.base + path, headers=headers, timeout=60,
                                    **kwargs)
        if kwargs.get("stream") and response.ok:
            response.close()  # an event stream: its status says it all (it lasts minutes)
        else:
            self.responses.append(response.text)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        return response

    def get(self, path: str, role: str | None = "admin", **kwargs: Any) -> requests.Response:
        return self.call("GET", path, role, **kwargs)

    def post(self, path: str, role: str | None = "admin", **kwargs: Any) -> requests.Response:
        return self.call("POST", path, role, **kwargs)


def start_web(mq: MediaqEnv) -> Web:
    for key, value in SECRETS.items():
        mq.env[f"MEDIAQ_{key.upper()}"] = value
    # The CLI prints the admin token as its last word; the others are made in process
    # (the same function), which saves a Python start-up per role.
    tokens = {"admin": mq.cli("tokens", "create", "--role", "admin", "--name", "t-admin")
              .stdout.split()[-1]}
    with db.connect(mq.url) as conn:
        for role in ROLES[:-1]:
            tokens[role] = create_token(conn, role, f"t-{role}")[0]
        conn.commit()
    _, base = mq.start_web()
    return Web(base, tokens, [])


def sleepy(mq: MediaqEnv, code: str = "WF-SLEEPY", seconds: float = 30) -> None:
    mq.apply_workflow(diagnostic_workflow(code, {"action": "sleep",
                                                 "parameters": {"seconds": seconds}}))


def assert_one_line_error(response: requests.Response, status: int | tuple[int, ...]) -> str:
    allowed = (status,) if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.text)
    # RFC 9457: a problem with a one-line detail and the request's id (also a header)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert set(body) <= {"type", "title", "status", "detail", "instance", "requestId"}, body
    assert body["status"] == response.status_code and body["title"], body
    assert body["detail"] and "\n" not in body["detail"], body
    assert body["requestId"] == response.headers["x-request-id"], body
    return str(body["detail"])


def assert_status(response: requests.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    return ""


def assert_no_secrets(web: Web, mq: MediaqEnv) -> None:
    everything = "\n".join(web.responses)
    for secret in (*SECRETS.values(), "smtp-url-pass-never-shown", "slack-secret-never-shown",
                   *web.tokens.values()):
        assert secret not in everything
    password = mq.url.split("@")[0].rpartition(":")[2]
    if password and "//" not in password and len(password) > 3:
        assert password not in everything


def test_every_route_refuses_anonymous_and_lesser_roles(mq: MediaqEnv) -> None:
    web = start_web(mq)
    assert web.get("/healthz", role=None).json() == {"status": "ok"}
    assert_one_line_error(web.get("/openapi.json", role=None), 401)
    schema = web.get("/openapi.json", role="viewer").json()
    routes = [(method, path) for path, item in schema["paths"].items() for method in item]
    assert len(routes) >= 15, routes
    assert ("get", "/metrics") in routes and ("get", "/api/media/jobs/stats") in routes
    fill = {"{job_id}": "JOB-NOPE", "{code}": "WF-NOPE", "{name}": "cycle-time",
            "{notification_id}": "1", "{upload_id}": "u" * 24}
    for method, template in routes:
        if template in PUBLIC and (method, template) not in NEEDS:
            continue
        path = template
        for key, value in fill.items():
            path = path.replace(key, value)
        # a HEAD answer has no body: its status says it all
        refused = assert_one_line_error if method != "head" else assert_status
        refused(web.call(method, path, role=None), 401)
        bad = web.call(method, path, role=None, headers={"Authorization": "Bearer mq_wrong"})
        refused(bad, 401)
        need = NEEDS.get((method, template), "viewer")
        for role in ROLES:
            response = web.call(method, path, role=role, json={},
                                stream=path == "/api/media/dashboard/events")
            if ROLES.index(role) < ROLES.index(need):
                refused(response, 403)
            else:
                assert response.status_code not in (401, 403), (method, path, role)
    # A revoked token stops working at once.
    listed = mq.cli("tokens", "list", "--json").stdout
    viewer_id = next(t["id"] for t in json.loads(listed) if t["role"] == "viewer")
    assert not any(token in listed for token in web.tokens.values())  # never shown again
    mq.cli("tokens", "revoke", str(viewer_id))
    assert_one_line_error(web.get("/api/media/jobs", role="viewer"), 401)
    assert_no_secrets(web, mq)


def test_jobs_through_the_api(mq: MediaqEnv) -> None:
    sleepy(mq)
    mq.apply_workflow(diagnostic_workflow("WF-QUICK", {"action": "noop"},
                                          notify={"job.failed": [SLACK_HOOK]}))
    web = start_web(mq)
    photo = mq.input_file("photo.jpg")

    created = web.post("/api/media/jobs", role="submitter", json={
        "type": "WF-SLEEPY", "inputPath": str(photo), "priority": 8,
        "params": {"1": {"seconds": 25}}, "notify": ["https://hooks.example.com/x?sig=abc"],
        "idempotencyKey": "upload-1"})
    assert created.status_code == 201, created.text
    code = created.json()["id"]
    assert created.json()["status"] == "pending"
    again = web.post("/api/media/jobs", role="submitter", json={
        "type": "WF-SLEEPY", "inputPath": str(photo), "idempotencyKey": "upload-1"})
    assert again.json()["id"] == code
    job = mq.job(code)
    assert job["priority"] == 8 and job["params"] == {"1": {"seconds": 25}}

    listed = web.get("/api/media/jobs", role="viewer", params={"type": "WF-SLEEPY"}).json()
    assert [j["id"] for j in listed["data"]] == [code]
    assert listed["pagination"] == {"page": 1, "limit": 20, "total": 1, "totalPages": 1}
    assert listed["data"][0]["resourceCategory"] == "cpu"
    assert web.get("/api/media/jobs", params={"status": "completed"}).json()["data"] == []
    assert web.get("/api/media/jobs", params={"resourceCategory": "gpu_ai"}).json()[
        "pagination"]["total"] == 0
    detail = web.get(f"/api/media/jobs/{code}", role="viewer").json()
    assert detail["id"] == code and detail["type"] == "WF-SLEEPY"
    assert [s["action"] for s in detail["steps"]] == ["sleep"] and "log" in detail
    by_id = web.get(f"/api/media/jobs/{detail['numericId']}").json()
    assert by_id["id"] == code

    assert web.post(f"/api/media/jobs/{code}/pause", role="operator").json()["status"] == \
        "paused"
    assert_one_line_error(web.post(f"/api/media/jobs/{code}/pause", role="operator"), 409)
    assert web.post(f"/api/media/jobs/{code}/resume", role="operator").json()["status"] == \
        "pending"
    cancelled = web.post(f"/api/media/jobs/{code}/cancel", role="operator").json()
    assert cancelled["status"] == "cancelled" and "CANCELLED" in cancelled["log"]
    assert mq.job(code)["status"] == "cancelled"
    retried = web.post(f"/api/media/jobs/{code}/retry", role="operator").json()
    assert retried["status"] == "pending" and retried["retryCount"] == 1

    quick = web.post("/api/media/jobs", json={"type": "WF-QUICK",
                                              "inputPath": str(photo)}).json()["id"]
    web.post(f"/api/media/jobs/{code}/cancel", role="operator")
    mq.run_burst()
    assert web.get(f"/api/media/jobs/{quick}").json()["status"] == "completed"
    stats = web.get("/api/media/jobs/stats", role="viewer").json()
    assert stats["completed"] == 1 and stats["cancelled"] == 1
    assert stats["jobsByType"] == {"WF-SLEEPY": 1, "WF-QUICK": 1}
    assert {"totalVramUsed", "totalVramAvailable", "averageProcessingTime"} <= set(stats)

    # 404s and one-line 4xx errors for bad input
    assert_one_line_error(web.get("/api/media/jobs/JOB-1999-000001"), 404)
    assert_one_line_error(web.post("/api/media/jobs/JOB-1999-000001/cancel"), 404)
    assert_one_line_error(web.get("/api/media/jobs", params={"page": 0}), 422)
    assert_one_line_error(web.get("/api/media/jobs", params={"status": "bogus"}), 422)
    for body in ({}, {"type": "WF-QUICK"}, {"type": "WF-QUICK", "inputPath": 5},
                 {"type": "WF-QUICK", "inputPath": str(photo), "priority": 11},
                 {"type": "WF-QUICK", "inputPath": str(photo), "params": []},
                 [1, 2]):
        assert_one_line_error(web.post("/api/media/jobs", json=body), (400, 422))
    for path in ("/etc/passwd", "relative.jpg", str(mq.inputs / "missing.jpg"),
                 "http://example.com/a.jpg", str(mq.inputs / "a\x00b")):
        refused = assert_one_line_error(
            web.post("/api/media/jobs", json={"type": "WF-QUICK", "inputPath": path}), 400)
        assert refused
    assert_one_line_error(web.post("/api/media/jobs", json={
        "type": "WF-NOPE", "inputPath": str(photo)}), 400)
    nan_body = json.dumps({"type": "WF-QUICK", "inputPath": str(photo),
                           "params": {"1": {"x": "NAN"}}}).replace('"NAN"', "NaN")
    for raw in ("{not json", nan_body):
        assert_one_line_error(web.post("/api/media/jobs", data=raw, headers={
            "Content-Type": "application/json"}), (400, 422))

    # workflows: list, show, apply a new version from YAML (admin only)
    names = [w["workflow_code"] for w in web.get("/api/media/workflows").json()["data"]]
    assert names == ["WF-QUICK", "WF-SLEEPY"]
    shown = web.get("/api/media/workflows/WF-QUICK", role="viewer").json()
    assert shown["workflow"]["version"] == 1
    source = shown["source"].replace("workflow_name: WF-QUICK", "workflow_name: Quicker")
    applied = web.post("/api/media/workflows", json={"source": source}).json()
    assert applied == {"workflowCode": "WF-QUICK", "version": 2, "changed": True}
    # the Slack hook was shown masked, and the masked text put the original back
    assert "hooks.slack.com/***" in shown["source"]
    assert mq.one("SELECT notify FROM workflow_definitions WHERE workflow_code = 'WF-QUICK' "
                  "AND is_current")["notify"] == {"job.failed": [SLACK_HOOK]}
    assert_one_line_error(web.post("/api/media/workflows", json={"source": "steps: ["}), 400)
    assert_one_line_error(web.post("/api/media/workflows",
                                   json={"source": "workflow_code: X\nsteps: []"}), 400)
    assert assert_one_line_error(web.post("/api/media/workflows", json={
        "source": "workflow_code: X\nsteps: [{action: sleep, parameters: {seconds: x}}]"}),
        400) == ("workflow X, step 1 'Step 1': parameters refused: action 'sleep': seconds: "
                 "'x' is not of type 'number'")
    assert_one_line_error(web.get("/api/media/workflows/WF-NOPE"), 400)

    # notifications: the webhook URL's query is masked
    notes = web.get("/api/media/notifications", role="viewer").json()["data"]
    assert notes and all("sig=abc" not in json.dumps(n) for n in notes)
    assert_one_line_error(web.post("/api/media/notifications/999999/retry"), 400)
    # analytics: an unknown report is a 404; the dashboard's four reports answer
    assert_one_line_error(web.get("/api/media/analytics/no-such-report"), 404)
    if importlib.util.find_spec("mediaq.analytics") is not None:
        for report in ("cycle-time", "sla", "rework", "in-flight"):
            answer = web.get(f"/api/media/analytics/{report}", role="viewer",
                             params={"since": "7d"}).json()
            assert answer["name"] == report and isinstance(answer["data"], list)
        assert_one_line_error(web.get("/api/media/analytics/sla",
                                      params={"since": "yesterday-ish"}), 400)
    queues = web.get("/api/media/queues").json()
    assert set(queues) == {"queues", "hosts"}
    assert_no_secrets(web, mq)


def test_priority_of_a_waiting_job_through_the_api(mq: MediaqEnv) -> None:
    sleepy(mq)
    web = start_web(mq)
    codes = [web.post("/api/media/jobs", json={"type": "WF-SLEEPY", "priority": 5,
                                               "inputPath": str(mq.input_file(f"{i}.jpg"))}
                      ).json()["id"] for i in range(2)]
    path = f"/api/media/jobs/{codes[0]}"
    assert_one_line_error(web.call("PATCH", path, role="submitter", json={"priority": 9}), 403)
    changed = web.call("PATCH", path, role="operator", json={"priority": 9})
    assert changed.status_code == 200, changed.text
    assert changed.json()["id"] == codes[0] and changed.json()["priority"] == 9
    assert "--- PRIORITY SET TO 9 BY T-OPERATOR ---" in changed.json()["log"]
    # 1 is the most urgent when the client says so: stored as 10 (11 - priority)
    lowest = web.call("PATCH", f"/api/media/jobs/{mq.job(codes[1])['id']}",
                      json={"priority": 1, "priorityOrder": "lowest-first"})
    assert lowest.json()["priority"] == 10 and mq.job(codes[1])["priority"] == 10
    assert web.call("PATCH", path, json={"priority": 10, "priorityOrder": "lowest-first"}
                    ).json()["priority"] == 1
    assert mq.one("SELECT q.priority FROM media_queue q JOIN workflow_jobs j ON j.id = q.job_id"
                  " WHERE j.job_code = %s", (codes[0],))["priority"] == 1
    assert assert_one_line_error(web.call("PATCH", path, json={"priority": 11}), 400) == \
        "priority must be a whole number from 1 to 10 (10 is the most urgent), not 11"
    assert assert_one_line_error(web.call("PATCH", path, json={
        "priority": 0, "priorityOrder": "lowest-first"}), 400) == \
        "priority must be a whole number from 1 to 10 (1 is the most urgent), not 0"
    for body in ({}, {"priority": "7"}, {"priority": True}, {"priority": 7.5},
                 {"priority": 7, "priorityOrder": "up"}, {"priority": 7, "status": "queued"}):
        assert_one_line_error(web.call("PATCH", path, json=body), 422)
    assert_one_line_error(web.call("PATCH", "/api/media/jobs/JOB-NOPE",
                                   json={"priority": 3}), 404)
    # a running job keeps its priority: 409 with the reason
    mq.start_worker("--limits", "cpu=1")
    wait_for(lambda: mq.job(codes[1])["status"] == "processing")
    running = web.call("PATCH", f"/api/media/jobs/{codes[1]}", json={"priority": 2})
    assert assert_one_line_error(running, 409) == (
        f"{codes[1]}: priority can change only while the job waits; it is processing")
    assert mq.job(codes[1])["priority"] == 10
    schema = web.get("/openapi.json").json()
    described = json.dumps(schema["paths"]["/api/media/jobs/{job_id}"]["patch"]) + json.dumps(
        schema["components"]["schemas"]["JobChange"])
    assert "lowest-first" in described and "11 - priority" in described


def test_metrics_exposition(mq: MediaqEnv) -> None:
    mq.apply_workflow(diagnostic_workflow("WF-QUICK", {"action": "noop"}, {"action": "noop"}))
    code = mq.submit("WF-QUICK", mq.input_file("a.jpg"))
    mq.run_burst()
    mq.submit("WF-QUICK", mq.input_file("b.jpg"))
    web = start_web(mq)
    assert_one_line_error(web.get("/metrics", role=None), 401)
    text = web.get("/metrics", role="viewer").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # the parser drops a counter's _total suffix from the family name
    names = set(families) | {f"{n}_total" for n, f in families.items() if f.type == "counter"}
    assert names >= METRIC_NAMES, METRIC_NAMES - names
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("media_jobs_total", (("status", "completed"), ("type", "WF-QUICK")))] == 1
    assert samples[("media_jobs_total", (("status", "pending"), ("type", "WF-QUICK")))] == 1
    assert samples[("media_jobs_pending", ())] == 1
    assert samples[("media_queue_depth", (("resource_category", "cpu"),))] == 1
    assert samples[("media_queue_eligible", (("resource_category", "cpu"),))] == 1
    assert samples[("media_queue_eligible", (("resource_category", "gpu_encode"),))] == 0
    assert samples[("media_jobs_running", (("resource_category", "gpu_ai"),))] == 0
    assert samples[("media_step_duration_seconds_count",
                    (("action", "noop"), ("workflow", "WF-QUICK")))] == 2
    assert samples[("media_workers", (("status", "stopped"),))] >= 1
    assert samples[("mediaq_jobs_finished_15m", (("outcome", "completed"),))] == 1
    assert samples[("mediaq_jobs_finished_15m", (("outcome", "failed"),))] == 0
    assert ("media_vram_total_bytes", (("host", mq.one(
        "SELECT host FROM worker_hosts LIMIT 1")["host"]),)) in samples
    assert mq.job(code)["status"] == "completed"
    # Everything above ran with prometheus_client's parser; promtool also lints.
    skip_without_tool("promtool")
    promtool = shutil.which("promtool")
    assert promtool is not None
    checked = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # lint clean too


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_show_disk_memory_and_load(mq: MediaqEnv) -> None:
    """A real worker process reports disk free on its roots, its RSS and the load with
    its heartbeat; /metrics shows them under the worker's host, next to the web host's
    own view of its roots, and drops the worker's figures once it stops."""
    worker = mq.start_worker(host_id="worker-box")
    row = wait_for(lambda: mq.query(
        "SELECT worker_id, limits -> '_resources' AS r FROM workers "
        "WHERE host = 'worker-box' AND limits ? '_resources'"), message="a resources report")
    worker_id, report = row[0]["worker_id"], row[0]["r"]
    assert {d["root"] for d in report["disks"]} == {"input", "output"}
    assert report["rss_bytes"] > 0
    web = start_web(mq)
    text = web.get("/metrics", role="viewer").text
    samples = metric_samples(text)
    rss = samples[("mediaq_worker_rss_bytes", (("host", "worker-box"), ("worker", worker_id)))]
    assert 10 * 2**20 < rss < 16 * 2**30  # a Python process: megabytes, not terabytes
    assert samples[("mediaq_host_load1", (("host", "worker-box"),))] >= 0
    web_host = socket.gethostname()
    for host in ("worker-box", web_host):
        for root, path in (("input", mq.inputs), ("output", mq.outputs)):
            labels = (("host", host), ("path", str(path)), ("root", root))
            free = samples[("mediaq_disk_free_bytes", labels)]
            total = samples[("mediaq_disk_total_bytes", labels)]
            assert 0 < free <= total, (host, root, free, total)
            assert total == shutil.disk_usage(path).total
    assert ("mediaq_host_load1", (("host", web_host),)) in samples
    skip_without_tool("promtool")
    promtool = shutil.which("promtool")
    assert promtool is not None
    checked = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # a stopped worker's figures are gone; the web host's own remain
    worker.terminate()  # SIGTERM: a clean stop marks the worker stopped
    assert worker.wait(timeout=30) == 0
    after = metric_samples(web.get("/metrics", role="viewer").text)
    assert not any(k[0] == "mediaq_worker_rss_bytes" for k in after)
    assert not any(("host", "worker-box") in k[1] for k in after if k[0].startswith("mediaq_"))
    assert ("mediaq_disk_free_bytes", (("host", web_host), ("path", str(mq.outputs)),
                                       ("root", "output"))) in after


def test_schemathesis_finds_no_server_errors(mq: MediaqEnv, tmp_path: Path) -> None:
    sleepy(mq)
    mq.submit("WF-SLEEPY", mq.input_file("x.jpg"))
    web = start_web(mq)
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(web.get("/openapi.json").text)
    report = tmp_path / "junit.xml"
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [str(st), "run", str(schema_file), "--url", web.base,
         "-H", f"Authorization: Bearer {web.tokens['admin']}",
         "--checks", "not_a_server_error", "--max-examples", "8",
         "--phases", "examples,coverage,fuzzing", "--report", "junit",
         "--report-junit-path", str(report), "--seed", "1", "--no-color",
         # a loaded CI machine (the suite runs beside media encodes) may take seconds to
         # answer; a slow answer is not a server error, a hang past this still fails
         "--request-timeout", "60",
         # the dashboard's event stream answers for minutes by design (its own test:
         # tests/test_dashboard_live.py)
         "--exclude-path", "/api/media/dashboard/events"],
        capture_output=True, text=True, timeout=300, env={**mq.env, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]
    log = result.stdout
    for secret in (*SECRETS.values(), *web.tokens.values()):
        if secret != web.tokens["admin"]:
            assert secret not in log
    assert_no_secrets(web, mq)
