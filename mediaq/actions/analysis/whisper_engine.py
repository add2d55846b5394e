"""Speech to text with faster-whisper and a local model directory (never downloaded)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mediaq.actions.analysis.cues import Word
from mediaq.actions.analysis.pcm import SAMPLE_RATE, Int16Array, fixed_frames
from mediaq.actions.avio import ProgressClock
from mediaq.actions.base import ActionContext
from mediaq.errors import PermanentError, TransientError

# faster-whisper takes whole arrays; feed it blocks of this length (32 MB of float32).
WHISPER_BLOCK_SECONDS = 600.0


def whisper_installed() -> bool:
    try:
        whisper_module()
    except (ImportError, OSError):  # OSError: CTranslate2 without its shared libraries
        return False
    return True


def whisper_module() -> Any:
    # Imported on demand: it pulls in CTranslate2, which is slow to load and optional.
    return importlib.import_module("faster_whisper")



def whisper_words(ctx: ActionContext, path: Path, chunks: Iterable[Int16Array],
                  clock: ProgressClock, model_dir: Path,
                  language: str | None) -> tuple[list[Word], str]:
    """Words with timings from faster-whisper, block by block; the detected language
    (``language`` None: detected from the first block)."""
    model = _load_whisper(path, str(model_dir))
    words: list[Word] = []
    offset = 0.0
    for block in fixed_frames(chunks, int(WHISPER_BLOCK_SECONDS * SAMPLE_RATE)):
        audio = block.astype(np.float32) / 32768.0
        try:
            segments, info = model.transcribe(audio, language=language, word_timestamps=True)
            for segment in segments:  # a generator: the model runs as it is consumed
                words.extend(_segment_words(segment, offset))
                clock.tick(offset + float(segment.end))
        except ValueError as exc:  # e.g. a language code the model does not know
            raise PermanentError(f"{path.name}: whisper refused the input ({exc})") from None
        except RuntimeError as exc:
            raise _whisper_runtime_error(path, exc) from None
        # Later blocks keep the first block's language rather than re-detecting it.
        language = language or str(info.language)
        offset += block.size / SAMPLE_RATE
        ctx.check()
    return words, language or "und"


def _segment_words(segment: Any, offset: float) -> list[Word]:
    """Whisper's word timings, or the whole segment as one 'word' when it has none."""
    found = [Word(str(w.word).strip(), offset + float(w.start), offset + float(w.end))
             for w in (getattr(segment, "words", None) or [])]
    if not found and str(segment.text).strip():
        found = [Word(str(segment.text).strip(), offset + float(segment.start),
                      offset + float(segment.end))]
    return [word for word in found if word.text]


@functools.lru_cache(maxsize=1)
def _cached_whisper(model_dir: str) -> Any:
    # Given a directory, faster-whisper loads it as is and never contacts the hub.
    return whisper_module().WhisperModel(model_dir, device="auto", compute_type="default")


def _load_whisper(path: Path, model_dir: str) -> Any:
    try:
        return _cached_whisper(model_dir)
    except RuntimeError as exc:
        raise _whisper_runtime_error(path, exc) from None
    except (OSError, ValueError) as exc:
        raise PermanentError(f"{path.name}: cannot load the whisper model in {model_dir} "
                             f"({exc})") from None


def _whisper_runtime_error(path: Path, exc: RuntimeError) -> Exception:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "out of memory" in message.lower():
        return TransientError(f"{path.name}: whisper ran out of memory ({message})")
    return PermanentError(f"{path.name}: whisper failed ({message})")

