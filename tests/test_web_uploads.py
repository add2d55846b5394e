"""Uploads over HTTP against a real `mediaq web`: a 200 MB tus upload by the `tuspy`
client over a link cut twice (resumed from the server's offsets, memory flat), size
limits per role, sniffing, overlong PATCHes, expiry of abandoned uploads, termination.
(Multipart posts that become jobs: tests/test_web_transfer.py.)"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests
from tusclient import client as tus

from mediaq import db
from mediaq.web import maintenance
from tests.helpers import MediaqEnv, diagnostic_workflow
from tests.test_web_api import assert_one_line_error, start_web

pytestmark = pytest.mark.slow


# -- uploads ---------------------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that cuts each of the first connections carrying more
    than ``cut_after`` bytes upstream once they have (a link that drops mid-upload)."""

    def __init__(self, target_port: int, cut_after: int, cuts: int) -> None:
        self.target_port, self.cut_after, self.cuts_left = target_port, cut_after, cuts
        self.cut_offsets: list[int] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        sent = 0
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                sent += len(data)
                if upstream and sent > self.cut_after and self._take_cut(sent):
                    break
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _take_cut(self, sent: int) -> bool:
        with self.lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cut_offsets.append(sent)
            return True

    def close(self) -> None:
        self.listener.close()


