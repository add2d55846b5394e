"""The live dashboard in a real headless Chromium, driven over the Chrome DevTools
Protocol (a websocket; no Selenium or Playwright), against `mediaq web` and a worker."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from tests.helpers import MediaqEnv, diagnostic_workflow, requires_tool, wait_for
from tests.test_web_api import start_web

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    """A headless Chromium with one page, spoken to over CDP."""

    def __init__(self, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (profile / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--window-size=1400,1100", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        # Chromium writes the port it picked into the profile folder.
        port_file = profile / "DevToolsActivePort"
        port = wait_for(lambda: self._port(port_file), timeout=90, interval=0.2,
                        message="chromium's DevToolsActivePort")
        pages = wait_for(lambda: [t for t in requests.get(
            f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"],
            timeout=60, interval=0.2, message="a chromium page")
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=120,
                                              suppress_origin=True)
        self.ids = itertools.count(1)

    def _port(self, port_file: Path) -> int | None:
        assert self.proc.poll() is None, "chromium exited"
        if not port_file.exists():
            return None
        first = port_file.read_text().splitlines()[:1]
        return int(first[0]) if first and first[0].isdigit() else None

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                assert "error" not in message, message
                return dict(message.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.log.close()


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", path


def rows(browser: Browser) -> dict[str, dict[str, Any]]:
    """Each job row the page shows: status and progress-bar width."""
    return {r["job"]: r for r in browser.js("""
        [...document.querySelectorAll('#jobs tbody tr[data-job]')].map(r => ({
            job: r.dataset.job, status: r.dataset.status,
            badge: r.querySelector('.badge').textContent,
            progress: r.querySelector('.pct').textContent,
            width: parseFloat(r.querySelector('.bar').style.width) || 0}))""")}


def editor_shown(browser: Browser, expected: str) -> str | None:
    """"source" once the workflow editor holds ``expected``, "error" once it shows why it
    could not load it; None meanwhile."""
    if expected in browser.js("document.querySelector('#wf-source').value"):
        return "source"
    return "error" if browser.js("document.querySelector('#wf-result').textContent") else None


def page_state(browser: Browser) -> dict[str, Any]:
    """What the dashboard shows about its own state: errors, the live badge, API calls."""
    state: dict[str, Any] = browser.js("""({
        result: document.querySelector('#wf-result').textContent,
        action: document.querySelector('#action-error').textContent,
        live: document.querySelector('#live').textContent,
        calls: document.body.dataset.apiCalls,
        workflows: [...document.querySelectorAll('#wf-select option')].map(o => o.value),
        selected: document.querySelector('#wf-select').value})""")
    return state


@requires_tool("chromium")
def test_dashboard_live(mq: MediaqEnv, tmp_path: Path) -> None:
    mq.apply_workflow(diagnostic_workflow("WF-QUICK", {"action": "noop"}))
    mq.apply_workflow(diagnostic_workflow(
        "WF-SLOW", *[{"action": "sleep", "parameters": {"seconds": 6}}] * 3))
    done = mq.submit("WF-QUICK", mq.input_file("done.jpg"))
    mq.run_burst()
    watched = mq.submit("WF-SLOW", mq.input_file("watched.jpg"), "--priority", "9")
    doomed = mq.submit("WF-SLOW", mq.input_file("doomed.jpg"))
    again = mq.submit("WF-QUICK", mq.input_file("again.jpg"))  # WF-QUICK has a history
    web = start_web(mq)
    browser = Browser(tmp_path / "chromium")
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=web.base + "/")
        wait_for(lambda: browser.js("document.readyState === 'complete' && "
                                    "!document.querySelector('#login').hidden"),
                 timeout=60, interval=0.2, message="the token prompt")
        assert browser.js("document.querySelector('#app').hidden") is True
        assert_png(browser.screenshot(tmp_path / "login.png"))

        # A wrong token is refused and the prompt comes back with the reason.
        browser.js("""document.querySelector('#token-input').value = 'mq_wrong';
                      document.querySelector('#login-form').requestSubmit()""")
        wait_for(lambda: browser.js("document.querySelector('#login-error').textContent"),
                 timeout=60, interval=0.2, message="the refusal")
        browser.js(f"""document.querySelector('#token-input').value = '{web.tokens["operator"]}';
                       document.querySelector('#login-form').requestSubmit()""")
        wait_for(lambda: {done, watched, doomed, again} <= set(rows(browser)), timeout=60,
                 interval=0.2, message="the jobs table")
        assert browser.js("sessionStorage.getItem('mediaq.token')") == web.tokens["operator"]
        assert rows(browser)[done]["badge"] == "completed"
        # No worker is live: a waiting job is promised no finish, and the row says why.
        assert rows(browser)[again]["progress"].endswith(" · not starting: no live worker "
                                                         "serves cpu")
        # With a live worker (on another machine, here a row), a waiting job of a
        # workflow with a history shows when it should finish.
        mq.query("INSERT INTO workers (worker_id, host, categories, limits) "
                 "VALUES ('elsewhere:1', 'elsewhere', '{cpu}', '{\"cpu\": 1}')")
        wait_for(lambda: "ETA" in rows(browser)[again]["progress"], timeout=60,
                 interval=0.2, message="the ETA of a waiting job")
        assert "ETA" not in rows(browser)[watched]["progress"]  # no history yet
        mq.query("UPDATE workers SET status = 'stopped' WHERE worker_id = 'elsewhere:1'")

        # A waiting job's priority has - and + buttons (a finished one has none); + asks
        # the API for one more, and the row shows it.
        assert browser.js(f"""document.querySelectorAll(
            'tr[data-job="{done}"] button[data-priority]').length""") == 0
        assert browser.js(f"""document.querySelector(
            'tr[data-job="{doomed}"] .prio-value').textContent""") == "5"
        browser.js(f"""document.querySelector(
            'tr[data-job="{doomed}"] button[data-priority="up"]').click()""")
        wait_for(lambda: mq.job(doomed)["priority"] == 6, timeout=60, interval=0.2,
                 message="the priority to change")
        wait_for(lambda: browser.js(f"""document.querySelector(
            'tr[data-job="{doomed}"] .prio-value').textContent""") == "6", timeout=60,
                 interval=0.2, message="the row to show the new priority")
        assert browser.js(f"""document.querySelector(
            'tr[data-job="{watched}"] button[data-priority="down"]').disabled""") is False
        assert_png(browser.screenshot(tmp_path / "priority.png"))

        mq.start_worker()
        # The watched job's bar moves while its worker runs it.
        first = wait_for(lambda: (r := rows(browser)[watched])["status"] == "processing"
                         and 0 < r["width"] < 100 and r["width"], timeout=90, interval=0.2,
                         message="the watched job's progress bar to start")
        wait_for(lambda: rows(browser)[watched]["width"] > first + 5, timeout=90,
                 interval=0.2, message="the watched job's progress bar to move")
        assert browser.js("document.querySelector('#live').textContent").startswith("live")
        browser.js(f"""[...document.querySelectorAll('#jobs a.job')]
                       .find(a => a.textContent === '{watched}').click()""")
        wait_for(lambda: browser.js("document.querySelectorAll('#detail-steps tbody tr')"
                                    ".length") == 3, timeout=60, interval=0.2,
                 message="the job detail with its steps")
        assert_png(browser.screenshot(tmp_path / "running.png"))

        # The cancel button cancels a job.
        wait_for(lambda: browser.js(f"""!!document.querySelector(
            'tr[data-job="{doomed}"] button[data-act="cancel"]')"""), timeout=60,
                 interval=0.2, message="the cancel button")
        browser.js(f"""document.querySelector(
            'tr[data-job="{doomed}"] button[data-act="cancel"]').click()""")
        wait_for(lambda: mq.job(doomed)["status"] == "cancelled", timeout=90, interval=0.2,
                 message="the job to be cancelled")
        wait_for(lambda: rows(browser)[doomed]["badge"] == "cancelled", timeout=60,
                 interval=0.2, message="the cancelled badge")

        # Filtering by status shows only that status.
        browser.js("""const s = document.querySelector('#f-status'); s.value = 'completed';
                      s.dispatchEvent(new Event('change'))""")
        wait_for(lambda: done in (shown := rows(browser)) and watched not in shown,
                 timeout=60, interval=0.2,
                 message="only the completed job")
        assert {r["status"] for r in rows(browser).values()} == {"completed"}
        assert_png(browser.screenshot(tmp_path / "filtered.png"))
        # Nothing secret reaches the page.
        page = browser.js("document.documentElement.outerHTML")
        assert web.tokens["operator"] not in page and "whsec_" not in page

        # The workflow editor: an operator is refused, an admin applies a new version.
        edit = """(async () => {
            const sel = document.querySelector('#wf-select'); sel.value = 'WF-QUICK';
            sel.dispatchEvent(new Event('change'));
            return true; })()"""
        # The YAML, or the one-line reason the editor shows when the API refused (what a
        # user would read); a page that shows neither says what it was doing.
        for _ in range(3):  # a choice that got no answer at all is made again, as a user would
            browser.js(edit)
            with contextlib.suppress(AssertionError):
                shown = wait_for(lambda: editor_shown(browser, "workflow_code: WF-QUICK"),
                                 timeout=30, interval=0.2)
                break
        else:
            raise AssertionError(f"the workflow's YAML never reached the editor: "
                                 f"{page_state(browser)}")
        assert shown == "source", page_state(browser)
        browser.js("""const t = document.querySelector('#wf-source');
                      t.value = t.value.replace('workflow_name: WF-QUICK', 'workflow_name: Q2');
                      document.querySelector('#wf-apply').click()""")
        wait_for(lambda: "admin" in browser.js("document.querySelector('#wf-result')"
                                               ".textContent"), timeout=60, interval=0.2,
                 message="the operator's refusal")
        browser.js("document.querySelector('#logout').click()")
        browser.js(f"""document.querySelector('#token-input').value = '{web.tokens["admin"]}';
                       document.querySelector('#login-form').requestSubmit();
                       document.querySelector('#wf-apply').click()""")
        wait_for(lambda: "version 2 applied" in browser.js(
            "document.querySelector('#wf-result').textContent"), timeout=60, interval=0.2,
                 message="the new version")
        assert mq.one("SELECT workflow_name FROM workflow_definitions "
                      "WHERE workflow_code = 'WF-QUICK' AND is_current")["workflow_name"] == "Q2"
        browser.js("document.querySelector('#wf-source').scrollIntoView()")
        assert_png(browser.screenshot(tmp_path / "editor.png"))
        requests.post(f"{web.base}/api/media/jobs/{watched}/cancel", timeout=60,
                      headers={"Authorization": f"Bearer {web.tokens['admin']}"})
    finally:
        browser.close()


@requires_tool("chromium", "convert")
def test_dashboard_links_each_output(mq: MediaqEnv, tmp_path: Path) -> None:
    """A finished job's detail lists its outputs as signed links that the page itself
    can fetch (same origin, no token: the link is the credential)."""
    mq.apply_workflow(diagnostic_workflow("WF-THUMB", {"action": "create_thumbnail",
                                                       "parameters": {"sizes": [32, 48]}}))
    source = mq.inputs / "pic.jpg"
    subprocess.run(["convert", "-size", "160x120", "gradient:red-blue", str(source)],
                   check=True, timeout=60)
    code = mq.submit("WF-THUMB", source)
    mq.run_burst()
    web = start_web(mq)
    browser = Browser(tmp_path / "chromium")
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=web.base + "/")
        wait_for(lambda: browser.js("document.readyState === 'complete' && "
                                    "!document.querySelector('#login').hidden"),
                 timeout=60, interval=0.2, message="the token prompt")
        browser.js(f"""document.querySelector('#token-input').value = '{web.tokens["viewer"]}';
                       document.querySelector('#login-form').requestSubmit()""")
        wait_for(lambda: browser.js(f"""!!document.querySelector('#jobs a.job') &&
                 [...document.querySelectorAll('#jobs a.job')].some(a => a.textContent
                 === '{code}')"""), timeout=60, interval=0.2, message="the job row")
        browser.js(f"""[...document.querySelectorAll('#jobs a.job')]
                       .find(a => a.textContent === '{code}').click()""")
        links = wait_for(lambda: browser.js(
            "[...document.querySelectorAll('#detail-outputs a')].map(a => ({name: "
            "a.textContent, href: a.href}))"), timeout=60, interval=0.2,
            message="the output links")
        assert sorted(link["name"] for link in links) == ["pic_thumb_32.jpg", "pic_thumb_48.jpg"]
        assert all(link["href"].startswith(web.base + "/api/media/downloads/") for link in links)
        sizes = browser.js("""Promise.all([...document.querySelectorAll('#detail-outputs a')]
            .map(a => fetch(a.href).then(r => r.ok ? r.blob() : null)
            .then(b => b && b.size)))""")
        expected = [(mq.outputs / code / link["name"]).stat().st_size for link in links]
        assert sizes == expected
        assert_png(browser.screenshot(tmp_path / "outputs.png"))
    finally:
        browser.close()
