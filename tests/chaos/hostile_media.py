"""Hostile media for the chaos suite: small valid seed files, deterministic mutations of
them, and a runner that puts each file through an action in a child process.

The runner (``python -m tests.chaos.hostile_media MANIFEST``) reads one JSON task per
line of MANIFEST and prints one JSON result per line, flushed, so that a crash of the
interpreter (a segfault in a decoder) is seen by the parent as a missing result: the
parent notes the crash against the file and starts a new runner after it.
"""

from __future__ import annotations

import io
import json
import random
import re
import sys
import time
import traceback
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

# --------------------------------------------------------------------------- seeds


def _gradient(size: tuple[int, int], i: int) -> Any:
    img = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    img[:, :, 0] = (np.arange(size[0]) * 4 + i * 16) % 256
    img[:, :, 1] = (np.arange(size[1])[:, None] * 5) % 256
    img[:, :, 2] = 128
    return img


def _encode_frames(out: Any, stream: Any, images: Iterable[Any], rate: int) -> None:
    """RGB arrays as frames 0, 1, 2… at ``rate``, encoded and muxed, then flushed."""
    for i, img in enumerate(images):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def _video(path: Path, fmt: str, vcodec: str, acodec: str | None, *, frames: int = 12,
           size: tuple[int, int] = (64, 48), rate: int = 12) -> None:
    with av.open(str(path), mode="w", format=fmt) as out:
        v: Any = out.add_stream(vcodec, rate=rate)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        if vcodec == "libx264":
            v.options = {"preset": "ultrafast", "g": "4"}
        a: Any = None
        if acodec:
            a = out.add_stream(acodec, rate=16000 if acodec != "libopus" else 48000)
            a.layout = "mono"
        _encode_frames(out, v, (_gradient(size, i) for i in range(frames)), rate)
        if a is not None:
            rate_a = a.codec_context.sample_rate
            frame_size = a.codec_context.frame_size or 1024
            total = rate_a * frames // rate
            t = 0
            fmt_a = a.codec_context.format.name
            while t < total:
                n = min(frame_size, total - t)
                samples = (np.sin(np.arange(t, t + n) * 2 * np.pi * 440 / rate_a) * 0.3)
                if fmt_a.startswith("s16"):
                    data = (samples * 32767).astype(np.int16).reshape(1, -1)
                    af = av.AudioFrame.from_ndarray(data, format="s16p" if fmt_a == "s16p"
                                                    else "s16", layout="mono")
                else:
                    data = samples.astype(np.float32).reshape(1, -1)
                    af = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
                af.sample_rate = rate_a
                af.pts = t
                af.time_base = Fraction(1, rate_a)
                for packet in a.encode(af):
                    out.mux(packet)
                t += n
            for packet in a.encode(None):
                out.mux(packet)


