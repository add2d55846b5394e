"""DOCX text through python-docx (page breaks kept), and DOCX to PDF through LibreOffice.

Only opened after the ZIP's declared sizes passed the zip-bomb guard in
:func:`identify.identify`.
"""

from __future__ import annotations

import itertools
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import docx
from docx.document import Document as DocxDocument

from mediaq.actions.base import ActionContext
from mediaq.actions.documents.identify import DocumentText, SourceDocument, one_line
from mediaq.actions.documents.office import (
    convert_with_libreoffice,
    libreoffice_binary,
    not_available,
)
from mediaq.errors import PermanentError, TransientError

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
# Run and paragraph properties (tab stops, hidden flags) and section settings hold no text.
_DOCX_SKIPPED = frozenset({f"{_W}pPr", f"{_W}rPr", f"{_W}sectPr", _MC_FALLBACK})


def _open_docx(doc: SourceDocument) -> DocxDocument:
    try:
        return docx.Document(str(doc.path))
    except OSError as exc:
        if exc.errno is not None:
            raise TransientError(f"{doc.name}: read failed ({exc.strerror})") from None
        raise PermanentError(f"{doc.name}: corrupt DOCX ({one_line(exc)})") from None
    except Exception as exc:  # python-docx and lxml signal bad packages many ways
        raise PermanentError(f"{doc.name}: corrupt DOCX ({one_line(exc)})") from None


def read_docx(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
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


def docx_to_pdf(ctx: ActionContext, doc: SourceDocument, workdir: Path, purpose: str) -> Path:
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


