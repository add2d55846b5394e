"""Analysis actions: shot boundaries (``detect_scenes``) and offline speech to text
(``transcribe_audio``).

Both stream their input, so memory stays flat however long it is. Scene detection
compares each decoded frame, shrunk to a thumbnail, with the one before it.
Transcription decodes the first audio stream to 16 kHz mono PCM and feeds it to
pocketsphinx (bundled US-English model) or, when a local model directory is
configured, to faster-whisper. Models are never downloaded at run time.
"""

from __future__ import annotations

import csv
import functools
import importlib
import io
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from av.audio.resampler import AudioResampler
from av.container import InputContainer

from mediaq.actions import action
from mediaq.actions.avio import ProgressClock, media_duration, open_media, reading, writing
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.actions.frames import decode_tolerantly
from mediaq.errors import PermanentError, TransientError

FloatArray = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


def _write_text(path: Path, text: str) -> None:
    with writing(path):
        path.write_text(text, encoding="utf-8")


# =========================================================================== scenes

# The score of a frame pair is the mean of two distances, each 0..1:
# - luma: mean absolute difference of the grey levels, scaled so that ~10 % of
#   full scale (a clear change of picture) already counts fully;
# - colour: half the L1 distance of 8x8x8-bin RGB histograms (1 = no colour in common).
# Motion moves pixels but keeps the palette, so it scores low on colour; a cut
# between similar-coloured shots still scores high on luma.
LUMA_SCALE = 3.0
HISTOGRAM_LEVEL_BITS = 3  # 8 levels per channel
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Thumb:
    """One analysed frame: its grey levels and colour histogram."""

    luma: FloatArray
    histogram: FloatArray


@dataclass(frozen=True)
class Cut:
    frame: int  # index of the first frame of the new scene
    time: float
    score: float


@dataclass(frozen=True)
class SceneScan:
    cuts: list[Cut]
    frames: int
    end: float  # seconds, end of the last frame
    fps: float
    seconds_spent: float


def thumb_of(rgb: npt.NDArray[np.uint8]) -> Thumb:
    """Grey levels and a normalised colour histogram of a small RGB frame."""
    luma = (rgb.astype(np.float32) @ _LUMA_WEIGHTS).astype(np.float32)
    levels = (rgb >> (8 - HISTOGRAM_LEVEL_BITS)).astype(np.intp)
    bits = HISTOGRAM_LEVEL_BITS
    bins = (levels[..., 0] << (2 * bits)) | (levels[..., 1] << bits) | levels[..., 2]
    counts = np.bincount(bins.ravel(), minlength=1 << (3 * bits))
    return Thumb(luma=luma, histogram=(counts / bins.size).astype(np.float32))


def change_score(before: Thumb, after: Thumb) -> float:
    """How different two frames look, 0 (identical) to 1 (nothing in common)."""
    luma = float(np.abs(after.luma - before.luma).mean()) / 255.0
    colour = float(np.abs(after.histogram - before.histogram).sum()) / 2.0
    return (min(1.0, LUMA_SCALE * luma) + min(1.0, colour)) / 2.0


def analysis_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """A small, even-sized frame with the source's shape (what the score is computed on)."""
    w = min(max_width, width)
    h = round(w * height / max(width, 1))
    return max(2, w - w % 2), max(2, h - h % 2)