def _picture(size: tuple[int, int] = (64, 48)) -> Image.Image:
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, :, 0] = (np.arange(w) * 4) % 256
    arr[:, :, 1] = (np.arange(h)[:, None] * 5) % 256
    arr[:, :, 2] = np.random.default_rng(7).integers(0, 255, (h, w), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def minimal_pdf(text: str = "Hello mediaq", pages: int = 2) -> bytes:
    """A small, valid PDF with a text line per page (written by hand, exact xref)."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    font_id = 3 + 2 * pages
    for i in range(pages):
        content = f"BT /F1 18 Tf 40 100 Td ({text} page {i + 1}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] "
                       f"/Resources << /Font << /F1 {font_id} 0 R >> >> "
                       f"/Contents {4 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n"
                       + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n"
              f"%%EOF\n".encode())
    return out.getvalue()


KINDS = ("mp4", "mkv", "jpg", "png", "webp", "pdf")


def make_seeds(folder: Path) -> dict[str, bytes]:
    """One small valid file per kind, as bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    _video(folder / "seed.mp4", "mp4", "libx264", "aac")
    _video(folder / "seed.mkv", "matroska", "libx264", "libopus")
    pic = _picture()
    for ext, fmt, extra in (("jpg", "JPEG", {"quality": 85}), ("png", "PNG", {}),
                            ("webp", "WEBP", {"quality": 80})):
        pic.save(folder / f"seed.{ext}", fmt, **extra)
    (folder / "seed.pdf").write_bytes(minimal_pdf())
    return {kind: (folder / f"seed.{kind}").read_bytes() for kind in KINDS}


# --------------------------------------------------------------------------- mutations


def mutate(data: bytes, seed: int) -> tuple[bytes, str]:
    """A deterministic mutation of ``data``; the bytes and a short description."""
    rng = random.Random(seed)
    buf = bytearray(data)
    kind = rng.choice(("truncate", "bitflip", "bitflip", "header", "overwrite",
                       "bigint", "splice", "combo"))
    ops = [kind] if kind != "combo" else rng.sample(("truncate", "bitflip", "header",
                                                     "overwrite", "bigint", "splice"), 2)
    for op in ops:
        if not buf:
            break
        n = len(buf)
        if op == "truncate":
            buf = buf[:rng.randrange(0, n)]
        elif op == "bitflip":
            for _ in range(rng.randint(1, 24)):
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == "header":  # the structures that size and describe everything else
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(min(n, 512))
                buf[i] = rng.randrange(256)
        elif op == "overwrite":
            start = rng.randrange(n)
            length = rng.randint(1, 64)
            buf[start:start + length] = bytes(rng.randrange(256) for _ in range(length))
        elif op == "bigint":  # size and count fields claiming huge values
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(max(n - 4, 1))
                buf[i:i + 4] = rng.choice((b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                                           b"\x00\x00\x00\x00", b"\x80\x00\x00\x00"))
        elif op == "splice":  # a chunk repeated or cut out
            a = rng.randrange(n)
            b = min(n, a + rng.randint(1, 2048))
            if rng.random() < 0.5:
                buf[a:a] = buf[a:b]
            else:
                del buf[a:b]
    return bytes(buf), "+".join(ops)


# --------------------------------------------------------------------------- actions

# Which actions each kind goes through: a validation and a conversion/transcode.
PLAN: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "mp4": [("validate_video", {}), ("transcode_video", {"resolution": "32x24", "crf": 40,
                                                         "preset": "ultrafast"})],
    "mkv": [("validate_video", {}), ("transcode_video", {"resolution": "32x24", "crf": 40,
                                                         "preset": "ultrafast"})],
    "jpg": [("validate_image", {}), ("convert_format", {"format": "png"})],
    "png": [("validate_image", {}), ("convert_format", {"format": "webp"})],
    "webp": [("validate_image", {}), ("convert_format", {"format": "jpeg"})],
    "pdf": [("validate_document", {}), ("convert_document", {"format": "txt"})],
}

# The reasons a hostile input may fail with, after the file name and any details in
# brackets are taken off (see :func:`reason_shape`). Anything else is a finding.
KNOWN_REASONS = (
    r"corrupt or unsupported media", r"cannot be decoded", r"not a supported audio or video",
    r"has no video stream", r"has no duration", r"truncated", r"no decodable frame",
    r"the video stream has no decodable frame", r"corrupt image", r"truncated image",
    r"pixels exceeds the limit", r"not a supported image", r"not an image",
    r"not a supported document", r"corrupt PDF", r"encrypted", r"password",
    r"file is empty", r"is longer than the limit", r"video codec .* is not allowed",
    r"not a PDF", r"has no pages", r"damaged", r"cannot be read", r"unsupported",
    r"no frame", r"frames? exceeds", r"too many", r"is not allowed",
    r"out of memory while decoding",  # transient: FFmpeg's ENOMEM for a huge claimed size
    r"not a valid \w+ file",  # FFmpeg's "Invalid data found when processing input"
    r"compression is not supported", r"PNG text chunks? too large",
)
_KNOWN = re.compile("|".join(KNOWN_REASONS), re.IGNORECASE)


