"""One HTTP POST to a vetted address: no redirects, no proxies, a time limit."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

from mediaq.errors import TargetRefused
from mediaq.notify.ssrf import AllowList, check_peer, resolve

_EXCERPT_BYTES = 2048


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    reason: str
    headers: Message
    excerpt: str  # the start of the response body, one line


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         allow: AllowList) -> HttpAnswer:
    """POST ``body`` to ``url``; the answer, whatever its status.

    Raises :class:`TargetRefused` (SSRF guard, bad URL) or OSError (network).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"not an http(s) URL: {parts.scheme or '?'}://…")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not sent; use the signing secret")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    connection = _connected(parts.scheme, host, port, resolve(host, port, allow), timeout,
                            allow)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        excerpt = response.read(_EXCERPT_BYTES).decode("utf-8", errors="replace")
        return HttpAnswer(response.status, response.reason, response.headers,
                          " ".join(excerpt.split())[:200])
    finally:
        connection.close()


def _connected(scheme: str, host: str, port: int, addresses: Sequence[object], timeout: float,
               allow: AllowList) -> http.client.HTTPConnection:
    """A connection to the first vetted address that answers (as browsers try each A and
    AAAA record); the last address's error if none does."""
    pinned = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    for index, address in enumerate(addresses):
        connection = pinned(host, port, str(address), timeout, allow)
        try:
            connection.connect()
            return connection
        except OSError:  # TargetRefused (the connected peer is vetted again) is not one
            connection.close()
            if index == len(addresses) - 1:
                raise
    raise TargetRefused(f"{host} has no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address the guard vetted, sends the URL's host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float,
                 allow: AllowList) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address
        self._allow = allow

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            check_peer(sock, self.host, self._allow)
        except TargetRefused:
            sock.close()
            raise
        return sock

    def connect(self) -> None:
        self.sock = self._open()


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, host: str, port: int, address: str, timeout: float,
                 allow: AllowList) -> None:
        super().__init__(host, port, address, timeout, allow)
        self._tls = ssl.create_default_context()

    def connect(self) -> None:
        self.sock = self._tls.wrap_socket(self._open(), server_hostname=self.host)