@action("detect_scenes", {
    "properties": {
        "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.3},
        "min_scene_seconds": {"type": "number", "minimum": 0, "default": 1.0},
        "max_width": {"type": "integer", "minimum": 16, "maximum": 1920, "default": 160},
        "csv": {"type": "boolean", "default": True},
    },
})
def detect_scenes(ctx: ActionContext) -> ActionResult:
    """Find shot boundaries (cuts) by comparing consecutive frames."""
    path = ctx.source_path
    params = ctx.params
    scan = scan_for_cuts(ctx, path, threshold=params["threshold"],
                         min_scene_seconds=params["min_scene_seconds"],
                         max_width=params["max_width"])
    scenes = scenes_from(scan)
    data: dict[str, Any] = {
        "scenes": scenes, "scene_count": len(scenes),
        "cuts": [round(cut.time, 3) for cut in scan.cuts],
        "duration": round(scan.end, 3), "frames_analysed": scan.frames,
        "analysis_fps": round(scan.frames / max(scan.seconds_spent, 1e-6), 1),
    }
    report = ctx.output_path(f"{path.stem}_scenes.json")
    _write_text(report, json.dumps({"source": path.name, "threshold": params["threshold"],
                                    "min_scene_seconds": params["min_scene_seconds"],
                                    "fps": round(scan.fps, 3), **data}, indent=2) + "\n")
    outputs = [OutputFile(report, role="report", meta={"format": "json"})]
    if params["csv"]:
        table = ctx.output_path(f"{path.stem}_scenes.csv")
        _write_text(table, scenes_csv(scenes))
        outputs.append(OutputFile(table, role="report", meta={"format": "csv"}))
    ctx.log(f"{path.name}: {len(scenes)} scene(s), {scan.frames} frames analysed at "
            f"{data['analysis_fps']} fps")
    return ActionResult(outputs=outputs, data=data)


def scan_for_cuts(ctx: ActionContext, path: Path, *, threshold: float,
                  min_scene_seconds: float, max_width: int) -> SceneScan:
    """Decode every frame once, keeping only the previous thumbnail (flat memory)."""
    started = time.monotonic()
    cuts: list[Cut] = []
    with open_media(path) as container, reading(path):
        if not container.streams.video:
            raise PermanentError(f"{path.name}: has no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # several cores decode, as in transcoding
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        size: tuple[int, int] | None = None
        clock = ProgressClock(ctx, media_duration(container), "detecting scenes")
        previous: Thumb | None = None
        first_time: float | None = None
        last_time, last_cut_time, index = 0.0, 0.0, -1
        for index, frame in enumerate(decode_tolerantly(container, [stream])):
            # Frames without a timestamp are placed one frame after the previous one.
            stamp = frame.time if frame.time is not None else last_time + 1 / fps
            first_time = stamp if first_time is None else first_time
            now = max(stamp - first_time, 0.0)
            # Sized from the first frame: some streams only declare their size once decoded.
            size = size or analysis_size(frame.width, frame.height, max_width)
            small = frame.reformat(width=size[0], height=size[1], format="rgb24",
                                   interpolation="AREA")
            thumb = thumb_of(small.to_ndarray())
            if previous is not None:
                score = change_score(previous, thumb)
                if score >= threshold and now - last_cut_time >= min_scene_seconds:
                    cuts.append(Cut(frame=index, time=now, score=round(score, 3)))
                    last_cut_time = now
            previous, last_time = thumb, now
            clock.tick(stamp)
    if index < 0:
        raise PermanentError(f"{path.name}: the video stream has no decodable frame")
    return SceneScan(cuts=cuts, frames=index + 1, end=last_time + 1 / fps, fps=fps,
                     seconds_spent=time.monotonic() - started)


def scenes_from(scan: SceneScan) -> list[dict[str, Any]]:
    """Scenes between the cuts; ``end_frame`` is the scene's last frame (inclusive)."""
    starts = [Cut(frame=0, time=0.0, score=0.0), *scan.cuts]
    ends = [(cut.frame - 1, cut.time) for cut in scan.cuts] + [(scan.frames - 1, scan.end)]
    return [
        {"index": number, "start": round(start.time, 3), "end": round(end_time, 3),
         "start_frame": start.frame, "end_frame": end_frame,
         "cut_score": start.score if number else None}
        for number, (start, (end_frame, end_time)) in enumerate(zip(starts, ends, strict=True))
    ]


def scenes_csv(scenes: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    columns = ["index", "start", "end", "start_frame", "end_frame", "cut_score"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(scenes)
    return buffer.getvalue()


# =========================================================================== transcription

SAMPLE_RATE = 16_000  # what both engines' models were trained on
POCKETSPHINX_LANGUAGES = ("en",)
WHISPER_DIR_ENV = "MEDIAQ_WHISPER_MODEL_DIR"
# pocketsphinx keeps a search lattice for the whole utterance: cut long
# stretches of uninterrupted speech, at the quietest moment of their last
# seconds (between words, as a rule), so memory stays bounded.
MAX_UTTERANCE_SECONDS = 20.0
SPLIT_SEARCH_SECONDS = 3.0
# faster-whisper takes whole arrays; feed it blocks of this length (32 MB of float32).
WHISPER_BLOCK_SECONDS = 600.0
# Cue shaping: a new cue after a pause, or when one would be too long to read.
CUE_PAUSE_SECONDS = 0.8
MAX_CUE_CHARS = 84  # two lines of 42, the usual subtitle limit
LINE_CHARS = 42
MIN_CUE_SECONDS = 1.0  # short cues stay up this long when the next one allows
PARAGRAPH_PAUSE_SECONDS = 2.0
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+|\(null\))$", re.IGNORECASE)
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


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
})
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
            words, language = whisper_words(ctx, path, chunks, clock, engine)
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
        _write_text(target, body)
        outputs.append(OutputFile(target, role="sidecar",
                                  meta={"format": extension, "language": language}))
    return outputs


