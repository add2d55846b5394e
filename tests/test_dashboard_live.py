"""Live updates in headless Debian Chromium (issue 23): the page holds one server-sent
event stream fed by the web process's LISTEN session, shows a change without polling,
shows "disconnected" when the server goes and recovers when it is back; the database
load of five open dashboards, streaming against polling, from one run; the Hosts view
on a machine without NVML."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.helpers import MediaqEnv, requires_tool, wait_for
from tests.test_dashboard import Browser
from tests.test_dashboard_views import login, show
from tests.test_web_api import Web, sleepy, start_web

pytestmark = pytest.mark.slow

BROWSERS = 5
WINDOW_S = 20.0
CHANGE_EVERY_S = 2.0
STATS_LAG_S = 11.0
XACTS = ("SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database"
         " WHERE datname = current_database()")


def submit(mq: MediaqEnv, path: Path) -> str:
    return str(mq.one("SELECT job_code FROM mediaq.submit_job('WF-SLEEPY', %s)",
                      (str(path),))["job_code"])


def open_dashboards(browser: Browser, web: Web, query: str) -> None:
    """``BROWSERS`` dashboards, each in a window of its own opened by a blank page of the
    server's origin (a window opened so gets a copy of its sessionStorage, so the token;
    the dashboard refuses to be framed), so one Chromium stands for five browsers. The
    windows of an earlier call are closed first."""
    browser.send("Page.navigate", url=f"{web.base}/healthz")
    wait_for(lambda: browser.js("document.readyState === 'complete' && "
                                "location.pathname === '/healthz'"),
             timeout=60, interval=0.2, message="a blank page on the server's origin")
    browser.js(f"sessionStorage.setItem('mediaq.token', '{web.tokens['viewer']}');"
               " window.__tabs = []; true")
    for i in range(BROWSERS):  # a popup per user gesture
        opened = browser.send("Runtime.evaluate", userGesture=True, returnByValue=True,
                              expression=f"""!!window.__tabs[window.__tabs.push(window.open(
            '/{query}#/jobs', 'dash{i}{query}', 'popup,width=1280,height=800')) - 1]""")
        assert opened["result"]["value"] is True, opened
    wait_for(lambda: browser.js("""window.__tabs.filter((t) => t.document && t.document.body
        && t.document.querySelectorAll('#jobs tbody tr[data-job]').length >= 3).length""")
             == BROWSERS, timeout=90, interval=0.3, message="five dashboards")
    # each is shown (a hidden page would close its stream and slow its timers)
    assert browser.js("window.__tabs.every((t) => t.document.visibilityState === 'visible')")


def shows_priority(browser: Browser, mq: MediaqEnv, job: str) -> None:
    """Every open dashboard shows the job's priority as the database has it now (the
    writer has stopped): streaming pages patched from the events, polling ones reloaded."""
    want = mq.one("SELECT priority FROM workflow_jobs WHERE job_code = %s", (job,))["priority"]
    wait_for(lambda: browser.js(f"""window.__tabs.map((t) => {{
        const cell = t.document.querySelector('#jobs tr[data-job="{job}"] td:nth-child(5)');
        return cell ? cell.textContent : null; }})""") == [str(want)] * BROWSERS,
             timeout=60, interval=0.3, message=f"priority {want} of {job} on every page")


def close_dashboards(browser: Browser) -> None:
    browser.js("window.__tabs.forEach((t) => t.close()); true")


def statements_per_second(mq: MediaqEnv, job: str | None) -> float:
    """The database's transactions per second while the dashboards stay open and one
    job's priority changes every ``CHANGE_EVERY_S`` (``job`` None: nothing changes); the
    writer's own transactions and these reads left out. An idle session reports its
    statistics to pg_stat_database up to 10 s late: the window starts after that.

    Each short connection of the writer and of these reads costs two transactions: its
    statement's and its start-up's (PostgreSQL reads the catalogs in one; measured: ten
    connect-and-SELECTs add 20). In the window: the writer's, the ``before`` read's
    statement and the ``after`` read's start-up."""
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        while job is not None and not stop.wait(CHANGE_EVERY_S):
            mq.query("UPDATE workflow_jobs SET priority = 11 - priority WHERE job_code = %s"
                     " RETURNING priority", (job,))
            writes += 1

    time.sleep(STATS_LAG_S)  # what opening the pages cost has reached the statistics
    before = mq.one(XACTS)["n"]
    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(WINDOW_S)  # a measuring window, not a wait for an outcome
    stop.set()
    thread.join()
    after = mq.one(XACTS)["n"]
    return float(after - before - 2 * writes - 2) / WINDOW_S


