"""A job's media players in headless Debian Chromium (issue 23): a DASH package plays and
seeks (dash.js), a transcription's transcript is shown on the job page, and an HLS
package whose outputs live in object storage (``s3://``, a real moto server) plays
through the playlists the API rewrites with a presigned URL per segment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import MediaqEnv, requires_tool, wait_for
from tests.s3_server import moto_server
from tests.test_dashboard import Browser
from tests.test_dashboard_views import login, make_source, show
from tests.test_object_storage import store_for
from tests.test_web_api import start_web

pytestmark = pytest.mark.slow

SENTENCE = "we will meet at the office on monday. please call me tomorrow morning at nine o'clock."
SMALL = {"width": 160, "height": 120, "name": "small"}

PLAYERS_WORKFLOW = {
    "workflow_code": "WF-DASH-PLAYERS", "workflow_name": "DASH and transcript",
    "workflow_type": "video", "retry_count": 0,
    "steps": [
        {"step_number": 1, "step_name": "DASH", "action": "package_dash",
         "parameters": {"renditions": [SMALL], "segment_seconds": 1, "preset": "ultrafast"}},
        {"step_number": 2, "step_name": "Transcript", "action": "transcribe_audio",
         "needs": [], "parameters": {"engine": "pocketsphinx", "language": "en"}},
    ],
}


HLS_WORKFLOW = {
    "workflow_code": "WF-S3-HLS", "workflow_name": "HLS into object storage",
    "workflow_type": "video", "retry_count": 0,
    "steps": [{"step_number": 1, "step_name": "HLS", "action": "package_hls",
               "parameters": {"renditions": [SMALL], "segment_seconds": 1,
                              "preset": "ultrafast"}},
              {"step_number": 2, "step_name": "DASH", "action": "package_dash",
               "parameters": {"renditions": [SMALL], "segment_seconds": 1,
                              "preset": "ultrafast"}}],
}


def speech_clip(path: Path) -> Path:
    """The sentence spoken by espeak-ng (a voice pocketsphinx recognises) over 160x120
    test video, about six seconds."""
    espeak = shutil.which("espeak-ng")
    assert espeak is not None
    wav = path.with_suffix(".wav")
    subprocess.run([espeak, "-v", "en-us+f2", "-s", "140", "-w", str(wav), SENTENCE],
                   check=True, timeout=60)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=s=160x120:r=25", "-i", str(wav), "-af", "apad=pad_dur=1",
                    "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                    "yuv420p", "-c:a", "aac", str(path)], check=True, timeout=120)
    return path


def plays_past(browser: Browser, selector: str, seek: float) -> None:
    """The player at ``selector`` seeks to ``seek`` and plays on past it."""
    browser.js(f"""(() => {{
        const v = document.querySelector('{selector}');
        v.muted = true; window.__v = v;
        const go = () => {{ v.currentTime = {seek}; v.play(); }};
        if (v.readyState >= 1) go(); else v.addEventListener('loadedmetadata', go, {{once: true}});
        return true; }})()""")
    wait_for(lambda: browser.js("window.__v.currentTime") > seek + 0.3, timeout=90,
             interval=0.2, message=f"{selector} to play past {seek} s " + str(browser.js(
                 "[window.__v.dataset.error, window.__v.readyState, window.__v.currentTime]")))


@requires_tool("chromium", "ffmpeg", "espeak-ng")
def test_dash_player_and_transcript(mq: MediaqEnv, tmp_path: Path) -> None:
    mq.apply_workflow(PLAYERS_WORKFLOW)
    code = mq.submit("WF-DASH-PLAYERS", speech_clip(mq.inputs / "speech.mp4"))
    mq.run_burst(timeout=300)
    assert mq.job(code)["status"] == "completed", mq.job(code)
    web = start_web(mq)
    browser = Browser(tmp_path / "chromium")
    try:
        browser.send("Page.enable")
        browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)
        login(browser, web, "viewer")
        show(browser, "jobs/" + code,
             "!!document.querySelector('#detail-media video[data-kind=dash]') && "
             "!!document.querySelector('#detail-media ol.transcript li')")
        plays_past(browser, "#detail-media video[data-kind=dash]", 2.0)
        words = browser.js("document.querySelector('#detail-media ol.transcript').textContent")
        assert "office" in words and "monday" in words, words
        # a cue's time button seeks the package's player
        browser.js("window.__v.pause(); document.querySelector("
                   "'#detail-media ol.transcript li:last-child button').click(); true")
        last = browser.js("document.querySelector('#detail-media ol.transcript "
                          "li:last-child button').textContent")
        minutes, seconds = last.split(":")
        cue = int(minutes) * 60 + float(seconds)
        wait_for(lambda: browser.js("window.__v.currentTime") >= cue - 0.1, timeout=60,
                 interval=0.2, message="the player to seek to the last cue")
    finally:
        browser.close()


@requires_tool("chromium", "ffmpeg")
def test_hls_and_dash_packages_in_object_storage_play(mq: MediaqEnv, tmp_path: Path) -> None:
    """Outputs under an s3:// output root: the master playlist's link is the API's, which
    serves the playlists rewritten (a presigned URL per segment, a signed API link per
    variant playlist); a DASH MPD gets a folder link as its BaseURL, which redirects each
    segment to its presigned URL; the bucket allows the dashboard's origin by CORS, as a production
    bucket must for players that fetch segments with XHR."""
    with moto_server() as endpoint:
        store = store_for(mq, endpoint)
        # With the tests' 3 s lease the worker's session has a 1.5 s idle-in-transaction
        # limit, which ended it mid-job on this loaded machine (reported to the lead).
        mq.env["MEDIAQ_LEASE_SECONDS"] = "30"
        mq.apply_workflow(HLS_WORKFLOW)
        code = mq.submit("WF-S3-HLS", make_source(mq.inputs / "clip.mp4"))
        mq.run_burst(timeout=300)
        job = mq.job(code)
        assert job["status"] == "completed", job
        paths = [o["path"] for o in job["output_metadata"]["outputs"]]
        assert all(p.startswith(f"s3://{store.outputs}/jobs/{code}/") for p in paths), paths
        web = start_web(mq)
        store.s3.put_bucket_cors(Bucket=store.outputs, CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": [web.base], "AllowedMethods": ["GET", "HEAD"],
             "AllowedHeaders": ["*"], "MaxAgeSeconds": 600}]})
        shown = web.get(f"/api/media/jobs/{code}", role="viewer").json()
        master = next(o for o in shown["outputs"] if o["name"].endswith(".m3u8")
                      and o.get("format") == "hls")
        assert master["url"].startswith(web.base + "/api/media/downloads/"), master
        # The rewritten master names only absolute links: API links for playlists.
        text = web.get(master["url"].removeprefix(web.base), role=None).text
        uris = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert uris and all(u.startswith(web.base + "/api/media/downloads/") for u in uris)
        variant = web.get(uris[0].removeprefix(web.base), role=None).text
        segments = [line for line in variant.splitlines() if line and not line.startswith("#")]
        assert segments and all(s.startswith(endpoint + "/") and "Signature=" in s
                                for s in segments), segments
        mpd = next(o for o in shown["outputs"] if o["name"].endswith(".mpd"))
        manifest = web.get(mpd["url"].removeprefix(web.base), role=None).text
        base_url = manifest.split("<BaseURL>")[1].split("</BaseURL>")[0]
        assert base_url.startswith(web.base + "/api/media/downloads/"), base_url
        init = next(p for p in paths if p.endswith("_init.mp4"))
        moved = web.get(base_url.removeprefix(web.base) + init.rsplit(f"/{code}/", 1)[1],
                        role=None, allow_redirects=False)
        assert moved.status_code == 307 and "Signature=" in moved.headers["location"]
        outside = base_url.removeprefix(web.base).replace(f"/{code}/", "/JOB-OTHER/")
        assert web.get(outside + "x.m4s", role=None).status_code == 403
        browser = Browser(tmp_path / "chromium")
        try:
            browser.send("Page.enable")
            browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                         deviceScaleFactor=1, mobile=False)
            login(browser, web, "viewer")
            show(browser, "jobs/" + code,
                 "!!document.querySelector('#detail-media video[data-kind=hls]')")
            plays_past(browser, "#detail-media video[data-kind=hls]", 1.6)
            plays_past(browser, "#detail-media video[data-kind=dash]", 1.6)
        finally:
            browser.close()
