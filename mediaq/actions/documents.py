"""Document actions: validate, extract text, render a page thumbnail, convert.

Three kinds of document are read, told apart by their content, never by the file
name: PDF (parsed only by pdfium, so no JavaScript or form actions ever run), DOCX
(python-docx, and only after the ZIP's declared sizes passed the zip-bomb guard) and
plain text (UTF-8, or UTF-16 with a byte-order mark). Rendering a DOCX and
converting to PDF go through LibreOffice (:mod:`mediaq.actions.office`).

pdfium is not thread-safe, not even across documents, and the worker runs jobs in
threads: every pdfium call holds :data:`PDFIUM_LOCK`, page by page, so two jobs
take turns instead of corrupting the process.
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
import shutil
import tempfile
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import docx
import pypdfium2 as pdfium
from docx.document import Document as DocxDocument
from PIL import Image, ImageDraw, ImageFont

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile, check_source_file
from mediaq.actions.office import convert_with_libreoffice, libreoffice_binary, not_available
from mediaq.errors import InputRefused, PermanentError, TransientError
from mediaq.outputs import sha256_of

PDFIUM_LOCK = threading.RLock()

KINDS = ("pdf", "docx", "text")
_KIND_LABELS = {"pdf": "PDF", "docx": "DOCX", "text": "plain text"}

# Where "%PDF-" may sit (readers accept a little junk before it, as pdfium does).
PDF_HEADER_WINDOW = 1024
# A complete PDF ends with %%EOF; a missing marker in its tail means a cut-off file.
PDF_TAIL_WINDOW = 8192
TEXT_SNIFF_BYTES = 64 * 1024
MAX_TEXT_BYTES = 64 * 1024 * 1024

# Zip-bomb guard, checked on the ZIP's declared sizes before python-docx inflates
# anything (zipfile then stops reading an entry at its declared size, CRC-checked).
MAX_ZIP_ENTRIES = 10_000
MAX_DOCX_EXPANDED_BYTES = 256 * 1024 * 1024
MAX_COMPRESSION_RATIO = 100
_RATIO_EXEMPT_BYTES = 1024 * 1024  # small XML parts may compress well beyond the ratio

THUMBNAIL_FORMATS = {"png": ("PNG", "png"), "webp": ("WEBP", "webp"), "jpeg": ("JPEG", "jpg")}
# Taller renders are cut at the bottom: a thumbnail shows the top of an odd, long page.
MAX_THUMBNAIL_HEIGHT = 16_000
A4_ASPECT = 297 / 210
_WHITE = (255, 255, 255, 255)

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# A ZIP starts with a local file header (an empty or a split one with these): the full
# signatures, so a text that merely starts with "PK" (say "PKI rollout") stays text.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
# Run and paragraph properties (tab stops, hidden flags) and section settings hold no text.
_DOCX_SKIPPED = frozenset({f"{_W}pPr", f"{_W}rPr", f"{_W}sectPr", _MC_FALLBACK})

# pdfium's document-loading error codes (FPDF_ERR_*).
_PDF_LOAD_ERRORS = {
    2: "the file cannot be read",
    3: "corrupt PDF (pdfium cannot parse it)",
    4: "encrypted PDF (a password is required)",
    6: "encrypted PDF (unsupported security handler)",
}


# --------------------------------------------------------------------- identifying


@dataclass(frozen=True)
class SourceDocument:
    """A source file whose kind was read from its content."""

    path: Path
    kind: str  # one of KINDS
    encoding: str | None = None  # text only: the codec that decodes it

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class DocumentText:
    """The text of a document, page by page, and what it says about itself."""

    pages: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """All pages, separated by form feeds (the plain-text page break)."""
        return "\f".join(self.pages)


def identify(path: Path) -> SourceDocument:
    """Tell what ``path`` holds from its bytes; one-line errors for anything else."""
    check_source_file(path)
    name = path.name
    head = _read_head(path, TEXT_SNIFF_BYTES)
    if b"%PDF-" in head[:PDF_HEADER_WINDOW]:
        return SourceDocument(path, "pdf")
    if head.startswith(_ZIP_MAGICS):
        _check_docx_zip(path)
        return SourceDocument(path, "docx")
    if head.startswith(_OLE_MAGIC):
        raise PermanentError(f"{name}: not a supported document (an OLE compound file: "
                             "a legacy .doc or a password-protected Office file)")
    encoding = _text_encoding(head, complete=path.stat().st_size <= len(head))
    if encoding is None:
        raise PermanentError(f"{name}: not a supported document "
                             "(not PDF, DOCX or UTF-8/UTF-16 text)")
    return SourceDocument(path, "text", encoding)


def _read_head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as fp:
            return fp.read(size)
    except OSError as exc:
        raise InputRefused(f"{path.name}: cannot be read ({exc.strerror or exc})") from None


def _text_encoding(sample: bytes, *, complete: bool) -> str | None:
    """The codec that decodes ``sample`` to NUL-free text, or None for binary data.

    ``complete`` says the sample is the whole file; otherwise a multi-byte character
    cut at the sample's end is not held against it.
    """
    if sample.startswith(_UTF16_BOMS):
        encoding = "utf-16"
    elif sample.startswith(_UTF8_BOM):
        encoding = "utf-8-sig"
    else:
        encoding = "utf-8"
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
        text = decoder.decode(sample, final=complete)
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else encoding


def _check_docx_zip(path: Path) -> None:
    """Refuse a ZIP that is not a Word document or that would inflate beyond the limits."""
    name = path.name
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise PermanentError(f"{name}: not a supported document "
                             f"(a damaged ZIP archive: {_one_line(exc)})") from None
    except OSError as exc:
        raise TransientError(f"{name}: read failed ({exc.strerror or exc})") from None
    if not any(entry.filename == "word/document.xml" for entry in entries):
        raise PermanentError(f"{name}: not a supported document "
                             "(a ZIP archive without word/document.xml, not a DOCX)")
    _refuse_zip_bomb(name, entries)


def _refuse_zip_bomb(name: str, entries: list[zipfile.ZipInfo]) -> None:
    if len(entries) > MAX_ZIP_ENTRIES:
        raise PermanentError(f"{name}: refused as a possible zip bomb ({len(entries)} entries, "
                             f"limit {MAX_ZIP_ENTRIES})")
    expanded = sum(entry.file_size for entry in entries)
    if expanded > MAX_DOCX_EXPANDED_BYTES:
        raise PermanentError(f"{name}: refused as a possible zip bomb (it expands to "
                             f"{_mib(expanded)}, limit {_mib(MAX_DOCX_EXPANDED_BYTES)})")
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _RATIO_EXEMPT_BYTES and ratio > MAX_COMPRESSION_RATIO:
            # Entry names come from the file: leave them out of the message.
            raise PermanentError(f"{name}: refused as a possible zip bomb (an entry expands "
                                 f"{ratio:.0f}x, limit {MAX_COMPRESSION_RATIO}x)")


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MiB"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _check_allowed(doc: SourceDocument, allowed: list[str] | None) -> None:
    if allowed is not None and doc.kind not in allowed:
        raise PermanentError(f"{doc.name}: {_KIND_LABELS[doc.kind]} documents are not allowed "
                             f"here (allowed: {', '.join(allowed)})")


def _check_page_limit(doc: SourceDocument, count: int, limit: int | None) -> None:
    if count == 0:
        raise PermanentError(f"{doc.name}: the document has no pages")
    if limit is not None and count > limit:
        raise PermanentError(f"{doc.name}: {count} pages exceeds the limit of {limit} "
                             "(max_pages)")


def _check_page_number(name: str, page: int, count: int) -> None:
    if page > count:
        raise PermanentError(f"{name}: page {page} does not exist "
                             f"(the document has {count} page{'s' if count != 1 else ''})")


# ---------------------------------------------------------------------------- PDF


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
        raise PermanentError(f"{name}: {reason or f'corrupt PDF ({_one_line(exc)})'}") from None
    except OSError as exc:
        raise InputRefused(f"{name}: cannot be read ({exc.strerror or exc})") from None


def _check_pdf_complete(path: Path, name: str) -> None:
    size = path.stat().st_size
    with path.open("rb") as fp:
        fp.seek(max(0, size - PDF_TAIL_WINDOW))
        tail = fp.read()
    if b"%%EOF" not in tail:
        raise PermanentError(f"{name}: truncated PDF (it does not end with %%EOF)")


def pdf_page_count(pdf: Any) -> int:
    with PDFIUM_LOCK:
        return len(pdf)


def _pdf_metadata(pdf: Any) -> dict[str, Any]:
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


def _pdf_version(pdf: Any) -> str | None:
    with PDFIUM_LOCK:
        version = pdf.get_version()
    return f"{version // 10}.{version % 10}" if isinstance(version, int) and version else None


def _check_pdf_pages(ctx: ActionContext, pdf: Any, name: str, count: int) -> None:
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


def _read_pdf(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
    with open_pdf(doc.path, doc.name) as pdf:
        count = pdf_page_count(pdf)
        _check_page_limit(doc, count, None)
        pages = []
        for index in range(count):
            ctx.progress(index / count, f"reading page {index + 1}/{count}")
            try:
                pages.append(_pdf_page_text(pdf, index))
            except pdfium.PdfiumError:
                raise PermanentError(f"{doc.name}: corrupt PDF (page {index + 1} cannot be "
                                     "read)") from None
        return DocumentText(pages, _pdf_metadata(pdf))


def render_pdf_page(path: Path, name: str, page_number: int, width: int) -> Image.Image:
    """Page ``page_number`` (1-based) of the PDF at ``path``, ``width`` pixels wide, on white.

    The scale comes from the page's size in points, so the bitmap is never larger
    than needed; very tall pages are cut at :data:`MAX_THUMBNAIL_HEIGHT`.
    """
    with open_pdf(path, name) as pdf:
        count = pdf_page_count(pdf)
        _check_page_number(name, page_number, count)
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


# --------------------------------------------------------------------------- DOCX


def _open_docx(doc: SourceDocument) -> DocxDocument:
    try:
        return docx.Document(str(doc.path))
    except OSError as exc:
        if exc.errno is not None:
            raise TransientError(f"{doc.name}: read failed ({exc.strerror})") from None
        raise PermanentError(f"{doc.name}: corrupt DOCX ({_one_line(exc)})") from None
    except Exception as exc:  # python-docx and lxml signal bad packages many ways
        raise PermanentError(f"{doc.name}: corrupt DOCX ({_one_line(exc)})") from None


def _read_docx(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
    ctx.progress(0.0, "reading document")
    document = _open_docx(doc)
    body = document.element.body
    collector = _PageCollector(_section_page_breaks(body))
    collector.walk(body)
    pages = collector.pages()
    for index in range(len(pages)):
        ctx.progress(index / len(pages), f"reading page {index + 1}/{len(pages)}")
    return DocumentText(pages, _docx_metadata(document))


class _PageCollector:
    """Collects a DOCX body's text in document order (paragraphs and table cells, one
    line each), starting a new page at each explicit page break: a page break, a
    paragraph that breaks the page before it, and a section break to a new page.

    ``section_breaks`` are the section ends (``w:sectPr`` elements) followed by a new page.
    """

    def __init__(self, section_breaks: list[Any] | None = None) -> None:
        self._pages: list[list[str]] = [[]]
        self._section_breaks = section_breaks or []

    def pages(self) -> list[str]:
        return ["".join(parts).rstrip("\n") for parts in self._pages]

    def walk(self, element: Any) -> None:
        for child in element:
            tag = child.tag
            if not isinstance(tag, str) or tag in _DOCX_SKIPPED:
                continue  # comments and processing instructions have no string tag
            if tag == f"{_W}p":
                self._paragraph(child)
            elif tag == f"{_W}t":
                self._pages[-1].append(child.text or "")
            elif tag == f"{_W}tab":
                self._pages[-1].append("\t")
            elif tag == f"{_W}br":
                self._break(child.get(f"{_W}type"))
            elif tag == f"{_W}cr":
                self._pages[-1].append("\n")
            elif tag == f"{_W}noBreakHyphen":
                self._pages[-1].append("-")
            elif tag == f"{_W}r" and _is_hidden(child):
                continue
            else:
                self.walk(child)

    def _paragraph(self, paragraph: Any) -> None:
        if _breaks_page_before(paragraph) and any(self._pages[-1]):
            self._pages.append([])
        self.walk(paragraph)
        self._pages[-1].append("\n")
        section_end = paragraph.find(f"{_W}pPr/{_W}sectPr")
        if section_end is not None and any(section_end is end for end in self._section_breaks):
            self._pages.append([])

    def _break(self, kind: str | None) -> None:
        if kind == "page":
            self._pages.append([])
        else:  # a line or column break
            self._pages[-1].append("\n")


def _is_hidden(run: Any) -> bool:
    vanish = run.find(f"{_W}rPr/{_W}vanish")
    return vanish is not None and _on(vanish)


# How a section may start (its w:type; "nextPage" when absent): these start a new page.
_NEW_PAGE_SECTIONS = frozenset({"nextPage", "oddPage", "evenPage"})


def _section_page_breaks(body: Any) -> list[Any]:
    """The section ends in ``body`` after which the text goes on a new page.

    A section ends at the paragraph holding its ``w:sectPr`` (the last one is the body's
    own), and a section's ``w:type`` tells how *it* starts, so whether a section end
    breaks the page is read from the section after it.
    """
    ends = [section for section in body.iter(f"{_W}sectPr")
            if section.getparent() is body or section.getparent().tag == f"{_W}pPr"]
    return [end for end, following in itertools.pairwise(ends)
            if _section_start(following) in _NEW_PAGE_SECTIONS]


def _section_start(section: Any) -> str:
    kind = section.find(f"{_W}type")
    return "nextPage" if kind is None else str(kind.get(f"{_W}val", "nextPage"))


def _breaks_page_before(paragraph: Any) -> bool:
    flag = paragraph.find(f"{_W}pPr/{_W}pageBreakBefore")
    return flag is not None and _on(flag)


def _on(flag: Any) -> bool:
    """A WordprocessingML on/off property: present means on unless w:val says otherwise."""
    return flag.get(f"{_W}val", "true") not in ("false", "0", "off")


def _docx_metadata(document: DocxDocument) -> dict[str, Any]:
    props = document.core_properties
    values: dict[str, Any] = {
        "title": props.title, "author": props.author, "subject": props.subject,
        "keywords": props.keywords, "category": props.category, "comments": props.comments,
        "last_modified_by": props.last_modified_by, "created": props.created,
        "modified": props.modified,
    }
    return {
        key: value.isoformat() if isinstance(value, datetime) else value.strip()
        for key, value in values.items()
        if isinstance(value, datetime) or (isinstance(value, str) and value.strip())
    }


def _docx_to_pdf(ctx: ActionContext, doc: SourceDocument, workdir: Path, purpose: str) -> Path:
    """Convert the DOCX with LibreOffice; the PDF (under ``workdir``)."""
    if libreoffice_binary() is None:
        raise not_available(doc.name, purpose)
    # A fixed, plain name: LibreOffice names its output after the input and parses
    # its command line, so the source's own name goes nowhere near either.
    plain = workdir / "document.docx"
    shutil.copyfile(doc.path, plain)
    ctx.progress(0.1, "converting with LibreOffice")
    return convert_with_libreoffice(ctx, plain, "pdf", workdir / "out", name=doc.name,
                                    purpose=purpose)


# --------------------------------------------------------------------------- text


def read_text(doc: SourceDocument) -> str:
    """The whole text of a plain-text source, newlines normalised to ``\\n``."""
    size = doc.path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise PermanentError(f"{doc.name}: text file too large ({_mib(size)}, "
                             f"limit {_mib(MAX_TEXT_BYTES)})")
    try:
        text = doc.path.read_bytes().decode(doc.encoding or "utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError(f"{doc.name}: not a supported document (invalid "
                             f"{exc.encoding.upper()} text at byte {exc.start})") from None
    except OSError as exc:
        raise InputRefused(f"{doc.name}: cannot be read ({exc.strerror or exc})") from None
    if "\x00" in text:
        raise PermanentError(f"{doc.name}: not a supported document (text with NUL bytes "
                             "is binary data)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_pages(text: str) -> list[str]:
    """Pages of plain text, split at form feeds; a final form feed ends the last page."""
    pages = text.split("\f")
    if len(pages) > 1 and not pages[-1].strip():
        pages.pop()
    return pages


def _read_plain_text(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
    ctx.progress(0.0, "reading text")
    pages = text_pages(read_text(doc))
    for index in range(len(pages)):
        ctx.progress(index / len(pages), f"reading page {index + 1}/{len(pages)}")
    return DocumentText(pages)


def draw_text_page(text: str, width: int) -> Image.Image:
    """A white A4-shaped preview of ``text``, ``width`` pixels wide, in Pillow's own font."""
    height = round(width * A4_ASPECT)
    margin = max(4, width // 16)
    font_size = max(6, width // 40)
    font = ImageFont.load_default(size=font_size)
    line_height = round(font_size * 1.35)
    columns = max(8, int((width - 2 * margin) / max(font.getlength("n"), 1.0)))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = margin
    for line in _preview_lines(text, columns, (height - 2 * margin) // line_height):
        draw.text((margin, y), line, fill="black", font=font)
        y += line_height
    return image


def _preview_lines(text: str, columns: int, max_lines: int) -> list[str]:
    # A drawn line uses at most columns + 1 characters: never wrap more than fits.
    head = text[: (columns + 1) * max_lines].expandtabs(4)
    printable = "".join(c if c.isprintable() or c == "\n" else " " for c in head)
    lines: list[str] = []
    for raw in printable.split("\n"):
        lines.extend(textwrap.wrap(raw, columns, drop_whitespace=False) or [""])
        if len(lines) >= max_lines:
            break
    return lines[:max_lines]


# ------------------------------------------------------------------------ reading


def read_document(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
    """The text of ``doc``, page by page, reporting progress and honouring cancel."""
    if doc.kind == "pdf":
        return _read_pdf(ctx, doc)
    if doc.kind == "docx":
        return _read_docx(ctx, doc)
    return _read_plain_text(ctx, doc)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


# ------------------------------------------------------------------------ actions


@action("validate_document", {
    "properties": {
        "max_pages": {"type": "integer", "minimum": 1},
        "allowed_types": {"type": "array", "minItems": 1, "uniqueItems": True,
                          "items": {"enum": list(KINDS)}},
    },
})
def validate_document(ctx: ActionContext) -> ActionResult:
    """Check that the source is a readable PDF, DOCX or text file and describe it."""
    doc = identify(ctx.source_path)
    _check_allowed(doc, ctx.params.get("allowed_types"))
    limit = ctx.params.get("max_pages")
    data: dict[str, Any] = {"type": doc.kind}
    if doc.kind == "pdf":
        with open_pdf(doc.path, doc.name) as pdf:
            count = pdf_page_count(pdf)
            _check_page_limit(doc, count, limit)
            _check_pdf_pages(ctx, pdf, doc.name, count)
            data.update(page_count=count, metadata=_pdf_metadata(pdf),
                        pdf_version=_pdf_version(pdf))
    else:
        content = read_document(ctx, doc)
        _check_page_limit(doc, len(content.pages), limit)
        data.update(page_count=len(content.pages), metadata=content.metadata)
        if doc.encoding:
            data["encoding"] = doc.encoding
    data["size_bytes"] = doc.path.stat().st_size
    ctx.progress(1.0, "validated")
    return ActionResult(data=data)


@action("extract_text", {"properties": {}})
def extract_text(ctx: ActionContext) -> ActionResult:
    """Extract the text, page by page: a full-text file and a per-page JSON file."""
    doc = identify(ctx.source_path)
    content = read_document(ctx, doc)
    stem = doc.path.stem
    full_path = ctx.output_path(f"{stem}.txt")
    _write_text(full_path, content.full_text)
    pages_path = ctx.output_path(f"{stem}_pages.json")
    pages = [{"page": number, "text": text, "characters": len(text)}
             for number, text in enumerate(content.pages, start=1)]
    pages_path.write_text(json.dumps(pages, ensure_ascii=False, indent=1) + "\n",
                          encoding="utf-8")
    characters = sum(len(text) for text in content.pages)
    if characters == 0 and doc.kind == "pdf":
        ctx.log(f"{doc.name}: no text layer (a scanned or image-only PDF); no text extracted")
    ctx.progress(1.0, "text extracted")
    return ActionResult(
        outputs=[OutputFile(full_path, role="sidecar", meta={"content": "full_text"}),
                 OutputFile(pages_path, role="sidecar", meta={"content": "pages"})],
        data={
            "type": doc.kind,
            "page_count": len(content.pages),
            "characters": characters,
            "words": sum(len(text.split()) for text in content.pages),
            "pages_with_text": sum(1 for text in content.pages if text.strip()),
            "metadata": content.metadata,
        },
    )


@action("render_thumbnail", {
    "properties": {
        "page": {"type": "integer", "minimum": 1, "default": 1},
        "width": {"type": "integer", "minimum": 16, "maximum": 4096, "default": 400},
        "format": {"enum": list(THUMBNAIL_FORMATS), "default": "png"},
    },
})
def render_thumbnail(ctx: ActionContext) -> ActionResult:
    """Render one page of the document as an image, ``width`` pixels wide."""
    doc = identify(ctx.source_path)
    page, width = ctx.params["page"], ctx.params["width"]
    pil_format, extension = THUMBNAIL_FORMATS[ctx.params["format"]]
    ctx.progress(0.1, f"rendering page {page}")
    image = _render_page_image(ctx, doc, page, width)
    ctx.check()
    path = ctx.output_path(f"{doc.path.stem}_page{page}.{extension}")
    options = {"quality": 85} if pil_format in ("JPEG", "WEBP") else {}
    image.save(path, pil_format, **options)
    ctx.progress(1.0, "thumbnail written")
    meta = {"width": image.width, "height": image.height, "format": ctx.params["format"],
            "page": page}
    return ActionResult(outputs=[OutputFile(path, role="thumbnail", meta=meta)], data=meta)


def _render_page_image(ctx: ActionContext, doc: SourceDocument, page: int,
                       width: int) -> Image.Image:
    if doc.kind == "pdf":
        return render_pdf_page(doc.path, doc.name, page, width)
    if doc.kind == "docx":
        with tempfile.TemporaryDirectory(prefix="mediaq-doc-") as workdir:
            pdf = _docx_to_pdf(ctx, doc, Path(workdir), "rendering DOCX")
            return render_pdf_page(pdf, doc.name, page, width)
    pages = text_pages(read_text(doc))
    _check_page_number(doc.name, page, len(pages))
    return draw_text_page(pages[page - 1], width)


@action("convert_document", {
    "properties": {"format": {"enum": ["txt", "pdf"]}},
    "required": ["format"],
})
def convert_document(ctx: ActionContext) -> ActionResult:
    """Convert the document to plain text or PDF (a rendition beside the source)."""
    doc = identify(ctx.source_path)
    target = ctx.output_path(f"{doc.path.stem}.{ctx.params['format']}")
    if ctx.params["format"] == "txt":
        content = read_document(ctx, doc)
        _write_text(target, content.full_text)
        data: dict[str, Any] = {"page_count": len(content.pages),
                                "characters": sum(len(text) for text in content.pages)}
    elif doc.kind == "pdf":
        data = _copy_verified_pdf(doc, target)
    else:
        data = _office_to_pdf(ctx, doc, target)
    ctx.progress(1.0, "converted")
    data = {"format": ctx.params["format"], "source_type": doc.kind, **data}
    return ActionResult(outputs=[OutputFile(target, role="rendition", meta=dict(data))],
                        data=data)


def _copy_verified_pdf(doc: SourceDocument, target: Path) -> dict[str, Any]:
    """PDF to PDF: a copy, once pdfium has opened the source and the copy matches it."""
    with open_pdf(doc.path, doc.name) as pdf:
        count = pdf_page_count(pdf)
        _check_page_limit(doc, count, None)
    shutil.copyfile(doc.path, target)
    if sha256_of(target) != sha256_of(doc.path):
        raise TransientError(f"{doc.name}: the copy does not match the source (changed "
                             "while copying?)")
    return {"page_count": count}


def _office_to_pdf(ctx: ActionContext, doc: SourceDocument, target: Path) -> dict[str, Any]:
    purpose = f"converting {_KIND_LABELS[doc.kind]} to PDF"
    with tempfile.TemporaryDirectory(prefix="mediaq-doc-") as scratch:
        workdir = Path(scratch)
        if doc.kind == "docx":
            produced = _docx_to_pdf(ctx, doc, workdir, purpose)
        else:
            produced = _text_to_pdf(ctx, doc, workdir, purpose)
        ctx.progress(0.9, "checking the PDF")
        with open_pdf(produced, doc.name) as pdf:
            count = pdf_page_count(pdf)
        shutil.move(produced, target)
    return {"page_count": count}


def _text_to_pdf(ctx: ActionContext, doc: SourceDocument, workdir: Path, purpose: str) -> Path:
    if libreoffice_binary() is None:
        raise not_available(doc.name, purpose)
    # Hand LibreOffice clean UTF-8 whatever the source's encoding; it turns form feeds
    # into page breaks on import.
    plain = workdir / "document.txt"
    plain.write_text("\f".join(text_pages(read_text(doc))), encoding="utf-8")
    ctx.progress(0.1, "converting with LibreOffice")
    return convert_with_libreoffice(ctx, plain, "pdf", workdir / "out", name=doc.name,
                                    purpose=purpose, infilter="Text (encoded):UTF8,LF,,,")
