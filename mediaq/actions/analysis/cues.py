"""Words to readable cues, and cues to plain text, WebVTT and SRT."""

from __future__ import annotations

from dataclasses import dataclass

# Cue shaping: a new cue after a pause, or when one would be too long to read.
CUE_PAUSE_SECONDS = 0.8
MAX_CUE_CHARS = 84  # two lines of 42, the usual subtitle limit
LINE_CHARS = 42
MIN_CUE_SECONDS = 1.0  # short cues stay up this long when the next one allows
PARAGRAPH_PAUSE_SECONDS = 2.0


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
