"""Speech to text with pocketsphinx and its bundled US-English model."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mediaq.actions.analysis.cues import Word
from mediaq.actions.analysis.pcm import SAMPLE_RATE, Int16Array, fixed_frames
from mediaq.actions.avio import ProgressClock
from mediaq.actions.base import ActionContext
from mediaq.errors import PermanentError

# pocketsphinx keeps a search lattice for the whole utterance: cut long
# stretches of uninterrupted speech, at the quietest moment of their last
# seconds (between words, as a rule), so memory stays bounded.
MAX_UTTERANCE_SECONDS = 20.0
SPLIT_SEARCH_SECONDS = 3.0
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+|\(null\))$", re.IGNORECASE)
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")


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

