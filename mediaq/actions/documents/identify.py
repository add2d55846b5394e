"""What a source document is, told from its bytes (never its name), and the checks
every document action shares (allowed kinds, page limits, the zip-bomb guard)."""

from __future__ import annotations

import codecs
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaq.actions.base import check_source_file
from mediaq.errors import InputRefused, PermanentError, TransientError

KINDS = ("pdf", "docx", "text")
KIND_LABELS = {"pdf": "PDF", "docx": "DOCX", "text": "plain text"}

# Where "%PDF-" may sit (readers accept a little junk before it, as pdfium does).
PDF_HEADER_WINDOW = 1024
TEXT_SNIFF_BYTES = 64 * 1024

# Zip-bomb guard, checked on the ZIP's declared sizes before python-docx inflates
# anything (zipfile then stops reading an entry at its declared size, CRC-checked).
MAX_ZIP_ENTRIES = 10_000
MAX_DOCX_EXPANDED_BYTES = 256 * 1024 * 1024
MAX_COMPRESSION_RATIO = 100
_RATIO_EXEMPT_BYTES = 1024 * 1024  # small XML parts may compress well beyond the ratio

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# A ZIP starts with a local file header (an empty or a split one with these): the full
# signatures, so a text that merely starts with "PK" (say "PKI rollout") stays text.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


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
                             f"(a damaged ZIP archive: {one_line(exc)})") from None
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
                             f"{mib(expanded)}, limit {mib(MAX_DOCX_EXPANDED_BYTES)})")
    for entry in entries:
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > _RATIO_EXEMPT_BYTES and ratio > MAX_COMPRESSION_RATIO:
            # Entry names come from the file: leave them out of the message.
            raise PermanentError(f"{name}: refused as a possible zip bomb (an entry expands "
                                 f"{ratio:.0f}x, limit {MAX_COMPRESSION_RATIO}x)")


def mib(size: int) -> str:
    return f"{size / 1024 / 1024:.0f} MiB"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def check_allowed(doc: SourceDocument, allowed: list[str] | None) -> None:
    if allowed is not None and doc.kind not in allowed:
        raise PermanentError(f"{doc.name}: {KIND_LABELS[doc.kind]} documents are not allowed "
                             f"here (allowed: {', '.join(allowed)})")


def check_page_limit(doc: SourceDocument, count: int, limit: int | None) -> None:
    if count == 0:
        raise PermanentError(f"{doc.name}: the document has no pages")
    if limit is not None and count > limit:
        raise PermanentError(f"{doc.name}: {count} pages exceeds the limit of {limit} "
                             "(max_pages)")


def check_page_number(name: str, page: int, count: int) -> None:
    if page > count:
        raise PermanentError(f"{name}: page {page} does not exist "
                             f"(the document has {count} page{'s' if count != 1 else ''})")

