"""Media that tries to read outside its own file, and two canaries that see it happen:
an HTTP server on 127.0.0.1 that counts requests, and an inotify watch that counts
every open or read of the files in a folder outside the input roots."""

from __future__ import annotations

import ctypes
import ctypes.util
import http.server
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

IN_ACCESS, IN_OPEN, IN_ISDIR = 0x1, 0x20, 0x40000000
MARKER = b"MEDIAQ-CANARY-" + bytes(range(65, 91)) * 2  # bytes that must never reach an output


class HttpCanary:
    """A local HTTP server answering anything with a small body; counts every request."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = MARKER * 16
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.hits = hits
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> HttpCanary:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class FileCanary:
    """Counts opens and reads of files in ``folder`` (inotify), from any process."""

    folder: Path
    events: list[str] = field(default_factory=list)
    _fd: int = -1

    def __enter__(self) -> FileCanary:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self._fd, str(self.folder).encode(), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        return self

    def poll(self) -> list[str]:
        """Events so far: ``open name`` / ``read name`` for files (the folder's own
        listing is not counted)."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16: offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                if mask & IN_ISDIR or not name:
                    continue
                self.events.append(f"{'open' if mask & IN_OPEN else 'read'} {name}")
        return self.events

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        os.close(self._fd)


# --------------------------------------------------------------------------- hostile files


def hls_playlist(segments: list[str]) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2",
             "#EXT-X-MEDIA-SEQUENCE:0"]
    for segment in segments:
        lines += ["#EXTINF:1.0,", segment]
    lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


def hls_master(variant: str) -> bytes:
    return (f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000,RESOLUTION=64x48\n{variant}\n"
            ).encode()


def ffconcat(paths: list[str]) -> bytes:
    return ("ffconcat version 1.0\n" + "".join(f"file '{p}'\n" for p in paths)).encode()


def _boxes(data: bytes, start: int, end: int) -> list[tuple[int, int, bytes]]:
    """(offset, size, type) of the ISO-BMFF boxes in data[start:end]."""
    found = []
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        if size < 8:
            break
        found.append((start, size, kind))
        start += size
    return found


def _alias_entry(absolute_path: str) -> bytes:
    """A Macintosh alias ('alis') data reference entry, as FFmpeg's mov demuxer reads it:
    volume and file name, then tagged records; type 2 is the absolute path."""
    filename = Path(absolute_path).name.encode()[:63]
    body = bytearray()
    body += b"\0" * 10
    body += bytes([4]) + b"Disk".ljust(27, b"\0")
    body += b"\0" * 12
    body += bytes([len(filename)]) + filename.ljust(63, b"\0")
    body += b"\0" * 16
    body += struct.pack(">hh", 1, 1)  # levels up from the alias, down to the target
    body += b"\0" * 16
    path = absolute_path.replace("/", ":").lstrip(":").encode()
    padded = path + (b"\0" if len(path) % 2 else b"")
    body += struct.pack(">HH", 2, len(path)) + padded
    body += struct.pack(">hH", -1, 0)
    return struct.pack(">I4sI", 12 + len(body), b"alis", 0) + bytes(body)


def mov_with_external_reference(mov: bytes, target: str) -> bytes:
    """``mov`` with every track's data reference pointing at ``target`` (an alias record)
    instead of "this file": a player that follows references reads ``target``'s bytes.
    Box sizes up the tree (moov/trak/mdia/minf/dinf/dref) are fixed; the moov must come
    after the mdat (so chunk offsets stay valid), as PyAV writes it."""
    data = bytearray(mov)
    top = _boxes(bytes(data), 0, len(data))
    kinds = [k for _, _, k in top]
    assert kinds.index(b"moov") > kinds.index(b"mdat"), kinds
    path_to_dref = (b"moov", b"trak", b"mdia", b"minf", b"dinf", b"dref")

    def rewrite(start: int, end: int, depth: int) -> int:
        """Rewrite the boxes in data[start:end]; returns the change in length."""
        nonlocal data
        grown = 0
        for offset, size, kind in _boxes(bytes(data), start, end):
            offset += grown
            if kind != path_to_dref[depth] and not (kind == b"trak" and depth == 1):
                continue
            if kind == b"dref":
                entry = _alias_entry(target)
                new = struct.pack(">I4sII", 16 + len(entry), b"dref", 0, 1) + entry
                data[offset:offset + size] = new
                grown += len(new) - size
                continue
            delta = rewrite(offset + 8, offset + size, depth + 1)
            struct.pack_into(">I", data, offset, size + delta)
            grown += delta
        return grown

    rewrite(0, len(data), 0)
    return bytes(data)
