"""The image and document workflows end to end: CLI submit, a worker process, outputs
judged with Pillow and pypdfium2, the worker's memory read from /proc."""

from __future__ import annotations

import json
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from mediaq.samples import generate_samples
from tests.helpers import MediaqEnv, wait_for
from tests.test_image_actions import png_header_only

pytestmark = pytest.mark.slow

PAGES = ("Quarterly report: revenue grew in every region.",
         "Appendix: the method and the raw figures.")


def reportlab_pdf(path: Path, pages: tuple[str, ...] = PAGES, **options: str) -> Path:
    """A text PDF written by reportlab, not by mediaq; one line of text per page."""
    pdf = canvas.Canvas(str(path), pagesize=A4, **options)  # type: ignore[arg-type]
    pdf.setTitle("Quarterly report")
    pdf.setAuthor("Finance team")
    for text in pages:
        pdf.setFont("Helvetica", 18)
        pdf.drawString(72, A4[1] - 96, text)
        pdf.showPage()
    pdf.save()
    return path


def step_data(mq: MediaqEnv, code: str) -> dict[int, dict[str, object]]:
    rows = mq.query(
        """SELECT ws.step_number, se.status, se.output_data
             FROM step_executions se JOIN workflow_steps ws ON ws.id = se.step_id
             JOIN workflow_jobs j ON j.id = se.job_id
            WHERE j.job_code = %s ORDER BY ws.step_number, se.id""", (code,))
    return {row["step_number"]: row for row in rows}


def test_document_workflow_extracts_text_renders_a_page_and_converts(mq: MediaqEnv) -> None:
    mq.seed()
    source = reportlab_pdf(mq.inputs / "report.pdf")
    code = mq.submit("WF-DOC-PROCESS", source)
    mq.run_burst(timeout=120)
    job = mq.job(code)
    assert job["status"] == "completed", job["error_message"]
    steps = step_data(mq, code)
    assert [steps[n]["status"] for n in range(1, 6)] == ["completed"] * 5
    validated = steps[1]["output_data"]
    assert validated["type"] == "pdf" and validated["page_count"] == 2  # type: ignore[index]
    assert validated["metadata"]["title"] == "Quarterly report"  # type: ignore[index]
    assert validated["metadata"]["author"] == "Finance team"  # type: ignore[index]

    outputs = {Path(o["path"]).name: o for o in job["output_metadata"]["outputs"]}
    full_text = (mq.outputs / code / "report.txt").read_text(encoding="utf-8")
    assert [page.strip() for page in full_text.split("\f")] == list(PAGES)
    pages = json.loads((mq.outputs / code / "report_pages.json").read_text(encoding="utf-8"))
    assert [(p["page"], p["text"].strip()) for p in pages] == [(1, PAGES[0]), (2, PAGES[1])]
    with Image.open(outputs["report_page1.png"]["path"]) as thumbnail:
        assert thumbnail.format == "PNG"
        assert thumbnail.width == 400
        assert thumbnail.height == pytest.approx(400 * A4[1] / A4[0], abs=1)
        grey = thumbnail.convert("L")
        # White paper with dark text in the top band, where the line was drawn.
        assert grey.getpixel((200, 500)) >= 250
        assert grey.crop((0, 30, 400, 70)).getextrema()[0] < 100
    # Convert to Text: the rendition (kept apart from extract_text's file of the same name).
    converted = [o for o in job["output_metadata"]["outputs"] if o["role"] == "rendition"]
    assert len(converted) == 1
    assert Path(converted[0]["path"]).read_text(encoding="utf-8") == full_text


def test_an_encrypted_pdf_fails_once_with_a_clear_reason(mq: MediaqEnv) -> None:
    mq.seed()
    source = reportlab_pdf(mq.inputs / "locked.pdf", encrypt="secret")
    with pytest.raises(pdfium.PdfiumError):  # the judge agrees it cannot be opened
        pdfium.PdfDocument(str(source))
    code = mq.submit("WF-DOC-PROCESS", source)
    mq.run_burst(timeout=60)
    job = mq.job(code)
    assert job["status"] == "failed"
    assert "encrypted PDF" in job["error_message"] and "\n" not in job["error_message"]
    attempts = mq.query(
        """SELECT se.status FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id
            WHERE j.job_code = %s""", (code,))
    assert attempts == [{"status": "failed"}]  # permanent: never retried
    assert not (mq.outputs / code).exists() or not any((mq.outputs / code).iterdir())


def peak_rss_kib(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc")


def test_a_png_claiming_20000x20000_fails_fast_without_growing_the_worker(
    mq: MediaqEnv,
) -> None:
    mq.seed()
    good = generate_samples(mq.inputs)["photo_small.png"]
    bombs = [png_header_only(mq.inputs / f"bomb{n}.png", 20_000, 20_000) for n in range(5)]
    assert all(bomb.stat().st_size == 68 for bomb in bombs)
    worker = mq.start_worker()
    # A good image first, so the worker's libraries and buffers are in place.
    warm = mq.submit("WF-IMAGE-PROCESS", good)
    wait_for(lambda: mq.job(warm)["status"] == "completed", timeout=90, message="warm-up job")
    baseline = peak_rss_kib(worker.pid)

    codes = [mq.submit("WF-IMAGE-PROCESS", bomb) for bomb in bombs]
    wait_for(lambda: all(mq.job(c)["status"] == "failed" for c in codes), timeout=60,
             message="bombs refused")
    growth_mib = (peak_rss_kib(worker.pid) - baseline) / 1024
    print(f"worker peak RSS growth over 5 bombs: {growth_mib:.1f} MiB")
    # Decoding one would take 20000 * 20000 * 3 bytes = 1.1 GiB.
    assert growth_mib < 32
    for code in codes:
        job = mq.job(code)
        assert "decompression bomb" in job["error_message"] or "pixels" in job["error_message"]
        assert "\n" not in job["error_message"]
        runs = mq.query(
            """SELECT se.status FROM step_executions se JOIN workflow_jobs j ON j.id = se.job_id
                WHERE j.job_code = %s""", (code,))
        assert runs == [{"status": "failed"}]  # refused at validation, permanent
    assert worker.poll() is None
