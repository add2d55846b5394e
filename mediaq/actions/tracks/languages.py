"""Language codes as players compare them, and the tracks a list of languages chooses.

Files tag their tracks with ISO 639-2 codes, bibliographic (``fre``, ``ger``: what
Matroska writes) or terminological (``fra``, ``deu``: what MP4 and HLS use), and users
type ISO 639-1 (``fr``). Everything is compared in the terminological form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediaq.errors import PermanentError

# ISO 639-2/B codes that differ from their /T form (all twenty of them).
_BIBLIOGRAPHIC = {
    "alb": "sqi", "arm": "hye", "baq": "eus", "bur": "mya", "chi": "zho", "cze": "ces",
    "dut": "nld", "fre": "fra", "geo": "kat", "ger": "deu", "gre": "ell", "ice": "isl",
    "mac": "mkd", "mao": "mri", "may": "msa", "per": "fas", "rum": "ron", "slo": "slk",
    "tib": "bod", "wel": "cym",
}
# ISO 639-1 codes of the languages subtitles and dubs most often come in.
_TWO_LETTER = {
    "ar": "ara", "bg": "bul", "bn": "ben", "ca": "cat", "cs": "ces", "cy": "cym",
    "da": "dan", "de": "deu", "el": "ell", "en": "eng", "es": "spa", "et": "est",
    "eu": "eus", "fa": "fas", "fi": "fin", "fr": "fra", "ga": "gle", "gl": "glg",
    "he": "heb", "hi": "hin", "hr": "hrv", "hu": "hun", "hy": "hye", "id": "ind",
    "is": "isl", "it": "ita", "ja": "jpn", "ka": "kat", "ko": "kor", "lt": "lit",
    "lv": "lav", "mk": "mkd", "ms": "msa", "nb": "nob", "nl": "nld", "nn": "nno",
    "no": "nor", "pl": "pol", "pt": "por", "ro": "ron", "ru": "rus", "sk": "slk",
    "sl": "slv", "sq": "sqi", "sr": "srp", "sv": "swe", "ta": "tam", "th": "tha",
    "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "zho",
}
UNDETERMINED = "und"


def normalize_language(code: str | None) -> str:
    """``code`` in ISO 639-2/T, lower case; ``und`` for none. An unknown two-letter code
    is kept as given (it still matches itself)."""
    text = (code or "").strip().lower()
    if not text:
        return UNDETERMINED
    return _BIBLIOGRAPHIC.get(text) or _TWO_LETTER.get(text) or text


@dataclass(frozen=True)
class ChosenTrack:
    """A source stream kept, and the language it is tagged with in the output."""

    index: int  # the stream's index in the source container
    language: str
    position: int  # its place among the source's streams of that type (0: the first)


def tracks_of(streams: list[Any]) -> list[ChosenTrack]:
    """(index, language) of PyAV streams of one type, in file order."""
    return [ChosenTrack(s.index, normalize_language(s.metadata.get("language")), n)
            for n, s in enumerate(streams)]


def choose_tracks(source: Path, kind: str, available: list[ChosenTrack],
                  languages: list[str] | None) -> tuple[list[ChosenTrack], list[str]]:
    """The tracks of ``languages``, in that order (every track of each language, in file
    order), and the languages asked for that the source lacks. None asked: every track.

    None of the languages present is a permanent error naming the file and what it has:
    a silent output, or one in a language nobody asked for, is worse than a clear stop.
    """
    if not languages:
        return list(available), []
    wanted = list(dict.fromkeys(normalize_language(lang) for lang in languages))
    chosen = [t for lang in wanted for t in available if t.language == lang]
    missing = [lang for lang in wanted if all(t.language != lang for t in available)]
    if available and not chosen:
        have = ", ".join(dict.fromkeys(t.language for t in available))
        raise PermanentError(f"{source.name}: no {kind} track in {', '.join(wanted)} "
                             f"(the source has: {have})")
    return chosen, missing


def tracks_in(streams: list[dict[str, Any]], kind: str) -> list[ChosenTrack]:
    """The tracks of type ``kind`` in a probe's stream summaries (MediaInfo.streams)."""
    of_kind = [s for s in streams if s.get("type") == kind]
    return [ChosenTrack(int(s["index"]), normalize_language(s.get("language")), n)
            for n, s in enumerate(of_kind)]


# What players show for a track (HLS NAME, DASH Label): the language's English name.
_NAMES = {
    "ara": "Arabic", "bul": "Bulgarian", "cat": "Catalan", "ces": "Czech", "cym": "Welsh",
    "dan": "Danish", "deu": "German", "ell": "Greek", "eng": "English", "spa": "Spanish",
    "est": "Estonian", "eus": "Basque", "fas": "Persian", "fin": "Finnish", "fra": "French",
    "gle": "Irish", "glg": "Galician", "heb": "Hebrew", "hin": "Hindi", "hrv": "Croatian",
    "hun": "Hungarian", "ind": "Indonesian", "isl": "Icelandic", "ita": "Italian",
    "jpn": "Japanese", "kor": "Korean", "lit": "Lithuanian", "lav": "Latvian",
    "nld": "Dutch", "nob": "Norwegian Bokmål", "nor": "Norwegian", "pol": "Polish",
    "por": "Portuguese", "ron": "Romanian", "rus": "Russian", "slk": "Slovak",
    "slv": "Slovenian", "srp": "Serbian", "swe": "Swedish", "tha": "Thai", "tur": "Turkish",
    "ukr": "Ukrainian", "vie": "Vietnamese", "zho": "Chinese",
}


def language_name(code: str | None, untagged: str = "audio") -> str:
    """The name players show for a track in ``code`` (the code itself when unknown,
    ``untagged`` for none)."""
    if not code or code == UNDETERMINED:
        return untagged
    return _NAMES.get(code, code)
