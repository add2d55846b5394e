"""``transcribe_audio``: offline speech to text, with pocketsphinx or, when a local
model directory is configured, faster-whisper. Models are never downloaded."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mediaq.actions import action
from mediaq.actions.analysis.cues import Cue, group_cues, srt, transcript_text, webvtt
from mediaq.actions.analysis.pcm import audio_delay, pcm_chunks, shifted
from mediaq.actions.analysis.sphinx_engine import pocketsphinx_words
from mediaq.actions.analysis.whisper_engine import whisper_installed, whisper_words
from mediaq.actions.avio import ProgressClock, media_duration, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.errors import PermanentError

POCKETSPHINX_LANGUAGES = ("en",)
WHISPER_DIR_ENV = "MEDIAQ_WHISPER_MODEL_DIR"


@dataclass(frozen=True)
class EngineChoice:
    name: str  # "pocketsphinx" | "whisper"
    language: str | None  # None: let the engine detect it
    model_dir: Path | None = None


@action("transcribe_audio", {
    "properties": {
        "engine": {"enum": ["auto", "pocketsphinx", "whisper"], "default": "auto"},
        "language": {"type": "string", "default": "auto",
                     "pattern": r"^(auto|[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?)$"},
        "model_dir": {"type": "string", "minLength": 1},
        "max_cue_seconds": {"type": "number", "minimum": 1, "maximum": 30, "default": 5.0},
    },
}, own_process=True)  # pocketsphinx decodes holding the GIL: the worker's leases go on
def transcribe_audio(ctx: ActionContext) -> ActionResult:
    """Transcribe speech offline into text, WebVTT and SRT sidecars."""
    path = ctx.source_path
    engine = choose_engine(ctx, path)
    started = time.monotonic()
    with open_media(path) as container, reading(path):
        if not container.streams.audio:
            raise PermanentError(f"{path.name}: has no audio stream")
        duration = media_duration(container)
        clock = ProgressClock(ctx, duration, f"transcribing ({engine.name})")
        chunks = pcm_chunks(container)
        if engine.name == "whisper":
            assert engine.model_dir is not None
            words, language = whisper_words(ctx, path, chunks, clock, engine.model_dir,
                                            engine.language)
        else:
            words, language = pocketsphinx_words(ctx, path, chunks, clock), "en"
        words = shifted(words, audio_delay(container))
    cues = group_cues(words, max_seconds=ctx.params["max_cue_seconds"], duration=duration)
    text = transcript_text(words)
    outputs = _write_sidecars(ctx, path, language, text, cues)
    seconds = time.monotonic() - started
    ctx.log(f"{path.name}: {len(words)} words in {len(cues)} cues with {engine.name} "
            f"({duration / max(seconds, 1e-6):.1f}x real time)")
    return ActionResult(outputs=outputs, data={
        "engine": engine.name, "language": language, "word_count": len(words),
        "duration": round(duration, 3), "text_preview": " ".join(text.split())[:200],
        "cue_count": len(cues), "realtime_factor": round(duration / max(seconds, 1e-6), 1),
    })


def _write_sidecars(ctx: ActionContext, path: Path, language: str, text: str,
                    cues: list[Cue]) -> list[OutputFile]:
    outputs = []
    for extension, body in (("txt", text + "\n" if text else ""), ("vtt", webvtt(cues)),
                            ("srt", srt(cues))):
        target = ctx.output_path(f"{path.stem}.{language}.{extension}")
        with writing(target):
            target.write_text(body, encoding="utf-8")
        outputs.append(OutputFile(target, role="sidecar",
                                  meta={"format": extension, "language": language}))
    return outputs



def choose_engine(ctx: ActionContext, path: Path) -> EngineChoice:
    """Which engine runs, from the parameters and what this worker has installed."""
    asked = ctx.params["engine"]
    language = _primary_language(ctx.params["language"])
    explicit_dir = ctx.params.get("model_dir")
    configured = explicit_dir or os.environ.get(WHISPER_DIR_ENV) or None
    if asked == "whisper" or (asked == "auto" and explicit_dir):
        return _whisper_choice(path, configured, language)
    if asked == "auto" and configured:
        if Path(configured).is_dir() and whisper_installed():
            return _whisper_choice(path, configured, language)
        ctx.log(f"{WHISPER_DIR_ENV}={configured} is unusable here (missing directory or no "
                f"faster-whisper); transcribing with pocketsphinx")
    if language not in (None, *POCKETSPHINX_LANGUAGES):
        raise PermanentError(
            f"{path.name}: language '{ctx.params['language']}' is not available with "
            f"pocketsphinx (available: {', '.join(POCKETSPHINX_LANGUAGES)}); other languages "
            f"need engine whisper with a local model directory")
    return EngineChoice(name="pocketsphinx", language="en")


def _primary_language(tag: str) -> str | None:
    """``"en-US"`` → ``"en"``; ``"auto"`` → None."""
    tag = tag.strip().lower()
    return None if tag == "auto" else re.split(r"[-_]", tag)[0]


def _whisper_choice(path: Path, configured: str | None, language: str | None) -> EngineChoice:
    """Refuse, before any decoding, a whisper run that could only fail or download."""
    if not configured:
        raise PermanentError(
            f"{path.name}: engine whisper needs a local model directory (parameter model_dir "
            f"or {WHISPER_DIR_ENV}); models are never downloaded")
    model_dir = Path(configured).expanduser()
    if not model_dir.is_dir():
        raise PermanentError(f"{path.name}: whisper model directory {model_dir} does not exist "
                             f"(models are never downloaded)")
    if not (model_dir / "model.bin").is_file():
        raise PermanentError(f"{path.name}: {model_dir} is not a faster-whisper model "
                             f"directory (no model.bin)")
    if not whisper_installed():
        raise PermanentError(f"{path.name}: engine whisper needs the faster-whisper package, "
                             f"which is not installed on this worker")
    return EngineChoice(name="whisper", language=language, model_dir=model_dir)

