"""A real S3-protocol server for the tests (moto in server mode on 127.0.0.1), and a
forwarding proxy in front of it that can hold chosen requests (a stalled transfer, a
worker caught mid-upload) until the test lets them go."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import requests

from tests.helpers import free_port, wait_for

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
               "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_server(address: str = "127.0.0.1", **env: str) -> Iterator[str]:
    """``moto_server`` on a free port of ``address`` (127.0.0.1, or a bridge address that
    network-namespace hosts reach: tests/fleet); its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", address, "-p", str(port)],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://{address}:{port}"

    def answers() -> bool:
        assert proc.poll() is None, "moto_server exited"
        try:
            return requests.get(endpoint + "/moto-api/", timeout=2).status_code < 500
        except requests.ConnectionError:
            return False

    try:
        wait_for(answers, timeout=60, interval=0.1, message="moto_server to answer")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        config=botocore.config.Config(s3={"addressing_style": "path"}))


def bucket_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class HoldingProxy:
    """Forwards every request to ``upstream``; one that ``hold(method, path)`` picks waits
    until ``release`` is set (``held`` is set when the first such request arrives)."""

    upstream: str
    hold: Callable[[str, str], bool]
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    address: str = "127.0.0.1"  # where it listens (a bridge address for tests/fleet)

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://{self.address}:{self.server.server_address[1]}"

    def start(self) -> HoldingProxy:
        proxy = self
        host, _, port = self.upstream.removeprefix("http://").partition(":")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.hold(self.command, self.path):
                    proxy.held.set()
                    proxy.release.wait()
                    return  # the client gave up (or was killed): answer nothing
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding")}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                # A HEAD answer's Content-Length is the object's size: keep it.
                dropped = ("transfer-encoding", "connection") + (
                    () if self.command == "HEAD" else ("content-length",))
                for key, value in answer.getheaders():
                    if key.lower() not in dropped:
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer((self.address, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