# --------------------------------------------------------------------------- engine choice


def choose_engine(ctx: ActionContext, path: Path) -> EngineChoice:
    """Which engine runs, from the parameters and what this worker has installed."""
    asked = ctx.params["engine"]
    language = _primary_language(ctx.params["language"])
    explicit_dir = ctx.params.get("model_dir")
    configured = explicit_dir or os.environ.get(WHISPER_DIR_ENV) or None
    if asked == "whisper" or (asked == "auto" and explicit_dir):
        return _whisper_choice(path, configured, language)
    if asked == "auto" and configured:
        if Path(configured).is_dir() and _whisper_installed():
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
    if not _whisper_installed():
        raise PermanentError(f"{path.name}: engine whisper needs the faster-whisper package, "
                             f"which is not installed on this worker")
    return EngineChoice(name="whisper", language=language, model_dir=model_dir)


def _whisper_installed() -> bool:
    try:
        _whisper_module()
    except (ImportError, OSError):  # OSError: CTranslate2 without its shared libraries
        return False
    return True


def _whisper_module() -> Any:
    # Imported on demand: it pulls in CTranslate2, which is slow to load and optional.
    return importlib.import_module("faster_whisper")


# --------------------------------------------------------------------------- audio


def pcm_chunks(container: InputContainer) -> Iterator[Int16Array]:
    """The first audio stream as 16 kHz mono 16-bit samples, one decoded frame at a time."""
    stream = container.streams.audio[0]
    resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    for frame in decode_tolerantly(container, [stream]):
        for resampled in resampler.resample(frame):
            yield resampled.to_ndarray().reshape(-1).astype(np.int16, copy=False)
    for resampled in resampler.resample(None):
        yield resampled.to_ndarray().reshape(-1).astype(np.int16, copy=False)


def audio_delay(container: InputContainer) -> float:
    """Seconds from the start of the media to the first audio sample (cue times count
    from the former, engine timings from the latter)."""
    stream = container.streams.audio[0]
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    media_start = (container.start_time or 0) / av.time_base
    return max(0.0, float(stream.start_time * stream.time_base) - media_start)


def shifted(words: list[Word], seconds: float) -> list[Word]:
    if not seconds:
        return words
    return [Word(w.text, w.start + seconds, w.end + seconds) for w in words]


def fixed_frames(chunks: Iterable[Int16Array], samples: int) -> Iterator[Int16Array]:
    """Re-cut ``chunks`` into frames of exactly ``samples`` (the last may be shorter)."""
    pieces: list[Int16Array] = []
    held = 0
    for chunk in chunks:
        pieces.append(chunk)
        held += chunk.size
        if held < samples:
            continue
        # Join once per full frame, not once per chunk: blocks can be millions of samples.
        joined = np.concatenate(pieces)
        whole = joined.size - joined.size % samples
        for offset in range(0, whole, samples):
            yield joined[offset:offset + samples]
        rest = joined[whole:]
        pieces, held = ([rest] if rest.size else []), int(rest.size)
    if held:
        yield np.concatenate(pieces)


