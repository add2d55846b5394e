"""Plain text (UTF-8, or UTF-16 with a byte-order mark): reading it page by page,
and drawing a page as a picture."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont

from mediaq.actions.base import ActionContext
from mediaq.actions.documents.identify import DocumentText, SourceDocument, mib
from mediaq.errors import InputRefused, PermanentError

MAX_TEXT_BYTES = 64 * 1024 * 1024
A4_ASPECT = 297 / 210


def read_text(doc: SourceDocument) -> str:
    """The whole text of a plain-text source, newlines normalised to ``\\n``."""
    size = doc.path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise PermanentError(f"{doc.name}: text file too large ({mib(size)}, "
                             f"limit {mib(MAX_TEXT_BYTES)})")
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


def read_plain_text(ctx: ActionContext, doc: SourceDocument) -> DocumentText:
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


