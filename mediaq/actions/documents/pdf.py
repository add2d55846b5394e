"""PDF through pdfium: opening, completeness, metadata, page text and rendering.

pdfium is not thread-safe, not even across documents, and the worker runs jobs in
threads: every pdfium call holds :data:`PDFIUM_LOCK`, page by page, so two jobs take
turns instead of corrupting the process. pdfium never runs JavaScript or form actions.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
from PIL import Image

from mediaq.actions.base import ActionContext
from mediaq.actions.documents.identify import (
    DocumentText,
    SourceDocument,
    check_page_limit,
    check_page_number,
    one_line,
)
from mediaq.errors import InputRefused, PermanentError

PDFIUM_LOCK = threading.RLock()

# A complete PDF ends with %%EOF; a missing marker in its tail means a cut-off file.
PDF_TAIL_WINDOW = 8192
PDF_PADDING = b"\x00 \t\r\n\x0c"
PDF_MAX_PADDING = 1 << 20

# Taller renders are cut at the bottom: a thumbnail shows the top of an odd, long page.
MAX_THUMBNAIL_HEIGHT = 16_000
_WHITE = (255, 255, 255, 255)

# pdfium's document-loading error codes (FPDF_ERR_*).
_PDF_LOAD_ERRORS = {
    2: "the file cannot be read",
    3: "corrupt PDF (pdfium cannot parse it)",
    4: "encrypted PDF (a password is required)",
    6: "encrypted PDF (unsupported security handler)",
}



@contextmanager
def open_pdf(path: Path, name: str) -> Iterator[Any]:
    """The pdfium document at ``path``, closed on exit; errors start with ``name``."""
    with PDFIUM_LOCK:
        pdf = _load_pdf(path, name)
    try:
        _check_pdf_complete(path, name)
        yield pdf
    finally:
        with PDFIUM_LOCK:
            pdf.close()


def _load_pdf(path: Path, name: str) -> Any:
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        reason = _PDF_LOAD_ERRORS.get(getattr(exc, "err_code", None) or 0)
        raise PermanentError(f"{name}: {reason or f'corrupt PDF ({one_line(exc)})'}") from None
    except OSError as exc:
        raise InputRefused(f"{name}: cannot be read ({exc.strerror or exc})") from None


def _check_pdf_complete(path: Path, name: str) -> None:
    end = _end_of_content(path)
    with path.open("rb") as fp:
        fp.seek(max(0, end - PDF_TAIL_WINDOW))
        tail = fp.read(end - max(0, end - PDF_TAIL_WINDOW))
    if b"%%EOF" not in tail:
        raise PermanentError(f"{name}: truncated PDF (it does not end with %%EOF)")


def _end_of_content(path: Path) -> int:
    """Where the file ends once trailing padding is left out: NUL bytes and whitespace
    after %%EOF (block-aligned writers, some scanners) do not make a PDF incomplete,
    and pdfium opens such files. At most PDF_MAX_PADDING bytes are looked through."""
    size = path.stat().st_size
    end = size
    with path.open("rb") as fp:
        while end > 0 and size - end < PDF_MAX_PADDING:
            start = max(0, end - PDF_TAIL_WINDOW)
            fp.seek(start)
            chunk = fp.read(end - start).rstrip(PDF_PADDING)
            if chunk:
                return start + len(chunk)
            end = start
    return end


def pdf_page_count(pdf: Any) -> int:
    with PDFIUM_LOCK:
        return len(pdf)


def pdf_metadata(pdf: Any) -> dict[str, Any]:
    keys = {"Title": "title", "Author": "author", "Subject": "subject", "Keywords": "keywords",
            "Creator": "creator", "Producer": "producer", "CreationDate": "created",
            "ModDate": "modified"}
    with PDFIUM_LOCK:
        raw = {k: str(v) for k, v in pdf.get_metadata_dict(skip_empty=True).items()}
    metadata: dict[str, Any] = {}
    for key, value in raw.items():
        if key in keys and value.strip():
            metadata[keys[key]] = _pdf_date(value) if key.endswith("Date") else value.strip()
    return metadata


_PDF_DATE = re.compile(
    r"D:(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?\s*(?:([Zz])|([+-])(\d\d)'?(\d\d)?'?)?"
)


def _pdf_date(value: str) -> str:
    """A PDF date (``D:20240131120000+01'00'``) in ISO 8601; unparseable ones as written."""
    match = _PDF_DATE.match(value.strip())
    if match is None:
        return value.strip()
    year, month, day, hour, minute, second, zulu, sign, tz_hours, tz_minutes = match.groups()
    tz: timezone | None = UTC if zulu else None
    if sign:
        offset = timedelta(hours=int(tz_hours), minutes=int(tz_minutes or 0))
        tz = timezone(offset if sign == "+" else -offset)
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                          int(minute or 0), int(second or 0), tzinfo=tz)
    except ValueError:
        return value.strip()
    return moment.isoformat()


def pdf_version(pdf: Any) -> str | None:
    with PDFIUM_LOCK:
        version = pdf.get_version()
    return f"{version // 10}.{version % 10}" if isinstance(version, int) and version else None


def check_pdf_pages(ctx: ActionContext, pdf: Any, name: str, count: int) -> None:
    """Load every page once, so a broken page tree is found now, not by a later step."""
    for index in range(count):
        ctx.progress(index / count, f"checking page {index + 1}/{count}")
        with PDFIUM_LOCK:
            try:
                page = pdf[index]
            except pdfium.PdfiumError:
                raise PermanentError(f"{name}: corrupt PDF (page {index + 1} cannot be "
                                     "loaded)") from None
            try:
                width, height = page.get_size()
            finally:
                page.close()
        if not (width > 0 and height > 0):
            raise PermanentError(f"{name}: corrupt PDF (page {index + 1} has no size)")


def _pdf_page_text(pdf: Any, index: int) -> str:
    with PDFIUM_LOCK:
        page = pdf[index]
        try:
            textpage = page.get_textpage()
            try:
                text = str(textpage.get_text_range())
            finally:
                textpage.close()
        finally:
            page.close()
    # pdfium ends lines with CRLF; a form feed would read as a page break in our files.
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").replace("\x00", "")


def read_pdf(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
    with open_pdf(doc.path, doc.name) as pdf:
        count = pdf_page_count(pdf)
        check_page_limit(doc, count, None)
        pages = []
        for index in range(count):
            ctx.progress(index / count, f"reading page {index + 1}/{count}")
            try:
                pages.append(_pdf_page_text(pdf, index))
            except pdfium.PdfiumError:
                raise PermanentError(f"{doc.name}: corrupt PDF (page {index + 1} cannot be "
                                     "read)") from None
        return DocumentText(pages, pdf_metadata(pdf))


def render_pdf_page(path: Path, name: str, page_number: int, width: int) -> Image.Image:
    """Page ``page_number`` (1-based) of the PDF at ``path``, ``width`` pixels wide, on white.

    The scale comes from the page's size in points, so the bitmap is never larger
    than needed; very tall pages are cut at :data:`MAX_THUMBNAIL_HEIGHT`.
    """
    with open_pdf(path, name) as pdf:
        count = pdf_page_count(pdf)
        check_page_number(name, page_number, count)
        with PDFIUM_LOCK:
            page = pdf[page_number - 1]
            try:
                image = _render_page(page, name, page_number, width)
            finally:
                page.close()
    if image.width != width:  # rounding inside pdfium can leave it a pixel off
        image = image.resize((width, max(1, round(image.height * width / image.width))))
    return image


def _render_page(page: Any, name: str, page_number: int, width: int) -> Image.Image:
    """Render ``page`` (the caller holds PDFIUM_LOCK)."""
    page_width, page_height = (float(side) for side in page.get_size())
    if not (page_width > 0 and page_height > 0):
        raise PermanentError(f"{name}: corrupt PDF (page {page_number} has no size)")
    scale = width / page_width
    max_height = min(MAX_THUMBNAIL_HEIGHT, 40_000_000 // width)
    cut_bottom = max(0.0, page_height - max_height / scale)
    bitmap = page.render(scale=scale, crop=(0, cut_bottom, 0, 0), fill_color=_WHITE,
                         may_draw_forms=False)
    try:
        rendered: Image.Image = bitmap.to_pil().convert("RGB")  # a copy out of pdfium's buffer
        return rendered
    finally:
        bitmap.close()


