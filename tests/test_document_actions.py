"""The document actions, called as the engine calls them, on documents made by other tools.

PDFs come from reportlab (and Pillow, for an image-only one), DOCX files from python-docx,
hostile files are built byte by byte; outputs are judged with Pillow, pypdfium2 and json.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docx
import psutil
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
import pytest
from docx.enum.section import WD_SECTION
from docx.enum.text import WD_BREAK
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from mediaq.actions import ActionResult, get_action
from mediaq.errors import Cancelled, InputRefused, MediaqError, PermanentError
from tests.helpers import action_context as make_context
from tests.helpers import requires_tool, run_action

needs_soffice = requires_tool("soffice")

# Each page's text, drawn 300 pt lower on each page so every page looks different.
PDF_PAGES = ("Alpha harbour page one", "Bravo lighthouse page two", "Charlie estuary page three")
PDF_FONT_SIZE = 24
PDF_TOP_PT = 96  # the first page's baseline, from the top of the page
PDF_STEP_PT = 300

DOCX_PAGE_ONE = (
    "Expedition summary",
    "The river was crossed at dawn.",
    "Specimen",
    "Count",
    "Heron",
    "12",
    "End of the first page.",
)
DOCX_PAGE_TWO = ("Second day", "Camp moved north.")
DOCX_HIDDEN = "SECRET-HIDDEN-NOTE"

TEXT_PAGES = ("Première page\nligne deux — ünïcödé", "Deuxième page ✓", "Troisième 第三页")


# ------------------------------------------------------------------------ helpers


def outputs_by_name(result: ActionResult) -> dict[str, Path]:
    return {output.staging_path.name: output.staging_path for output in result.outputs}


def page_texts(result: ActionResult) -> list[str]:
    """The per-page texts of an extract_text result, read from its JSON file."""
    [pages_json] = [o.staging_path for o in result.outputs if o.staging_path.suffix == ".json"]
    pages = json.loads(pages_json.read_text(encoding="utf-8"))
    assert [page["page"] for page in pages] == list(range(1, len(pages) + 1))
    assert all(page["characters"] == len(page["text"]) for page in pages)
    return [page["text"] for page in pages]


def full_text(result: ActionResult) -> str:
    [text_file] = [o.staging_path for o in result.outputs if o.staging_path.suffix == ".txt"]
    return text_file.read_text(encoding="utf-8")


def only_image(result: ActionResult) -> Image.Image:
    [output] = result.outputs
    image = Image.open(output.staging_path)
    image.load()
    return image


def dark_box(image: Image.Image, threshold: int = 128) -> tuple[int, int, int, int] | None:
    """The bounding box of the pixels darker than ``threshold`` (None: there are none)."""
    gray = image.convert("L")
    return gray.point(lambda v: 255 if v < threshold else 0).getbbox()


def white_fraction(image: Image.Image) -> float:
    gray = image.convert("L")
    histogram = gray.histogram()
    return sum(histogram[250:]) / (gray.width * gray.height)


def pdf_text_pages(path: Path) -> list[str]:
    """The text of each page, read with pypdfium2 directly (the judge, not mediaq)."""
    pdf = pdfium.PdfDocument(str(path))
    try:
        texts = []
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            texts.append(str(textpage.get_text_range()).replace("\r\n", "\n"))
            textpage.close()
            page.close()
        return texts
    finally:
        pdf.close()


def assert_one_line_error(exc: BaseException, source: Path, *fragments: str) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{source.name}:"), message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message


# ----------------------------------------------------------------------- the corpus


def reportlab_pdf(path: Path, pages: tuple[str, ...] = PDF_PAGES, **options: Any) -> Path:
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1, **options)
    pdf.setTitle("Harbour survey")
    pdf.setAuthor("Grace Hopper")
    for index, text in enumerate(pages):
        pdf.setFont("Helvetica", PDF_FONT_SIZE)
        pdf.drawString(72, A4[1] - PDF_TOP_PT - PDF_STEP_PT * index, text)
        pdf.showPage()
    pdf.save()
    return path


def python_docx(path: Path) -> Path:
    document = docx.Document()
    document.core_properties.title = "Field notes"
    document.core_properties.author = "Ada Lovelace"
    document.add_heading(DOCX_PAGE_ONE[0], level=1)
    paragraph = document.add_paragraph(DOCX_PAGE_ONE[1])
    paragraph.add_run(f" {DOCX_HIDDEN}").font.hidden = True
    table = document.add_table(rows=2, cols=2)
    for row, cells in enumerate((DOCX_PAGE_ONE[2:4], DOCX_PAGE_ONE[4:6])):
        for column, text in enumerate(cells):
            table.cell(row, column).text = text
    paragraph = document.add_paragraph(DOCX_PAGE_ONE[6])
    paragraph.add_run().add_break(WD_BREAK.PAGE)
    document.add_heading(DOCX_PAGE_TWO[0], level=1)
    document.add_paragraph(DOCX_PAGE_TWO[1])
    document.save(str(path))
    return path


def raw_zip(path: Path, entries: list[tuple[str, bytes, int, int]]) -> Path:
    """A ZIP written by hand: (name, raw deflate data, CRC-32, declared size) per entry,
    so the declared sizes can say anything."""
    body, central = bytearray(), bytearray()
    for name, data, crc, size in entries:
        offset, encoded = len(body), name.encode()
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size,
                            len(encoded), 0) + encoded + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                               len(data), size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central),
                      len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path


def deflate_raw(content: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(content) + compressor.flush()


def deflated_zeros(mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``mib`` MiB of zeros, and their CRC-32, made cheaply: one
    MiB compressed with a full flush (so it refers to nothing before it), repeated."""
    one_mib = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(one_mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(one_mib, crc)
    return segment * mib + deflate_raw(b""), crc


def zeros_docx(path: Path, mib: int) -> Path:
    """An honest ZIP whose word/document.xml is ``mib`` MiB of zeros."""
    data, crc = deflated_zeros(mib)
    return raw_zip(path, [("word/document.xml", data, crc, mib << 20)])


def many_entries_docx(path: Path, count: int) -> Path:
    """A ZIP of ``count`` entries: a tiny word/document.xml and empty parts."""
    body = b"<w:document/>"
    empty = deflate_raw(b"")
    return raw_zip(path, [("word/document.xml", deflate_raw(body), zlib.crc32(body), len(body))]
                   + [(f"word/media/part{index}.xml", empty, 0, 0) for index in range(count - 1)])


def lying_docx(path: Path, real_docx: Path) -> Path:
    """A real DOCX whose word/document.xml declares its true size and CRC but holds a
    deflate stream of 32 MiB of zeros."""
    entries = []
    with zipfile.ZipFile(real_docx) as archive:
        for info in archive.infolist():
            content = archive.read(info)
            is_body = info.filename == "word/document.xml"
            data = deflated_zeros(32)[0] if is_body else deflate_raw(content)
            entries.append((info.filename, data, zlib.crc32(content), len(content)))
    return raw_zip(path, entries)


def docx_with_document_xml(path: Path, real_docx: Path, xml: str) -> Path:
    """A copy of ``real_docx`` whose word/document.xml is ``xml``."""
    with zipfile.ZipFile(real_docx) as source, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            is_body = info.filename == "word/document.xml"
            target.writestr(info.filename, xml if is_body else source.read(info))
    return path


# "Billion laughs": ten levels of ten-fold entity references, a 10^9-fold expansion.
LAUGHS_XML = (
    '<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY lol0 "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    + ']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("documents")
    files: dict[str, Path] = {
        "pdf": reportlab_pdf(root / "survey.pdf"),
        "pdf_b": reportlab_pdf(root / "other.pdf", ("Delta page one", "Echo page two")),
        "docx": python_docx(root / "notes.docx"),
        "text_utf8": root / "letters.txt",
        "text_utf16": root / "letters16.txt",
        "image_pdf": root / "scan.pdf",
    }
    files["text_utf8"].write_bytes("\f".join(TEXT_PAGES).replace("\n", "\r\n").encode() + b"\f")
    files["text_utf16"].write_bytes("\f".join(TEXT_PAGES).encode("utf-16"))
    scans = [Image.new("RGB", (300, 420), colour) for colour in ("#808080", "#204060")]
    scans[0].save(files["image_pdf"], "PDF", save_all=True, append_images=scans[1:])
    return files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    pdf_bytes = corpus["pdf"].read_bytes()
    files = {
        "bomb": zeros_docx(root / "bomb.docx", 300),
        "ratio_bomb": zeros_docx(root / "ratio.docx", 8),
        "many_entries": many_entries_docx(root / "entries.docx", 10_001),
        "lying": lying_docx(root / "lying.docx", corpus["docx"]),
        "laughs": docx_with_document_xml(root / "laughs.docx", corpus["docx"], LAUGHS_XML),
        "bad_xml": docx_with_document_xml(root / "bad.docx", corpus["docx"], "<w:document x"),
        "no_document_xml": root / "other.docx",
        "damaged_zip": root / "damaged.docx",
        "ole": root / "legacy.doc",
        "binary": root / "noise.bin",
        "empty": root / "empty.pdf",
        "missing": root / "missing.pdf",
        "directory": root / "folder.pdf",
        "encrypted": reportlab_pdf(root / "locked.pdf", encrypt="secret"),
        "truncated": root / "half.pdf",
        "no_eof": root / "no_eof.pdf",
        "garbage": root / "garbage.pdf",
    }
    with zipfile.ZipFile(files["no_document_xml"], "w") as archive:
        archive.writestr("readme.txt", "not a word document")
    files["damaged_zip"].write_bytes(b"PK\x03\x04" + random.Random(3).randbytes(2000))
    files["ole"].write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + bytes(4096))
    files["binary"].write_bytes(random.Random(1).randbytes(4096))
    files["empty"].write_bytes(b"")
    files["directory"].mkdir()
    files["truncated"].write_bytes(pdf_bytes[: len(pdf_bytes) // 2])
    files["no_eof"].write_bytes(pdf_bytes[: pdf_bytes.rindex(b"%%EOF")])
    files["garbage"].write_bytes(b"%PDF-1.7\n" + random.Random(2).randbytes(4000))
    return files


# ------------------------------------------------------------------------------ PDF


def test_validate_pdf_counts_pages_and_reads_metadata(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    result = run_action("validate_document", corpus["pdf"], tmp_path)
    assert result.outputs == []
    data = result.data
    assert data["type"] == "pdf"
    assert data["page_count"] == 3
    assert data["metadata"]["title"] == "Harbour survey"
    assert data["metadata"]["author"] == "Grace Hopper"
    assert data["metadata"]["created"] == "2000-01-01T00:00:00+00:00"  # reportlab invariant
    assert data["pdf_version"] == "1.3"
    assert data["size_bytes"] == corpus["pdf"].stat().st_size


def test_validate_enforces_max_pages_and_allowed_types(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    assert run_action("validate_document", corpus["pdf"], tmp_path, max_pages=3).data[
        "page_count"
    ] == 3
    with pytest.raises(PermanentError) as too_long:
        run_action("validate_document", corpus["pdf"], tmp_path, max_pages=2)
    assert_one_line_error(too_long.value, corpus["pdf"], "3 pages exceeds the limit of 2")
    with pytest.raises(PermanentError) as not_allowed:
        run_action("validate_document", corpus["pdf"], tmp_path, allowed_types=["docx", "text"])
    assert_one_line_error(not_allowed.value, corpus["pdf"], "PDF documents are not allowed")


def test_extract_text_from_pdf_page_by_page(corpus: dict[str, Path], tmp_path: Path) -> None:
    stages: list[str | None] = []
    ctx = make_context("extract_text", corpus["pdf"], tmp_path, {},
                       on_progress=lambda _fraction, stage: stages.append(stage))
    result = get_action("extract_text").fn(ctx)
    assert sorted(outputs_by_name(result)) == ["survey.txt", "survey_pages.json"]
    assert page_texts(result) == list(PDF_PAGES)
    assert full_text(result) == "\f".join(PDF_PAGES) + "\n"
    assert result.data["page_count"] == 3
    assert result.data["characters"] == sum(len(text) for text in PDF_PAGES)
    assert result.data["words"] == 12
    assert result.data["metadata"]["title"] == "Harbour survey"
    assert {f"reading page {n}/3" for n in (1, 2, 3)} <= set(stages)


def test_cancel_between_pdf_pages_stops_extraction(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    cancel = threading.Event()

    def on_progress(_fraction: float, stage: str | None) -> None:
        if stage == "reading page 2/3":
            cancel.set()

    ctx = make_context("extract_text", corpus["pdf"], tmp_path, {}, cancel_event=cancel,
                       on_progress=on_progress)
    with pytest.raises(Cancelled):
        get_action("extract_text").fn(ctx)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_image_only_pdf_extracts_no_text_and_says_so(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    logs: list[str] = []
    ctx = make_context("extract_text", corpus["image_pdf"], tmp_path, {}, on_log=logs.append)
    result = get_action("extract_text").fn(ctx)
    assert result.data["page_count"] == 2
    assert result.data["characters"] == 0
    assert result.data["pages_with_text"] == 0
    assert page_texts(result) == ["", ""]
    assert len(logs) == 1 and "no text layer" in logs[0] and logs[0].startswith("scan.pdf")


def expected_band(page_index: int, scale: float) -> tuple[float, float]:
    """Rows (in pixels) the text of page ``page_index`` may cover, ascender to descender."""
    baseline = PDF_TOP_PT + PDF_STEP_PT * page_index
    return (baseline - PDF_FONT_SIZE) * scale - 2, (baseline + PDF_FONT_SIZE * 0.3) * scale + 2


def test_render_pdf_thumbnail_shows_the_chosen_page(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    scale = 400 / A4[0]
    images = []
    for page in (1, 2):
        result = run_action("render_thumbnail", corpus["pdf"], tmp_path / str(page), page=page)
        [output] = result.outputs
        assert output.role == "thumbnail"
        assert output.staging_path.name == f"survey_page{page}.png"
        image = only_image(result)
        assert image.format == "PNG"
        assert image.width == 400
        assert abs(image.height - 400 * A4[1] / A4[0]) <= 1
        assert result.data == {"width": 400, "height": image.height, "format": "png",
                               "page": page}
        # White paper, with the page's text (and nothing else) drawn where reportlab put it.
        assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 255)
        assert image.convert("RGB").getpixel((399, image.height - 1)) == (255, 255, 255)
        assert white_fraction(image) > 0.95
        box = dark_box(image)
        assert box is not None
        top, bottom = expected_band(page - 1, scale)
        assert top <= box[1] and box[3] <= bottom, (box, top, bottom)
        assert 72 * scale - 3 <= box[0] <= 72 * scale + 3
        images.append(image.convert("L"))
    assert images[0].tobytes() != images[1].tobytes()


@pytest.mark.parametrize(("fmt", "pil_format", "extension"),
                         [("webp", "WEBP", "webp"), ("jpeg", "JPEG", "jpg")])
def test_render_pdf_thumbnail_in_lossy_formats(
    corpus: dict[str, Path], tmp_path: Path, fmt: str, pil_format: str, extension: str
) -> None:
    result = run_action("render_thumbnail", corpus["pdf"], tmp_path, page=3, width=300,
                        format=fmt)
    [output] = result.outputs
    assert output.staging_path.name == f"survey_page3.{extension}"
    image = only_image(result)
    assert image.format == pil_format
    assert image.width == 300
    assert abs(image.height - 300 * A4[1] / A4[0]) <= 1
    box = dark_box(image, threshold=96)
    assert box is not None
    top, bottom = expected_band(2, 300 / A4[0])
    assert top - 2 <= box[1] and box[3] <= bottom + 2


def test_render_a_page_beyond_the_end_names_the_page_count(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(PermanentError) as caught:
        run_action("render_thumbnail", corpus["pdf"], tmp_path, page=4)
    assert_one_line_error(caught.value, corpus["pdf"], "page 4 does not exist",
                          "has 3 pages")
    assert not list(tmp_path.iterdir())


def test_a_very_tall_page_is_cut_keeping_its_top(tmp_path: Path) -> None:
    source = tmp_path / "receipt.pdf"
    pdf = canvas.Canvas(str(source), pagesize=(200, 14_400))  # 200 pt wide, 14,400 pt tall
    pdf.setFont("Helvetica", 20)
    pdf.drawString(10, 14_400 - 40, "TOP")
    pdf.drawString(10, 30, "BOTTOM")
    pdf.showPage()
    pdf.save()
    result = run_action("render_thumbnail", source, tmp_path / "out", width=400)
    image = only_image(result)
    assert image.size == (400, 16_000)  # 2 px per point would make it 28,800 px tall
    box = dark_box(image)
    assert box is not None
    assert box[1] < 80 and box[3] < 100  # "TOP" is there, "BOTTOM" was cut off


@pytest.fixture
def pdfium_overlaps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every pdfium C call made while another thread was inside pdfium (pypdfium2 looks
    its functions up on ``pypdfium2.raw`` at each call, so wrapping them there sees all).
    Each call lingers a moment, so unserialised callers would overlap for sure."""
    overlaps: list[str] = []
    guard = threading.Lock()
    inside: dict[int, int] = {}  # thread id -> depth of pdfium calls

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            me = threading.get_ident()
            with guard:
                if any(depth for thread, depth in inside.items() if thread != me):
                    overlaps.append(name)
                inside[me] = inside.get(me, 0) + 1
            try:
                time.sleep(0.0005)
                return fn(*args)
            finally:
                with guard:
                    inside[me] -= 1
        return call

    for name in dir(pdfium_raw):
        fn = getattr(pdfium_raw, name)
        if name.startswith(("FPDF", "FORM_")) and isinstance(fn, ctypes._CFuncPtr):
            monkeypatch.setattr(pdfium_raw, name, wrap(name, fn))
    return overlaps


def test_concurrent_pdf_jobs_in_threads_take_turns_in_pdfium(
    corpus: dict[str, Path], tmp_path: Path, pdfium_overlaps: list[str]
) -> None:
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    texts: list[list[str]] = []
    sizes: list[tuple[int, int]] = []

    def extract() -> None:
        start.wait()
        for round_number in range(4):
            result = run_action("extract_text", corpus["pdf"], tmp_path / f"e{round_number}")
            texts.append(page_texts(result))

    def render() -> None:
        start.wait()
        for round_number in range(4):
            result = run_action("render_thumbnail", corpus["pdf_b"], tmp_path / f"r{round_number}",
                                page=2, width=600)
            image = only_image(result)
            assert dark_box(image) is not None
            sizes.append(image.size)

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
        return run

    threads = [threading.Thread(target=guarded(fn)) for fn in (extract, render)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert texts == [list(PDF_PAGES)] * 4
    assert len(sizes) == 4 and all(size == sizes[0] and size[0] == 600 for size in sizes)
    assert pdfium_overlaps == []


def test_pdf_to_pdf_is_a_verified_copy(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("convert_format", corpus["pdf"], tmp_path, format="pdf")
    [output] = result.outputs
    assert output.staging_path.name == "survey.pdf"
    assert output.staging_path.read_bytes() == corpus["pdf"].read_bytes()
    assert result.data["page_count"] == 3
    assert result.data["source_type"] == "pdf"


@pytest.mark.parametrize("action", ["convert_format", "convert_document"])
@pytest.mark.parametrize("kind", ["pdf", "docx", "text_utf16"])
def test_convert_to_txt_equals_the_extracted_text(
    corpus: dict[str, Path], tmp_path: Path, action: str, kind: str
) -> None:
    extracted = run_action("extract_text", corpus[kind], tmp_path / "extract")
    converted = run_action(action, corpus[kind], tmp_path / "convert", format="txt")
    [output] = converted.outputs
    assert output.staging_path.suffix == ".txt"
    assert output.staging_path.read_text(encoding="utf-8") == full_text(extracted)
    assert converted.data["page_count"] == extracted.data["page_count"]
    assert converted.data["characters"] == extracted.data["characters"]


# ----------------------------------------------------------------------------- DOCX


def test_validate_docx(corpus: dict[str, Path], tmp_path: Path) -> None:
    data = run_action("validate_document", corpus["docx"], tmp_path).data
    assert data["type"] == "docx"
    assert data["page_count"] == 2
    assert data["metadata"]["title"] == "Field notes"
    assert data["metadata"]["author"] == "Ada Lovelace"
    assert data["size_bytes"] == corpus["docx"].stat().st_size


def test_extract_docx_text_splits_pages_at_the_break(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    result = run_action("extract_text", corpus["docx"], tmp_path)
    pages = page_texts(result)
    assert len(pages) == 2
    assert pages[0].splitlines() == list(DOCX_PAGE_ONE)  # headings, paragraphs, table cells
    assert pages[1].strip().splitlines() == list(DOCX_PAGE_TWO)
    assert DOCX_HIDDEN not in full_text(result)
    assert full_text(result) == "\f".join(pages) + "\n"
    assert result.data["metadata"]["author"] == "Ada Lovelace"
    assert result.data["pages_with_text"] == 2


def test_docx_page_break_before_starts_a_page(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Preface")
    chapter = document.add_paragraph("Chapter one")
    chapter.paragraph_format.page_break_before = True
    document.add_paragraph("It began.")
    source = tmp_path / "book.docx"
    document.save(str(source))
    result = run_action("extract_text", source, tmp_path / "out")
    assert page_texts(result) == ["Preface", "Chapter one\nIt began."]


def test_docx_section_breaks_to_a_new_page_start_a_page(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Section one")
    document.add_section(WD_SECTION.NEW_PAGE)
    document.add_paragraph("Section two")
    document.add_section(WD_SECTION.CONTINUOUS)  # same page, as Word and LibreOffice lay out
    document.add_paragraph("Still page two")
    document.add_section(WD_SECTION.ODD_PAGE)
    document.add_paragraph("Section four")
    source = tmp_path / "sections.docx"
    document.save(str(source))
    assert run_action("validate_document", source, tmp_path / "v").data["page_count"] == 3
    pages = page_texts(run_action("extract_text", source, tmp_path / "e"))
    assert [page.split() for page in pages] == [
        ["Section", "one"], ["Section", "two", "Still", "page", "two"], ["Section", "four"],
    ]


# ----------------------------------------------------------------------------- text


@pytest.mark.parametrize("kind", ["text_utf8", "text_utf16"])
def test_plain_text_pages_split_at_form_feeds(
    corpus: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    validated = run_action("validate_document", corpus[kind], tmp_path / "v").data
    assert validated["type"] == "text"
    assert validated["page_count"] == 3  # the final form feed ends the last page
    assert validated["encoding"] == ("utf-8" if kind == "text_utf8" else "utf-16")
    extracted = run_action("extract_text", corpus[kind], tmp_path / "e")
    assert page_texts(extracted) == list(TEXT_PAGES)  # CRLF read as LF
    assert extracted.data["metadata"] == {}


def test_utf16_big_endian_and_utf8_bom_text(tmp_path: Path) -> None:
    sources = {
        "be.txt": "\ufeffOne\fTwo".encode("utf-16-be"),
        "bom8.txt": "\ufeffOne\fTwo".encode(),
    }
    for name, content in sources.items():
        (tmp_path / name).write_bytes(content)
        result = run_action("extract_text", tmp_path / name, tmp_path / f"{name}.out")
        assert page_texts(result) == ["One", "Two"], name


def test_text_starting_with_pk_is_text_not_a_zip(tmp_path: Path) -> None:
    source = tmp_path / "pki.txt"
    source.write_text("PKI rollout plan\nStep one: issue certificates.\n", encoding="utf-8")
    data = run_action("validate_document", source, tmp_path / "out").data
    assert data["type"] == "text"
    assert data["page_count"] == 1


def test_long_utf8_text_with_a_character_across_the_sniff_boundary(tmp_path: Path) -> None:
    source = tmp_path / "long.txt"
    text = "é" * 40_000 + "\fend"  # 80 kB: the 64 KiB sniff ends inside characters
    source.write_text(text, encoding="utf-8")
    result = run_action("extract_text", source, tmp_path / "out")
    assert page_texts(result) == ["é" * 40_000, "end"]


@pytest.mark.parametrize(("tail", "fragment"), [(b"\xff\xfe", "invalid UTF-8 text at byte"),
                                                (b"\x00", "NUL bytes")])
@pytest.mark.parametrize("action", ["validate_document", "extract_text", "render_thumbnail"])
def test_binary_data_past_the_sniffed_head_is_refused(
    tmp_path: Path, tail: bytes, fragment: str, action: str
) -> None:
    source = tmp_path / "mostly.txt"
    source.write_bytes(b"plain words " * 8000 + tail)  # 96 kB of text, then binary
    with pytest.raises(PermanentError) as caught:
        run_action(action, source, tmp_path / "out")
    assert_one_line_error(caught.value, source, fragment)


def test_render_text_page_draws_its_text(corpus: dict[str, Path], tmp_path: Path) -> None:
    images = []
    for page in (1, 2):
        result = run_action("render_thumbnail", corpus["text_utf16"], tmp_path / str(page),
                            page=page)
        image = only_image(result)
        assert image.size == (400, round(400 * 297 / 210))
        assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 255)
        box = dark_box(image)
        assert box is not None
        assert box[1] < image.height // 4  # text starts at the top of the page
        assert white_fraction(image) > 0.9
        images.append(image.convert("L").tobytes())
    assert images[0] != images[1]
    with pytest.raises(PermanentError) as caught:
        run_action("render_thumbnail", corpus["text_utf16"], tmp_path / "9", page=9)
    assert_one_line_error(caught.value, corpus["text_utf16"], "page 9 does not exist",
                          "has 3 pages")


page_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\f\x00\ufeff"),
    max_size=60,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages=st.lists(page_text, min_size=1, max_size=4),
       encoding=st.sampled_from(["utf-8", "utf-16"]))
def test_text_pages_round_trip(tmp_path: Path, pages: list[str], encoding: str) -> None:
    assume(pages[-1].strip())  # a blank last page after a form feed is no page at all
    source = tmp_path / "pages.txt"
    content = "\f".join(pages).encode(encoding)
    # Sniffed as PDF or ZIP (a documented limit of reading the kind from the content).
    assume(b"%PDF-" not in content[:1024] and not content.startswith(b"PK\x03\x04"))
    source.write_bytes(content)
    staging = tmp_path / f"out-{time.monotonic_ns()}"
    result = run_action("extract_text", source, staging)
    expected = [page.replace("\r\n", "\n").replace("\r", "\n") for page in pages]
    assert page_texts(result) == expected
    written = full_text(result)
    assert written.removesuffix("\n") == "\f".join(expected).removesuffix("\n")


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(
    st.binary(min_size=1, max_size=300),
    st.binary(max_size=300).map(lambda tail: b"%PDF-1.4\n" + tail),
    st.binary(max_size=300).map(lambda tail: b"PK\x03\x04" + tail),
))
def test_arbitrary_bytes_succeed_or_fail_with_one_line(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "fuzz.bin"
    source.write_bytes(content)
    try:
        data = run_action("validate_document", source, tmp_path / "out").data
    except MediaqError as exc:
        assert isinstance(exc, PermanentError)
        assert_one_line_error(exc, source)
    else:
        assert data["type"] in ("pdf", "docx", "text")


# -------------------------------------------------------------------------- hostile


HOSTILE = {
    "bomb": (PermanentError, ("zip bomb", "300 MiB")),
    "ratio_bomb": (PermanentError, ("zip bomb", "expands")),
    "many_entries": (PermanentError, ("zip bomb", "entries")),
    "lying": (PermanentError, ("corrupt DOCX",)),
    "laughs": (PermanentError, ("corrupt DOCX",)),
    "bad_xml": (PermanentError, ("corrupt DOCX",)),
    "no_document_xml": (PermanentError, ("without word/document.xml",)),
    "damaged_zip": (PermanentError, ("damaged ZIP",)),
    "ole": (PermanentError, ("OLE compound file",)),
    "binary": (PermanentError, ("not a supported document",)),
    "empty": (PermanentError, ("empty",)),
    "missing": (InputRefused, ("does not exist",)),
    "directory": (InputRefused, ("not a regular file",)),
    "encrypted": (PermanentError, ("encrypted", "password")),
    "truncated": (PermanentError, ("corrupt PDF",)),
    "no_eof": (PermanentError, ("truncated PDF",)),
    "garbage": (PermanentError, ("corrupt PDF",)),
}
HOSTILE_ACTIONS = [
    ("validate_document", {}),
    ("extract_text", {}),
    ("render_thumbnail", {}),
    ("convert_document", {"format": "txt"}),
    ("convert_format", {"format": "pdf"}),
]
# For a DOCX, these hand the file to LibreOffice instead of python-docx.
LIBREOFFICE_PATHS = [("render_thumbnail", {}), ("convert_format", {"format": "pdf"})]
# DOCX files only python-docx's parsing finds broken (their ZIP passes the guard).
BROKEN_INSIDE = ("lying", "laughs", "bad_xml")


@pytest.mark.parametrize(("case", "action", "params"), [
    pytest.param(case, action, params, id=f"{case}-{action}")
    for case in sorted(HOSTILE)
    for action, params in HOSTILE_ACTIONS
    # LibreOffice, not python-docx, reads a DOCX on these paths: see the test further down.
    if not (case in BROKEN_INSIDE and (action, params) in LIBREOFFICE_PATHS)
])
def test_hostile_files_fail_with_one_clear_line(
    hostile: dict[str, Path], tmp_path: Path, case: str, action: str, params: dict[str, Any]
) -> None:
    error, fragments = HOSTILE[case]
    with pytest.raises(error) as caught:
        run_action(action, hostile[case], tmp_path, **params)
    assert_one_line_error(caught.value, hostile[case], *fragments)
    assert not list(tmp_path.iterdir())


def test_the_zip_bombs_are_real_ones(hostile: dict[str, Path]) -> None:
    """Honest ZIPs, built the same way: the small one inflates to its declared 8 MiB of
    zeros (zipfile checks the CRC), the big one declares 300 MiB."""
    inflated = 0
    with zipfile.ZipFile(hostile["ratio_bomb"]) as archive, \
            archive.open("word/document.xml") as entry:
        while chunk := entry.read(1 << 22):
            assert not chunk.strip(b"\0")
            inflated += len(chunk)
    assert inflated == 8 << 20
    with zipfile.ZipFile(hostile["bomb"]) as archive:
        assert [info.file_size for info in archive.infolist()] == [300 << 20]


@pytest.mark.parametrize("case", ["bomb", "ratio_bomb", "many_entries"])
def test_zip_bombs_are_refused_before_anything_is_inflated(
    hostile: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    assert hostile[case].stat().st_size < 2 * 1024 * 1024  # small on disk, huge inside

    opened: list[Any] = []

    def no_inflating(_archive: zipfile.ZipFile, name: Any, *_args: Any, **_kwargs: Any) -> Any:
        opened.append(name)
        raise OSError("not to be opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_inflating)
    with pytest.raises(PermanentError, match="refused as a possible zip bomb"):
        run_action("extract_text", hostile[case], tmp_path)
    assert opened == []


# ----------------------------------------------------------------------- LibreOffice


@needs_soffice
def test_docx_to_pdf_with_libreoffice(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = run_action("convert_format", corpus["docx"], tmp_path, format="pdf")
    [output] = result.outputs
    assert output.staging_path.name == "notes.pdf"
    assert result.data["page_count"] == 2 and result.data["source_type"] == "docx"
    pages = pdf_text_pages(output.staging_path)
    assert len(pages) == 2
    for paragraph in (*DOCX_PAGE_ONE[:2], DOCX_PAGE_ONE[6]):
        assert paragraph in pages[0]
    for paragraph in DOCX_PAGE_TWO:
        assert paragraph in pages[1]
    assert DOCX_HIDDEN not in "".join(pages)


@needs_soffice
def test_text_to_pdf_with_libreoffice_keeps_pages_and_characters(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    result = run_action("convert_document", corpus["text_utf16"], tmp_path, format="pdf")
    [output] = result.outputs
    assert output.staging_path.name == "letters16.pdf"
    assert result.data["page_count"] == 3  # form feeds became page breaks
    pages = pdf_text_pages(output.staging_path)
    assert len(pages) == 3
    # Accented Latin text (in every font) decoded from UTF-16 and on its own page.
    assert pages[0].startswith("Première page\nligne deux")
    assert pages[1].startswith("Deuxième page")
    assert pages[2].startswith("Troisième")


@needs_soffice
def test_render_docx_thumbnail_with_libreoffice(corpus: dict[str, Path], tmp_path: Path) -> None:
    section = docx.Document(str(corpus["docx"])).sections[0]
    assert section.page_width and section.page_height
    result = run_action("render_thumbnail", corpus["docx"], tmp_path, page=2)
    [output] = result.outputs
    assert output.staging_path.name == "notes_page2.png"
    image = only_image(result)
    assert image.width == 400
    assert abs(image.height - 400 * section.page_height / section.page_width) <= 2
    assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    box = dark_box(image)
    assert box is not None
    assert box[1] < image.height // 4  # the second page's heading, at its top
    assert white_fraction(image) > 0.9


@needs_soffice
def test_cancel_kills_libreoffice_and_all_it_started(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    cancel = threading.Event()
    me = psutil.Process()
    leaders: set[int] = set()  # what mediaq started: each one leads a process group
    seen: dict[int, psutil.Process] = {}
    names: set[str] = set()

    def look() -> None:
        leaders.update(child.pid for child in me.children())
        for child in me.children(recursive=True):
            seen.setdefault(child.pid, child)
            with contextlib.suppress(psutil.Error):
                names.add(child.name())

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cancel.is_set():
            look()
            if "soffice.bin" in names:  # the real office process, a grandchild
                time.sleep(0.1)
                look()
                break
            time.sleep(0.02)
        cancel.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    ctx = make_context("convert_document", corpus["docx"], tmp_path, {"format": "pdf"},
                       cancel_event=cancel)
    try:
        with pytest.raises(Cancelled):
            get_action("convert_document").fn(ctx)
    finally:
        cancel.set()
        watcher.join()
    assert "soffice.bin" in names, names
    deadline = time.monotonic() + 5
    while True:
        left = [proc for proc in psutil.process_iter() if _in_groups(proc, leaders)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == []
    assert not [proc for proc in seen.values() if proc.is_running() and not _zombie(proc)]
    assert not list(tmp_path.iterdir())


def _zombie(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def _in_groups(process: psutil.Process, groups: set[int]) -> bool:
    """Whether ``process`` is a live (non-zombie) member of one of the process ``groups``."""
    try:
        return os.getpgid(process.pid) in groups and not _zombie(process)
    except (ProcessLookupError, psutil.Error):
        return False


@pytest.mark.parametrize(("source", "action", "params"), [
    ("docx", "convert_document", {"format": "pdf"}),
    ("docx", "convert_format", {"format": "pdf"}),
    ("text_utf8", "convert_document", {"format": "pdf"}),
    ("docx", "render_thumbnail", {}),
])
def test_libreoffice_missing_is_a_clear_permanent_error(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    source: str, action: str, params: dict[str, Any]
) -> None:
    monkeypatch.setenv("MEDIAQ_SOFFICE", "/nonexistent/soffice")
    with pytest.raises(PermanentError) as caught:
        run_action(action, corpus[source], tmp_path, **params)
    assert_one_line_error(caught.value, corpus[source], "not available", "LibreOffice",
                          "MEDIAQ_SOFFICE")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("script", "reason"), [
    ('echo "javaldx: Could not find a Java Runtime Environment!"\n'
     'echo "Error: source file could not be loaded"\nexit 0',
     "(Error: source file could not be loaded)"),
    ("exit 81", "(exit status 81, no output)"),
])
def test_a_failed_libreoffice_conversion_is_one_line(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    script: str, reason: str
) -> None:
    fake = tmp_path / "bin" / "soffice"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MEDIAQ_SOFFICE", str(fake))
    with pytest.raises(PermanentError) as caught:
        run_action("convert_document", corpus["docx"], tmp_path / "out", format="pdf")
    assert_one_line_error(caught.value, corpus["docx"],
                          f"LibreOffice could not convert it to pdf {reason}")
    assert not list((tmp_path / "out").iterdir())


def test_what_does_not_need_libreoffice_works_without_it(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAQ_SOFFICE", "/nonexistent/soffice")
    assert run_action("extract_text", corpus["docx"], tmp_path / "e").data["page_count"] == 2
    assert run_action("convert_format", corpus["pdf"], tmp_path / "c", format="pdf").data[
        "page_count"
    ] == 3