@requires_tool("chromium")
def test_dashboard_streams_and_load(mq: MediaqEnv, tmp_path: Path) -> None:
    sleepy(mq)
    source = mq.inputs / "in.bin"
    source.write_bytes(b"x" * 64)
    jobs = [submit(mq, source) for _ in range(3)]
    web = start_web(mq)
    server = mq.workers[-1]
    port = web.base.rsplit(":", 1)[1]
    browser = Browser(tmp_path / "chromium")
    try:
        browser.send("Page.enable")
        browser.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)
        login(browser, web, "viewer")
        wait_for(lambda: browser.js("document.querySelector('#live').textContent")
                 == "live · streaming", timeout=60, interval=0.2, message="the stream")
        # A new job reaches the page through the stream (its seq moves), not a poll.
        seq = browser.js("state.live.seq")
        added = submit(mq, source)
        wait_for(lambda: browser.js(f"!!document.querySelector('#jobs tr[data-job=\"{added}\"]')"),
                 timeout=60, interval=0.2, message="the new job's row")
        assert browser.js("state.live.seq") > seq
        assert browser.js("state.streaming && !POLLING") is True

        # Hosts on a machine without a GPU: plainly no NVML, and why.
        show(browser, "hosts", "document.querySelector('#nvml').dataset.available === '0'")
        text = browser.js("document.querySelector('#nvml').textContent")
        assert text.startswith("No live GPU figures on ") and "NVML" in text, text

        # The server goes away: the page says so; it comes back: the page streams again.
        show(browser, "jobs", "document.querySelectorAll('#jobs tr[data-job]').length >= 4")
        server.terminate()
        server.wait(30)
        wait_for(lambda: browser.js("document.querySelector('#live').textContent")
                 .startswith("disconnected"), timeout=60, interval=0.2,
                 message="the disconnected state")
        assert browser.js("document.querySelector('#live').classList.contains('down')")
        mq.start("web", "--port", port)
        wait_for(lambda: browser.js("document.querySelector('#live').textContent")
                 == "live · streaming", timeout=90, interval=0.3, message="the stream again")
        assert not browser.js("document.querySelector('#live').classList.contains('down')")

        # The database load of five open dashboards: streaming, then polling (?poll).
        open_dashboards(browser, web, "")
        calls = "window.__tabs.reduce((n, t) => n + Number(t.document.body.dataset.apiCalls), 0)"
        streaming = {"idle": statements_per_second(mq, None)}
        before = browser.js(calls)
        streaming["changing"] = statements_per_second(mq, jobs[0])
        # the pages patch their table from the events: no API call for a change
        print(f"API calls of the {BROWSERS} streaming pages while a job changed: "
              f"{browser.js(calls) - before}")
        assert browser.js("window.__tabs.every((t) => "
                          "t.document.querySelector('#live').textContent === 'live · streaming')")
        shows_priority(browser, mq, jobs[0])
        close_dashboards(browser)
        open_dashboards(browser, web, "?poll")
        polling = {"idle": statements_per_second(mq, None),
                   "changing": statements_per_second(mq, jobs[0])}
        assert browser.js("window.__tabs.every((t) => "
                          "t.document.querySelector('#live').textContent.startsWith('idle'))")
        shows_priority(browser, mq, jobs[0])
        close_dashboards(browser)
        for case, what in (("idle", "nothing changing"),
                           ("changing", f"a job changing every {CHANGE_EVERY_S:g} s")):
            print(f"database load of {BROWSERS} open dashboards, {what}: streaming "
                  f"{streaming[case]:.2f} transactions/s, polling {polling[case]:.2f}/s, "
                  f"ratio {streaming[case] / polling[case]:.2f}")
        assert streaming["idle"] < polling["idle"]
        assert streaming["changing"] < polling["changing"]
    finally:
        browser.close()


def test_a_worker_coming_or_going_wakes_the_dashboard_and_a_heartbeat_does_not(
        mq: MediaqEnv) -> None:
    """A waiting job's ETA appears when a worker for its category registers and goes when
    it stops: both wake the web process's LISTEN session at once (not its minute-long
    refresh); heartbeats, written every few seconds by every worker, stay silent."""
    with psycopg.connect(mq.url, autocommit=True) as listener, \
            psycopg.connect(mq.url, autocommit=True) as writer:
        listener.execute("LISTEN mediaq_dashboard")

        def woken() -> bool:
            return any(True for _ in listener.notifies(timeout=1.0, stop_after=1))

        writer.execute("INSERT INTO mediaq.workers (worker_id, host, categories, limits)"
                       " VALUES ('elsewhere:1', 'elsewhere', '{cpu}', '{\"cpu\": 1}')")
        assert woken()
        writer.execute("UPDATE mediaq.workers SET heartbeat_at = now(), status = 'running'"
                       " WHERE worker_id = 'elsewhere:1'")
        assert not woken()
        writer.execute("UPDATE mediaq.workers SET status = 'stopped'"
                       " WHERE worker_id = 'elsewhere:1'")
        assert woken()
