"""Make text PostgreSQL can store: the one boundary every worker write passes.

PostgreSQL refuses two things Python strings can hold: the NUL character (a ``text``
column cannot hold a NUL byte, and JSONB refuses ``\\u0000`` with "unsupported Unicode
escape sequence") and lone UTF-16 surrogates (not encodable as UTF-8; JSONB refuses
their ``\\udXXX`` escapes). Both come in from media files: a PDF title, an EXIF, XMP or
audio tag may carry a NUL, and a tag decoded with ``surrogateescape`` a lone surrogate.

``storable`` replaces each with U+FFFD (the replacement character, so a reader sees
that something was there) in strings, dict keys included, recursively through dicts,
lists and tuples. A string without either comes back unchanged (the same object).
Other values (numbers, booleans, None) pass through as they are.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from psycopg.types.json import Jsonb

REPLACEMENT = "\ufffd"

# NUL, and any surrogate code point: a valid pair never exists in a Python str (it
# holds code points, not UTF-16 units), so every surrogate in one is a lone one.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

T = TypeVar("T")


def storable_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (unchanged when it holds
    neither)."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable(value: T) -> T:
    """``value`` made storable in a JSONB or text column: every string in it (keys
    too, at any depth, also inside a ``Jsonb`` wrapper) through ``storable_text``."""
    return _storable(value)  # type: ignore[no-any-return]


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {(storable_text(k) if isinstance(k, str) else k): _storable(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_storable(v) for v in value)
    if isinstance(value, Jsonb):
        return Jsonb(_storable(value.obj), value.dumps)
    return value
