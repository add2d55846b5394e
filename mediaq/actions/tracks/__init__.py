"""Audio and subtitle tracks: which to keep (by language), and what becomes of subtitles.

- :mod:`.languages`: language codes compared as players do (``fre`` is ``fra``, ``en``
  is ``eng``) and the streams a list of languages chooses
- :mod:`.subtitles`: reading a subtitle stream's cues, writing WebVTT / SRT files and
  the packets MP4 (mov_text) and WebM (WebVTT) carry
- :mod:`.bitmaps`: DVD, PGS and DVB tracks copied as they are, into the output or a
  .sup / .mks sidecar
- :mod:`.burn`: cues drawn onto video frames (text rendered with Pillow, since the
  bundled FFmpeg has no libass; bitmap subtitles such as DVD and PGS pasted as they are)
"""

from __future__ import annotations

from typing import Any

LANGUAGE_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^[A-Za-z]{2,3}$"}

TRACK_SCHEMA: dict[str, Any] = {
    # The source's audio tracks in these languages, in this order (several are kept);
    # absent: the first audio track, as before.
    "audio_languages": {"type": "array", "minItems": 1, "maxItems": 16, "uniqueItems": True,
                        "items": LANGUAGE_SCHEMA},
    # keep: carried in the output (text as mov_text in MP4, WebVTT in WebM, SubRip in
    # Matroska; DVD/PGS/DVB pictures copied where the container takes them); extract:
    # WebVTT and SRT files beside it (.sup / .mks for pictures); burn: drawn onto the
    # picture; drop: none.
    "subtitles": {"enum": ["keep", "extract", "burn", "drop"], "default": "drop"},
    # Which subtitle tracks (default: every one; burn draws the first chosen).
    "subtitle_languages": {"type": "array", "minItems": 1, "maxItems": 16,
                           "uniqueItems": True, "items": LANGUAGE_SCHEMA},
}
