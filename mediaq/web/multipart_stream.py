"""A ``multipart/form-data`` body parsed as it streams in (python-multipart's push
parser): the file part goes straight to a file on disk, the small fields are kept;
past the size limit the parse stops (TooLarge) without reading the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

OVERHEAD = 64 * 1024   # what the form's headers and fields may add to the file's size
FIELD_LIMIT = 16 * 1024


class TooLarge(Exception):
    """The file part is larger than the limit."""


class BadForm(Exception):
    """Not a form this endpoint takes."""


@dataclass
class Form:
    filename: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


class _Collector:
    """The parser's callbacks: headers per part, the file's bytes to ``out``."""

    def __init__(self, out: Any, limit: int | None) -> None:
        self.out, self.limit, self.form = out, limit, Form()
        self.part = _Part()
        self.header_field, self.header_value = bytearray(), bytearray()
        self.files = 0

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.begin, "on_header_field": self.on_field,
                "on_header_value": self.on_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_done, "on_part_data": self.data,
                "on_part_end": self.end}

    def begin(self) -> None:
        self.part = _Part()

    def on_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.part.headers[self.header_field.decode("latin-1").lower()] = \
            self.header_value.decode("latin-1")
        self.header_field.clear()
        self.header_value.clear()

    def headers_done(self) -> None:
        _, options = parse_options_header(self.part.headers.get("content-disposition", ""))
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw = options.get(b"filename")
        self.part.filename = raw.decode("utf-8", "replace") if raw is not None else None
        if self.part.filename is not None:
            self.files += 1
            if self.files > 1 or self.part.name != "file":
                raise BadForm("one file, in the field named 'file'")
            self.form.filename = self.part.filename

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.part.filename is not None:
            self.form.size += end - start
            if self.limit is not None and self.form.size > self.limit:
                raise TooLarge()
            self.out.write(data[start:end])
        else:
            self.part.value += data[start:end]
            if len(self.part.value) > FIELD_LIMIT:
                raise BadForm(f"field {self.part.name!r} is longer than {FIELD_LIMIT} bytes")

    def end(self) -> None:
        if self.part.filename is None and self.part.name:
            self.form.fields[self.part.name] = self.part.value.decode("utf-8", "replace")


async def receive(request: Request, target: Path, limit: int | None) -> Form:
    """Parse the request's form, writing its file part to ``target``."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadForm("no boundary in Content-Type")
    with target.open("wb") as out:
        collector = _Collector(out, limit)
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            if chunk:
                try:
                    await run_in_threadpool(parser.write, chunk)
                except (TooLarge, BadForm):
                    raise
                except Exception as exc:  # the parser's own errors: a malformed body
                    raise BadForm(str(exc) or type(exc).__name__) from None
        parser.finalize()
    if collector.files != 1:
        raise BadForm("no file in the field named 'file'")
    return collector.form
