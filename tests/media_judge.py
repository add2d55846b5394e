"""Debian's ffmpeg and ffprobe as an independent source and judge of media (never the
engine's own path)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import requires_tool

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")

needs_ffmpeg = requires_tool("ffmpeg", "ffprobe")


def ffmpeg(*args: str | Path, timeout: float = 120) -> None:
    """Run the ffmpeg CLI quietly; fail the test with its error output."""
    assert FFMPEG is not None
    result = subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y",
                             *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"ffmpeg {' '.join(map(str, args))}:\n{result.stderr}")


def ffprobe(path: Path) -> dict[str, Any]:
    """ffprobe's view of ``path``: format and streams as JSON."""
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_format", "-show_streams",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return dict(json.loads(out))


def duration_of(path: Path) -> float:
    return float(ffprobe(path)["format"]["duration"])


def video_stream(path: Path) -> dict[str, Any]:
    return next(s for s in ffprobe(path)["streams"] if s["codec_type"] == "video")


def audio_stream(path: Path) -> dict[str, Any] | None:
    return next((s for s in ffprobe(path)["streams"] if s["codec_type"] == "audio"), None)


def decodes_fully(path: Path) -> bool:
    """Whether ffmpeg decodes the whole file without an error."""
    assert FFMPEG is not None
    result = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-f", "null",
                             "-"], capture_output=True, text=True, timeout=120)
    return result.returncode == 0 and not result.stderr.strip()