# --------------------------------------------------------------------------- pocketsphinx


def pocketsphinx_words(ctx: ActionContext, path: Path, chunks: Iterable[Int16Array],
                       clock: ProgressClock) -> list[Word]:
    """Words with timings, from pocketsphinx's voice-activity segments."""
    try:
        stream = SphinxStream()
    except ImportError:
        raise PermanentError(f"{path.name}: engine pocketsphinx is not installed on this "
                             f"worker") from None
    consumed = 0
    tail = b""
    for frame in fixed_frames(chunks, stream.frame_samples):
        consumed += frame.size
        if frame.size < stream.frame_samples:
            tail = frame.tobytes()  # only the last frame can be short
        else:
            stream.feed(frame.tobytes())
        clock.tick(consumed / SAMPLE_RATE)
    stream.finish(tail)
    ctx.check()
    return stream.words


class SphinxStream:
    """Endpointer + decoder: each stretch of speech is decoded as one utterance."""

    def __init__(self) -> None:
        # Imported here so that a worker without pocketsphinx still detects scenes.
        from pocketsphinx import (  # type: ignore[import-untyped]
            Decoder,
            Endpointer,
        )

        self.decoder: Any = Decoder(loglevel="FATAL", samprate=SAMPLE_RATE)
        self.endpointer: Any = Endpointer(sample_rate=SAMPLE_RATE)
        self.frame_samples: int = self.endpointer.frame_bytes // 2
        self.frames_per_second = float(self.decoder.config["frate"])
        self.words: list[Word] = []
        self._region_start: float | None = None  # start of the current speech region
        self._region_samples = 0  # speech samples of that region already decoded
        self._utterance_start: float | None = None
        self._utterance_samples = 0
        self._utterance = bytearray()  # at most MAX_UTTERANCE_SECONDS of speech

    def feed(self, frame: bytes) -> None:
        speech = self.endpointer.process(frame)
        if speech is not None:
            self._decode(speech)
        if not self.endpointer.in_speech:
            self._end_utterance()
            self._region_start = None
        elif self._utterance_samples > MAX_UTTERANCE_SECONDS * SAMPLE_RATE:
            self._end_utterance(keep=self._samples_after_quietest_point())

    def finish(self, tail: bytes) -> None:
        if self.endpointer.in_speech:
            speech = self.endpointer.end_stream(tail)
            if speech:
                self._decode(speech)
        self._end_utterance()

    def _decode(self, speech: bytes) -> None:
        if self._region_start is None:
            self._region_start, self._region_samples = float(self.endpointer.speech_start), 0
        if self._utterance_start is None:
            self._utterance_start = self._region_start + self._region_samples / SAMPLE_RATE
            self._utterance_samples = 0
        self._utterance.extend(speech)
        self._region_samples += len(speech) // 2
        self._utterance_samples += len(speech) // 2

    def _samples_after_quietest_point(self) -> int:
        """How many trailing samples follow the quietest 10 ms of the last few seconds."""
        pcm = np.frombuffer(self._utterance, dtype=np.int16)
        window = int(SAMPLE_RATE / self.frames_per_second)
        tail = pcm[-int(SPLIT_SEARCH_SECONDS * SAMPLE_RATE):]
        usable = tail[:tail.size - tail.size % window].astype(np.float32)
        if usable.size < window:
            return 0
        energy = (usable.reshape(-1, window) ** 2).mean(axis=1)
        quietest = int(np.argmin(energy))
        return int(tail.size - (quietest * window + window // 2))

    def _end_utterance(self, keep: int = 0) -> None:
        """Decode the buffered utterance, except its last ``keep`` samples, which start
        the next one."""
        if self._utterance_start is None:
            return
        cut = len(self._utterance) - 2 * keep
        # Decoded whole (full_utt): cepstral mean normalisation then sees the entire
        # utterance instead of guessing from its first frames, far more accurate.
        self.decoder.start_utt()
        self.decoder.process_raw(bytes(self._utterance[:cut]), False, True)
        self.decoder.end_utt()
        offset, rate = self._utterance_start, self.frames_per_second
        for segment in self.decoder.seg():
            text = _ALTERNATE_PRONUNCIATION.sub("", segment.word)
            if text and not _FILLER.match(text):
                self.words.append(Word(text, offset + segment.start_frame / rate,
                                       offset + (segment.end_frame + 1) / rate))
        del self._utterance[:cut]
        if keep:
            self._utterance_start, self._utterance_samples = offset + cut / 2 / SAMPLE_RATE, keep
        else:
            self._utterance_start, self._utterance_samples = None, 0


# --------------------------------------------------------------------------- whisper


def whisper_words(ctx: ActionContext, path: Path, chunks: Iterable[Int16Array],
                  clock: ProgressClock, engine: EngineChoice) -> tuple[list[Word], str]:
    """Words with timings from faster-whisper, block by block; the detected language."""
    assert engine.model_dir is not None
    model = _load_whisper(path, str(engine.model_dir))
    language = engine.language
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
    return _whisper_module().WhisperModel(model_dir, device="auto", compute_type="default")


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


# --------------------------------------------------------------------------- cues and files


def group_cues(words: list[Word], *, max_seconds: float, duration: float) -> list[Cue]:
    """Readable cues: a new one after a pause or when the current one is full.

    Cues never overlap, never run past ``duration`` and stay up at least
    MIN_CUE_SECONDS where the next cue leaves room.
    """
    groups: list[list[Word]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (current is None or word.start - current[-1].end > CUE_PAUSE_SECONDS
                or word.end - current[0].start > max_seconds
                or len(_joined(current)) + 1 + len(word.text) > MAX_CUE_CHARS):
            groups.append([word])
        else:
            current.append(word)
    cues: list[Cue] = []
    limit = duration if duration > 0 else float("inf")
    for number, group in enumerate(groups):
        start = max(group[0].start, cues[-1].end if cues else 0.0)
        next_start = groups[number + 1][0].start if number + 1 < len(groups) else limit
        end = min(max(group[-1].end, start + MIN_CUE_SECONDS), max(next_start, start), limit)
        if end <= start:  # a word at the very end of the media: keep it, briefly
            start, end = max(0.0, min(start, limit - 0.001)), min(start + 0.001, limit)
        cues.append(Cue(round(start, 3), round(end, 3), _wrapped(_joined(group))))
    return cues


def _joined(words: list[Word]) -> str:
    return " ".join(word.text for word in words)


def _wrapped(text: str) -> str:
    """At most two lines, broken at the space nearest the middle."""
    if len(text) <= LINE_CHARS or " " not in text:
        return text
    middle = len(text) // 2
    spaces = [i for i, char in enumerate(text) if char == " "]
    split = min(spaces, key=lambda i: abs(i - middle))
    return text[:split] + "\n" + text[split + 1:]


def transcript_text(words: list[Word]) -> str:
    """Plain text; a new paragraph after a long pause."""
    paragraphs: list[list[str]] = []
    previous_end: float | None = None
    for word in words:
        if previous_end is None or word.start - previous_end > PARAGRAPH_PAUSE_SECONDS:
            paragraphs.append([])
        paragraphs[-1].append(word.text)
        previous_end = word.end
    return "\n\n".join(" ".join(paragraph) for paragraph in paragraphs)


def timestamp(seconds: float, separator: str = ".") -> str:
    """``HH:MM:SS.mmm`` (WebVTT) or, with ``separator=","``, ``HH:MM:SS,mmm`` (SRT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def webvtt(cues: list[Cue]) -> str:
    blocks = [f"{number}\n{timestamp(cue.start)} --> {timestamp(cue.end)}\n"
              f"{_vtt_escape(cue.text)}" for number, cue in enumerate(cues, start=1)]
    return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)


def _vtt_escape(text: str) -> str:
    # "<" and "&" start markup in WebVTT, and "-->" would end a cue's timing line.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def srt(cues: list[Cue]) -> str:
    return "".join(f"{number}\n{timestamp(cue.start, ',')} --> {timestamp(cue.end, ',')}\n"
                   f"{cue.text}\n\n" for number, cue in enumerate(cues, start=1))
