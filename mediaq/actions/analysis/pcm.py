"""Speech audio for the engines: the first audio stream as 16 kHz mono PCM, re-cut
into frames of the size each engine takes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import av
import numpy as np
import numpy.typing as npt
from av.audio.resampler import AudioResampler
from av.container import InputContainer

from mediaq.actions.analysis.cues import Word
from mediaq.actions.frames import decode_tolerantly

Int16Array = npt.NDArray[np.int16]

SAMPLE_RATE = 16_000  # what both engines' models were trained on


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