def reason_shape(message: str, name: str) -> str:
    """A failure message without the file's name and bracketed details: its kind."""
    text = message.replace(name, "").lstrip(": ").strip()
    text = re.sub(r"\([^()]*\)", "", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return re.sub(r"\s+", " ", text).strip()


def is_known_reason(message: str) -> bool:
    return bool(_KNOWN.search(message)) and "\n" not in message


def check_output(path: Path) -> str | None:
    """None if ``path`` decodes as what its extension says, else why not."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".mp4", ".mkv", ".webm", ".mov", ".m4a"):
            with av.open(str(path)) as container:
                frames = sum(1 for _ in container.decode(video=0))
            return None if frames > 0 else "no frames"
        if suffix in (".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif"):
            with Image.open(path) as im:
                im.load()
            return None
        if suffix == ".txt":
            path.read_text(encoding="utf-8")
            return None
        if suffix == ".pdf":
            import pypdfium2 as pdfium
            pdfium.PdfDocument(str(path)).close()
            return None
        if suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
            return None
    except Exception as exc:  # the judge: any failure to read back is the finding
        return f"{type(exc).__name__}: {exc}"
    return None


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    from mediaq.actions import ActionContext, get_action
    from mediaq.errors import InputRefused, PermanentError, TransientError

    source = Path(task["path"])
    stage = Path(task["stage"])
    action = get_action(task["action"])
    ctx = ActionContext(job_code="FUZZ", step_number=1, step_name=task["action"],
                        input_path=source, source_path=source,
                        params=action.validate(task["params"]), staging_dir=stage,
                        deadline=time.monotonic() + float(task.get("timeout", 30)))
    started = time.monotonic()
    result: dict[str, Any] = {"id": task["id"], "action": task["action"]}
    try:
        outcome = action.fn(ctx)
    except (PermanentError, TransientError, InputRefused) as exc:
        result.update(status="failed", error_class=type(exc).__name__,
                      message=exc.message)
    except Exception as exc:  # an unclassified error: the executor's "TypeError: ..."
        result.update(status="unclassified", message=f"{type(exc).__name__}: {exc}",
                      trace=traceback.format_exc(limit=6))
    else:
        bad = {str(o.staging_path.name): why for o in outcome.outputs
               if (why := check_output(o.staging_path)) is not None}
        result.update(status="completed", outputs=len(outcome.outputs), bad_outputs=bad)
    result["seconds"] = round(time.monotonic() - started, 3)
    for leftover in sorted(stage.glob("*"), reverse=True):
        if leftover.is_file():
            leftover.unlink()
    return result


def main(manifest: str) -> None:
    for line in Path(manifest).read_text().splitlines():
        task = json.loads(line)
        print(json.dumps(run_task(task)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])


def run_all(tasks: list[dict[str, Any]], workdir: Path, *, per_task_timeout: float = 60,
            workers: int = 2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``tasks`` in ``workers`` child runners; (results, crashes). A runner that dies
    (or hangs past ``per_task_timeout`` on one task) costs that task a crash entry and
    is replaced by a new runner for the rest of its share."""
    import subprocess
    import threading

    results: list[dict[str, Any]] = []
    crashes: list[dict[str, Any]] = []
    lock = threading.Lock()

    def drive(share: list[dict[str, Any]], slot: int) -> None:
        pending = list(share)
        while pending:
            manifest = workdir / f"manifest-{slot}.jsonl"
            manifest.write_text("".join(json.dumps(t) + "\n" for t in pending))
            proc = subprocess.Popen([sys.executable, "-m", "tests.chaos.hostile_media",
                                     str(manifest)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True,
                                    cwd=Path(__file__).resolve().parents[2])
            assert proc.stdout is not None
            done: list[dict[str, Any]] = []
            timer = threading.Timer(per_task_timeout, proc.kill)
            timer.start()
            for line in proc.stdout:
                timer.cancel()
                done.append(json.loads(line))
                timer = threading.Timer(per_task_timeout, proc.kill)
                timer.start()
            timer.cancel()
            code = proc.wait()
            with lock:
                results.extend(done)
            pending = pending[len(done):]
            if pending:
                with lock:
                    crashes.append({"task": pending[0], "returncode": code})
                pending = pending[1:]

    threads = [threading.Thread(target=drive, args=(tasks[i::workers], i))
               for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, crashes


def build_tasks(seeds: dict[str, bytes], count: int, folder: Path,
                timeout: float = 30) -> list[dict[str, Any]]:
    """``count`` mutated files, spread over the kinds, each with every action of its kind."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks: list[dict[str, Any]] = []
    for n in range(count):
        kind = KINDS[n % len(KINDS)]
        data, how = mutate(seeds[kind], seed=n)
        path = folder / f"fuzz{n:05d}.{kind}"
        path.write_bytes(data)
        for action, params in PLAN[kind]:
            tasks.append({"id": f"{n}:{action}", "file": n, "kind": kind, "mutation": how,
                          "path": str(path), "action": action, "params": params,
                          "stage": str(folder / "stage" / f"{n}-{action}"),
                          "timeout": timeout})
    return tasks


def huge_png(path: Path, width: int, height: int) -> None:
    """A valid RGBA PNG of ``width`` x ``height`` black pixels, a few hundred KB on disk
    (streamed row by row, never held in memory): decoding it takes width*height*4 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    packer = zlib.compressobj(1)
    row = b"\0" * (1 + 4 * width)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def noise_video(path: Path, seconds: float = 4, size: tuple[int, int] = (320, 240),
                rate: int = 24) -> None:
    """Random noise (costly to encode) as H.264 MP4."""
    rng = np.random.default_rng(11)
    with av.open(str(path), mode="w", format="mp4") as out:
        stream: Any = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast"}
        _encode_frames(out, stream, (rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                                     for _ in range(int(seconds * rate))), rate)