def big_wav(path: Path, size: int) -> str:
    """A WAV header then ``size`` bytes of noise; its sha256."""
    header = (b"RIFF" + (size + 36).to_bytes(4, "little") + b"WAVEfmt " +
              (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (2).to_bytes(2, "little")
              + (48000).to_bytes(4, "little") + (192000).to_bytes(4, "little")
              + (4).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + size.to_bytes(4, "little"))
    digest = hashlib.sha256(header)
    with path.open("wb") as out:
        out.write(header)
        left = size
        while left:
            block = os.urandom(min(left, 8 << 20))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., CuttingProxy]]:
    made: list[CuttingProxy] = []

    def make(port: int, cut_after: int, cuts: int) -> CuttingProxy:
        made.append(CuttingProxy(port, cut_after, cuts))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def test_tus_upload_of_200_mb_resumes_after_two_cuts(
        mq: MediaqEnv, proxy_factory: Callable[..., CuttingProxy]) -> None:
    mq.apply_workflow(diagnostic_workflow("WF-QUICK", {"action": "noop"}))
    web = start_web(mq)
    source = mq.root / "session.wav"
    expected = big_wav(source, 200 * 1000 * 1000)
    proxy = proxy_factory(urlsplit(web.base).port, 60 * 1000 * 1000, 2)
    endpoint = f"http://127.0.0.1:{proxy.port}/api/media/uploads"
    client = tus.TusClient(endpoint, headers={"Authorization": f"Bearer {web.tokens['submitter']}"})
    uploader = client.uploader(str(source), chunk_size=100 * 1000 * 1000, retries=5,
                               retry_delay=0, metadata={
                                   "filename": "session.wav", "workflow": "WF-QUICK",
                                   "priority": "9", "params": json.dumps({"1": {}})})
    resumed_at: list[int] = []
    asked = uploader.get_offset

    def get_offset() -> int:  # tuspy asks the server (HEAD) after each cut
        resumed_at.append(asked())
        return resumed_at[-1]

    uploader.get_offset = get_offset  # type: ignore[method-assign]
    web_process = psutil.Process(mq.workers[-1].pid)
    rss = [web_process.memory_info().rss]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            rss.append(web_process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        uploader.upload()
    finally:
        sampling.set()
        sampler.join()
    seconds = time.monotonic() - started
    assert len(proxy.cut_offsets) == 2  # the link was cut twice, and the upload went on
    # from what the server had kept, not from the start
    assert len(resumed_at) == 2 and 50_000_000 < resumed_at[0] < resumed_at[1], resumed_at
    # streamed: the web process grew by far less than the 200 MB that went through it
    grown = max(rss) - rss[0]
    assert grown < 64 * 2**20, grown
    upload_id = uploader.url.rsplit("/", 1)[1]
    shown = web.get(f"/api/media/uploads/{upload_id}", role="submitter").json()
    assert shown["status"] == "complete" and shown["offset"] == source.stat().st_size
    assert shown["contentType"] == "audio/wav"
    landed = Path(shown["path"])
    assert landed.is_relative_to(mq.inputs) and sha256_file(landed) == expected
    assert not list((mq.inputs / ".uploads").iterdir())  # no part file left behind
    code = shown["jobId"]
    job = mq.job(code)
    assert job["priority"] == 9 and job["input_file_path"] == str(landed)
    assert job["input_metadata"]["upload"]["id"] == upload_id
    mq.run_burst()
    assert mq.job(code)["status"] == "completed"
    # another token cannot see or touch the upload
    assert web.get(f"/api/media/uploads/{upload_id}", role="operator").status_code == 404
    print(f"\n200 MB tus upload, cut twice, resumed at {resumed_at}, took {seconds:.1f} s; "
          f"web RSS grew {grown / 2**20:.1f} MiB")


def test_upload_limits_sniffing_and_expiry(mq: MediaqEnv) -> None:
    mq.env["MEDIAQ_UPLOAD_MAX_SIZE"] = "submitter=1MB,admin=0"
    web = start_web(mq)
    auth = {"Authorization": f"Bearer {web.tokens['submitter']}", "Tus-Resumable": "1.0.0"}
    discovery = requests.options(f"{web.base}/api/media/uploads", timeout=30)
    assert discovery.headers["tus-version"] == "1.0.0"
    assert "creation" in discovery.headers["tus-extension"]
    # past the role's size: 413 for tus and multipart (the body is not read to its end)
    too_big = requests.post(f"{web.base}/api/media/uploads", timeout=30, headers={
        **auth, "Upload-Length": str(2_000_000)})
    assert_one_line_error(too_big, 413)
    assert too_big.headers["tus-resumable"] == "1.0.0"
    big = requests.post(f"{web.base}/api/media/uploads", timeout=60, headers={
        "Authorization": auth["Authorization"]}, files={"file": ("a.jpg", b"\xff" * 2_000_000)})
    assert_one_line_error(big, 413)
    # the admin role has no limit
    made = requests.post(f"{web.base}/api/media/uploads", timeout=30, headers={
        "Authorization": f"Bearer {web.tokens['admin']}", "Tus-Resumable": "1.0.0",
        "Upload-Length": str(2_000_000)})
    assert made.status_code == 201
    # an unknown workflow, bad metadata: 400 before any byte
    for metadata in ("workflow V0YtTk9QRQ==", "filename !!!", "priority MTE="):
        assert_one_line_error(requests.post(f"{web.base}/api/media/uploads", timeout=30,
                                            headers={**auth, "Upload-Length": "10",
                                                     "Upload-Metadata": metadata}), 400)
    # bytes that are no media: 415, and nothing lands
    noise = requests.post(f"{web.base}/api/media/uploads", timeout=30, headers={
        "Authorization": auth["Authorization"]},
        files={"file": ("fake.jpg", b"\x00\x01\x02\x03" * 1000)})
    assert_one_line_error(noise, 415)
    assert not (mq.inputs / "uploads").exists()
    # a wrong offset is a conflict; an abandoned upload expires with its bytes
    created = requests.post(f"{web.base}/api/media/uploads", timeout=30, headers={
        **auth, "Upload-Length": "1000", "Upload-Metadata": "filename YS5wbmc="})
    url = created.headers["location"]
    patch = {**auth, "Content-Type": "application/offset+octet-stream"}
    first = requests.patch(url, data=b"\x89PNG\r\n\x1a\n" + b"x" * 92, timeout=30,
                           headers={**patch, "Upload-Offset": "0"})
    assert first.status_code == 204 and first.headers["upload-offset"] == "100"
    assert_one_line_error(requests.patch(url, data=b"x", timeout=30,
                                         headers={**patch, "Upload-Offset": "0"}), 409)
    # more bytes than the upload's length: refused whole, with or without Content-Length
    assert_one_line_error(requests.patch(url, data=b"y" * 1000, timeout=30,
                                         headers={**patch, "Upload-Offset": "100"}), 413)
    chunked = requests.patch(url, data=iter([b"y" * 600, b"y" * 400]), timeout=30,
                             headers={**patch, "Upload-Offset": "100"})
    assert_one_line_error(chunked, 413)
    head = requests.head(url, headers=auth, timeout=30).headers
    assert head["upload-offset"] == "100" and head["upload-length"] == "1000"
    assert head["upload-metadata"] == "filename YS5wbmc="  # tus: HEAD echoes the metadata
    upload_id = url.rsplit("/", 1)[1]
    part = Path(mq.one("SELECT part_path FROM uploads WHERE id = %s", (upload_id,))["part_path"])
    assert part.stat().st_size == 100
    mq.query("UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = %s",
             (upload_id,))
    pool = db.make_pool(mq.url, 1)
    try:
        assert maintenance.run_once(pool)["uploads"] == 1
    finally:
        pool.close()
    assert not part.exists()
    assert requests.head(url, headers=auth, timeout=30).status_code == 404
    # termination
    other = requests.post(f"{web.base}/api/media/uploads", timeout=30, headers={
        **auth, "Upload-Length": "10"}).headers["location"]
    assert requests.delete(other, headers=auth, timeout=30).status_code == 204
    assert requests.head(other, headers=auth, timeout=30).status_code == 404
