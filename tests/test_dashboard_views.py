"""The dashboard's views in headless Debian Chromium (issue 23): every view laid out
without overlaps at 1280 and 390 px, charts drawn on arrival, a job's media (thumbnail,
MP4 and HLS players that seek, a waveform), axe-core with no serious or critical
violation, and what a viewer token cannot do."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.helpers import MediaqEnv, requires_tool, wait_for
from tests.test_dashboard import Browser, assert_png
from tests.test_web_api import Web, start_web

pytestmark = pytest.mark.slow

AXE = Path(__file__).parent / "data" / "axe" / "axe.min.js"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
VIEWS = ("jobs", "analytics", "hosts", "workflows", "dead-letters", "submit", "library")
WIDTHS = (1280, 390)
FAILED = "SELECT count(*) AS n FROM workflow_jobs WHERE status = 'failed'"

MEDIA_WORKFLOW = {
    "workflow_code": "WF-DASH-MEDIA", "workflow_name": "Dashboard media", "workflow_type": "video",
    "retry_count": 0,
    "steps": [
        {"step_number": 1, "step_name": "Transcode", "action": "transcode_video",
         "parameters": {"resolution": "source", "preset": "ultrafast", "audio_codec": "aac"}},
        {"step_number": 2, "step_name": "Thumbs", "action": "generate_thumbnails",
         "needs": ["Transcode"], "parameters": {"count": 2, "width": 96}},
        {"step_number": 3, "step_name": "HLS", "action": "package_hls", "needs": ["Transcode"],
         "parameters": {"renditions": [{"width": 160, "height": 120, "name": "small"}],
                        "segment_seconds": 1, "preset": "ultrafast"}},
        {"step_number": 4, "step_name": "Waveform", "action": "generate_waveform",
         "needs": ["Transcode"], "parameters": {"width": 200, "height": 40}},
        {"step_number": 5, "step_name": "Scenes", "action": "detect_scenes",
         "needs": ["Thumbs", "HLS", "Waveform"]},
    ],
}

FILL = (Path(__file__).parent / "data" / "dashboard_fill.sql").read_text(encoding="utf-8")

OVERLAPS = """(() => {
  const picked = [...document.querySelectorAll(
      'main td, main th, main .chart, main svg.dag, main .media-part, main .host, main h2')]
    .filter((e) => e.getClientRects().length && e.offsetParent !== null);
  const rects = picked.map((e) => e.getBoundingClientRect());
  const bad = [];
  for (let i = 0; i < picked.length; i++) for (let j = i + 1; j < picked.length; j++) {
    if (picked[i].contains(picked[j]) || picked[j].contains(picked[i])) continue;
    const a = rects[i], b = rects[j];
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 1 && h > 1) {
      bad.push([picked[i].outerHTML.slice(0, 80), picked[j].outerHTML.slice(0, 80)]);
    }
  }
  return {checked: picked.length, overlaps: bad.slice(0, 5), count: bad.length,
          pageWidth: document.documentElement.scrollWidth, viewport: innerWidth};
})()"""


def make_source(path: Path) -> Path:
    """Three seconds of 160x120 video in two shots (a cut at 1.5 s) with a tone."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=s=160x120:r=25:d=1.5",
         "-f", "lavfi", "-i", "color=c=red:s=160x120:r=25:d=1.5",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
         "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]", "-map", "2:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(path)], check=True, timeout=120)
    return path


