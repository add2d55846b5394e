"""The document actions: ``validate_document``, ``extract_text``, ``render_thumbnail``
and ``convert_document``."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.documents.docx_reader import docx_to_pdf, read_docx
from mediaq.actions.documents.identify import (
    KIND_LABELS,
    KINDS,
    DocumentText,
    SourceDocument,
    check_allowed,
    check_page_limit,
    check_page_number,
    identify,
)
from mediaq.actions.documents.office import (
    convert_with_libreoffice,
    libreoffice_binary,
    not_available,
)
from mediaq.actions.documents.pdf import (
    check_pdf_pages,
    open_pdf,
    pdf_metadata,
    pdf_page_count,
    pdf_version,
    read_pdf,
    render_pdf_page,
)
from mediaq.actions.documents.plain_text import (
    draw_text_page,
    read_plain_text,
    read_text,
    text_pages,
)
from mediaq.errors import TransientError
from mediaq.outputs import sha256_of

THUMBNAIL_FORMATS = {"png": ("PNG", "png"), "webp": ("WEBP", "webp"), "jpeg": ("JPEG", "jpg")}


def read_document(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
    """The text of ``doc``, page by page, reporting progress and honouring cancel."""
    if doc.kind == "pdf":
        return read_pdf(ctx, doc)
    if doc.kind == "docx":
        return read_docx(ctx, doc)
    return read_plain_text(ctx, doc)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


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
    check_allowed(doc, ctx.params.get("allowed_types"))
    limit = ctx.params.get("max_pages")
    data: dict[str, Any] = {"type": doc.kind}
    if doc.kind == "pdf":
        with open_pdf(doc.path, doc.name) as pdf:
            count = pdf_page_count(pdf)
            check_page_limit(doc, count, limit)
            check_pdf_pages(ctx, pdf, doc.name, count)
            data.update(page_count=count, metadata=pdf_metadata(pdf),
                        pdf_version=pdf_version(pdf))
    else:
        content = read_document(ctx, doc)
        check_page_limit(doc, len(content.pages), limit)
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
            pdf = docx_to_pdf(ctx, doc, Path(workdir), "rendering DOCX")
            return render_pdf_page(pdf, doc.name, page, width)
    pages = text_pages(read_text(doc))
    check_page_number(doc.name, page, len(pages))
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
        check_page_limit(doc, count, None)
    shutil.copyfile(doc.path, target)
    if sha256_of(target) != sha256_of(doc.path):
        raise TransientError(f"{doc.name}: the copy does not match the source (changed "
                             "while copying?)")
    return {"page_count": count}


def _office_to_pdf(ctx: ActionContext, doc: SourceDocument, target: Path) -> dict[str, Any]:
    purpose = f"converting {KIND_LABELS[doc.kind]} to PDF"
    with tempfile.TemporaryDirectory(prefix="mediaq-doc-") as scratch:
        workdir = Path(scratch)
        if doc.kind == "docx":
            produced = docx_to_pdf(ctx, doc, workdir, purpose)
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