def sign(mq: MediaqEnv, key_id: int, relative: str, expires: int) -> str:
    """A link's signature made with the key's own secret (as mediaq.download_links)."""
    key = mq.one("SELECT secret, job_id FROM download_keys WHERE id = %s", (key_id,))
    message = f"{key['job_id']}\n{relative}\n{expires}".encode()
    digest = hmac.new(bytes(key["secret"]), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def login(browser: Browser, web: Web, role: str, view: str = "jobs") -> None:
    browser.send("Page.navigate", url=f"{web.base}/#/{view}")
    wait_for(lambda: browser.js("document.readyState === 'complete' && "
                                "!!document.querySelector('#login-form')"),
             timeout=60, interval=0.2, message="the page")
    browser.js(f"""sessionStorage.setItem('mediaq.token', '{web.tokens[role]}');
                   location.reload()""")
    wait_for(lambda: browser.js("!!document.body && document.body.dataset.loaded === '1'"),
             timeout=60, interval=0.2, message="the dashboard")


def show(browser: Browser, view: str, ready: str) -> None:
    browser.js(f"location.hash = '#/{view}'")
    wait_for(lambda: browser.js(ready), timeout=90, interval=0.3, message=f"the {view} view")


READY = {
    "jobs": "document.querySelectorAll('#jobs tbody tr[data-job]').length >= 100",
    "analytics": "document.querySelectorAll('.chart[data-drawn]').length >= 4 && "
                 "!!document.querySelector('[data-report=sla] table')",
    "hosts": "document.querySelectorAll('#hosts tr[data-worker]').length >= 2",
    "workflows": "!!document.querySelector('#wf-list table')",
    "dead-letters": "document.querySelectorAll('#dead-letters tr[data-group]').length >= 1",
    "submit": "!!document.querySelector('#s-workflow option')",
    "library": "!!document.querySelector('#library table, #library p')",
}


def axe_violations(browser: Browser) -> list[dict[str, Any]]:
    if not browser.js("typeof axe !== 'undefined'"):
        browser.js(AXE.read_text(encoding="utf-8") + ";true")
    found = browser.js("""axe.run(document, {resultTypes: ['violations']}).then((r) =>
        r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
          .map((v) => ({id: v.id, impact: v.impact,
                        nodes: v.nodes.slice(0, 3).map((n) => n.html)})))""")
    return list(found)


@requires_tool("chromium", "ffmpeg")
def test_dashboard_views_media_and_layout(mq: MediaqEnv, tmp_path: Path) -> None:
    mq.apply_workflow(MEDIA_WORKFLOW)
    code = mq.submit("WF-DASH-MEDIA", make_source(mq.inputs / "clip.mp4"))
    mq.run_burst(timeout=300)
    assert mq.job(code)["status"] == "completed", mq.job(code)
    with mq.connect() as conn:
        conn.execute(FILL)
        # An open action breaker (issue 25), shown with the hosts for operators to close.
        conn.execute("INSERT INTO action_breakers (action, host, state, failures, opened_at,"
                     " reopen_at, last_error) VALUES ('transcode_video', 'encoder-01', 'open',"
                     " 5, now(), now() + interval '10 minutes', 'encoder busy')")
    web = start_web(mq)
    browser = Browser(tmp_path / "chromium")
    shots = Path(os.environ.get("MEDIAQ_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        browser.send("Page.enable")
        browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)
        login(browser, web, "operator")
        # Page weight of the landing page: what the browser fetched (players load later).
        weight = browser.js("""performance.getEntriesByType('resource')
            .concat(performance.getEntriesByType('navigation'))
            .reduce((s, e) => s + (e.encodedBodySize || 0), 0)""")
        print(f"landing page weight: {weight} bytes")
        assert weight < 300_000

        # The job's page: thumbnails load as images, the MP4 and HLS players seek and play,
        # the waveform is drawn, the graph shows five steps completed with their worker.
        show(browser, "jobs/" + code,
             "document.querySelectorAll('#detail-graph g.node').length === 5"
             " && !!document.querySelector('#detail-media video[data-kind=hls]')")
        assert browser.js("[...document.querySelectorAll('#detail-graph g.node')]"
                          ".every(g => g.dataset.state === 'completed')")
        assert "@" in browser.js("document.querySelector('#detail-graph .n-where').textContent")
        browser.js("document.querySelector('#detail-media img.thumb').scrollIntoView()")
        wait_for(lambda: browser.js("""(() => { const img = document.querySelector(
            '#detail-media img.thumb'); return img.complete && img.naturalWidth > 0; })()"""),
                 timeout=60, interval=0.2, message="the thumbnail to load")
        thumb = browser.js("""(async () => {
            const img = document.querySelector('#detail-media img.thumb');
            const r = await fetch(img.src);
            return {status: r.status, type: r.headers.get('content-type')}; })()""")
        assert thumb == {"status": 200, "type": "image/jpeg"}
        for kind in ("mp4", "hls"):
            browser.js(f"""(() => {{
                const v = document.querySelector('#detail-media video[data-kind={kind}]');
                v.muted = true; window.__v = v;
                const go = () => {{ v.currentTime = 1.6; v.play(); }};
                if (v.readyState >= 1) go();
                else v.addEventListener('loadedmetadata', go, {{once: true}});
                return true; }})()""")
            wait_for(lambda: browser.js("window.__v.currentTime") > 1.8, timeout=90,
                     interval=0.2, message=f"the {kind} player to play past its seek point "
                     + str(browser.js("[window.__v.dataset.error, window.__v.readyState, "
                                      "window.__v.currentTime, document.querySelector("
                                      "'#detail-media').textContent]")))
        wait_for(lambda: browser.js("""[...document.querySelectorAll('#waveform *')]
            .some((e) => e.shadowRoot && e.shadowRoot.querySelector('canvas'))"""),
                 timeout=60, interval=0.2, message="the waveform canvas")
        assert browser.js("document.querySelectorAll('#detail-media .scenes li').length") == 2
        browser.js("document.querySelector('#detail-media').scrollIntoView()")
        assert_png(browser.screenshot(shots / "job-media-1280.png"))
        assert axe_violations(browser) == []

        for width in WIDTHS:
            browser.send("Emulation.setDeviceMetricsOverride", width=width,
                         height=900 if width > 500 else 844, deviceScaleFactor=1,
                         mobile=width < 500)
            for view in VIEWS:
                if view == "jobs":
                    browser.js("document.querySelector('#detail-close').click()")
                show(browser, view, READY[view])
                browser.js("window.scrollTo(0, 0)")
                layout = browser.js(OVERLAPS)
                assert layout["count"] == 0, (view, width, layout)
                assert layout["checked"] > 0, (view, width, layout)
                assert layout["pageWidth"] <= layout["viewport"], (view, width, layout)
                assert_png(browser.screenshot(shots / f"{view}-{width}.png"))
                if width == 1280:
                    assert axe_violations(browser) == [], view
            show(browser, "jobs/" + code, "!document.querySelector('#detail').hidden && "
                 "document.querySelectorAll('#detail-graph g.node').length === 5")
            browser.js("document.querySelector('#detail').scrollIntoView()")
            layout = browser.js(OVERLAPS)
            assert layout["count"] == 0 and layout["pageWidth"] <= layout["viewport"], layout
            assert_png(browser.screenshot(shots / f"job-{width}.png"))

        # Dead letters: retry one group after the confirmation; the jobs go back.
        browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)
        show(browser, "dead-letters", READY["dead-letters"])
        failed = mq.one(FAILED)["n"]
        browser.js("""document.querySelector('.dl-pick').click();
                      document.querySelector('#dl-retry').click()""")
        wait_for(lambda: browser.js("document.querySelector('#confirm').open"), timeout=60,
                 interval=0.2, message="the confirmation")
        question = browser.js("document.querySelector('#confirm-text').textContent")
        assert " jobs in 1 groups?" in question
        browser.js("document.querySelector('#confirm-yes').click()")
        wait_for(lambda: "jobs changed" in browser.js(
            "document.querySelector('#dl-result').textContent"),
                 timeout=60, interval=0.2, message="the bulk retry")
        assert mq.one(FAILED)["n"] < failed

        # Hosts: the open breaker is listed; an operator closes it from the page.
        show(browser, "hosts", "!!document.querySelector('#breakers tr[data-breaker] button')")
        assert "encoder busy" in browser.js("document.querySelector('#breakers').textContent")
        browser.js("document.querySelector('#breakers tr[data-breaker] button').click()")
        wait_for(lambda: mq.one("SELECT state FROM action_breakers WHERE action ="
                                " 'transcode_video'")["state"] == "closed",
                 timeout=60, interval=0.2, message="the breaker to close")
        # ... and pauses a host's claims, then resumes them.
        host = browser.js("document.querySelector('#hosts article.host').dataset.host")
        browser.js("document.querySelector('#hosts article.host .host-switch').click()")
        wait_for(lambda: mq.one("SELECT paused_by FROM worker_hosts WHERE host = %s",
                                (host,))["paused_by"], timeout=60, interval=0.2,
                 message="the host to pause")
        wait_for(lambda: "Resume claims" in browser.js(
            "document.querySelector('#hosts article.host .host-switch').textContent"),
                 timeout=60, interval=0.2, message="the button to say Resume")
        browser.js("document.querySelector('#hosts article.host .host-switch').click()")
        wait_for(lambda: mq.one("SELECT paused_by FROM worker_hosts WHERE host = %s",
                                (host,))["paused_by"] is None, timeout=60, interval=0.2,
                 message="the host to resume")

        # Submit: a path under the input root makes a job the page links to.
        show(browser, "submit", READY["submit"])
        browser.js(f"""document.querySelector('#s-workflow').value = 'WF-DASH-MEDIA';
            document.querySelector('#s-path').value = '{mq.inputs / "clip.mp4"}';
            document.querySelector('#submit-form').requestSubmit()""")
        submitted = wait_for(lambda: browser.js(
            "document.querySelector('#submitted-job') && "
            "document.querySelector('#submitted-job').textContent"),
            timeout=60, interval=0.2, message="the new job")
        assert mq.job(submitted)["status"] == "pending"
        # ... and a file upload (multipart, streamed to an input root) makes another: the
        # page uploads the job's own MP4 rendition, fetched through its signed link.
        browser.js(f"""(async () => {{
            const job = await api('/api/media/jobs/{code}');
            const mp4 = job.outputs.find((o) => o.name === 'clip_source.mp4');
            const blob = await (await fetch(mp4.url)).blob();
            const files = new DataTransfer();
            files.items.add(new File([blob], 'upload.mp4', {{type: 'video/mp4'}}));
            document.querySelector('#s-file').files = files.files;
            document.querySelector('#s-path').value = '';
            document.querySelector('#submit-form').requestSubmit();
            return true; }})()""")
        uploaded = wait_for(lambda: (text := browser.js(
            "document.querySelector('#submitted-job') && "
            "document.querySelector('#submitted-job').textContent")) != submitted and text,
            timeout=60, interval=0.2, message="the uploaded file's job")
        row = mq.job(uploaded)
        assert row["input_file_path"].endswith("upload.mp4"), row["input_file_path"]
        assert Path(row["input_file_path"]).stat().st_size == (
            mq.outputs / code / "clip_source.mp4").stat().st_size

        # A viewer sees no retry, cancel or priority buttons and cannot submit.
        browser.js("document.querySelector('#logout').click()")
        login(browser, web, "viewer")
        show(browser, "jobs", READY["jobs"])
        assert browser.js("document.querySelectorAll("
                          "'button[data-act], button[data-priority]').length") == 0
        show(browser, "dead-letters", READY["dead-letters"])
        assert browser.js("document.querySelector('#dl-retry').hidden") is True
        show(browser, "submit", READY["submit"])
        wait_for(lambda: browser.js("document.querySelector('#submit-form button').disabled"),
                 timeout=60, interval=0.2, message="the submit button disabled for a viewer")
        _api_refusals(mq, web, code)
        # The live badge says so when the server goes away.
        mq.stop_workers()
        wait_for(lambda: browser.js("document.querySelector('#live').textContent")
                 .startswith("disconnected"), timeout=60, interval=0.2,
                 message="the disconnected badge")
        assert browser.js("document.querySelector('#live').classList.contains('down')")
    finally:
        browser.close()


def _api_refusals(mq: MediaqEnv, web: Web, code: str) -> None:
    """What the page hides, the API refuses: a viewer cannot retry, cancel or submit;
    a signed path outside the job's output folder is a 404."""
    viewer = {"Authorization": f"Bearer {web.tokens['viewer']}"}
    for path, body in ((f"/api/media/jobs/{code}/retry", None),
                       ("/api/media/jobs/retry", {"where": "class=permanent"}),
                       ("/api/media/jobs/cancel", {"where": "class=permanent"}),
                       ("/api/media/jobs", {"type": "WF-DASH-MEDIA",
                                            "inputPath": str(mq.inputs / "clip.mp4")})):
        answer = requests.post(web.base + path, json=body, headers=viewer, timeout=60)
        assert answer.status_code == 403, (path, answer.status_code)
    job = requests.get(f"{web.base}/api/media/jobs/{code}", headers=viewer, timeout=60).json()
    files = requests.get(f"{web.base}/api/media/jobs/{code}/files", headers=viewer,
                         timeout=60).json()
    assert any(f["path"].endswith(".m3u8") for f in files["files"])
    assert {f["path"] for f in files["files"]} >= {Path(o["path"]).name for o in job["outputs"]}
    url = job["outputs"][0]["url"]
    key_id = int(url.split("/api/media/downloads/")[1].split("/")[0])
    secret_file = mq.outputs / "secret.txt"
    secret_file.write_text("not an output")
    for relative in (f"{code}/../secret.txt", "secret.txt", f"{code}/../../etc/passwd"):
        expires = 2**33
        link = (f"{web.base}/api/media/downloads/{key_id}/{quote(relative, safe='')}"
                f"?expires={expires}&sig={sign(mq, key_id, relative, expires)}")
        answer = requests.get(link, timeout=60)
        assert answer.status_code == 404, (relative, answer.status_code)
        assert "not an output" not in answer.text
    series = requests.get(f"{web.base}/api/media/dashboard/series?range=day", headers=viewer,
                          timeout=60).json()
    assert sum(p["completed"] for p in series["throughput"]) >= 120
    assert json.dumps(series["vram"]).count("gpu-a") >= 24
