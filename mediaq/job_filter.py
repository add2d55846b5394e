r"""The filter language of bulk operations (``mediaq retry --where``, ``mediaq cancel
--where``, ``POST /api/media/jobs/retry``) and the normalised reason that groups dead
letters. Pure Python: no database, so the parser can be tested on arbitrary text.

Grammar (whitespace separates clauses; each key at most once; at least one clause)::

    filter  = clause { WS clause }
    clause  = KEY OP value
    KEY     = workflow | step | class | reason | since | until | submitted_by
    OP      = "="                        every key
            | "~"                        reason only
    value   = bare | quoted
    bare    = 1*( any character but whitespace and '"' )
    quoted  = '"' *( any character but '"' and '\' | '\"' | '\\' | '\' ) '"'
              (\" is a quote, \\ a backslash; any other backslash is itself, so
              a regular expression keeps its \w)

Values: ``workflow`` a workflow code (exact); ``step`` a step number (digits) or a step
name or action (case-insensitive); ``class`` permanent | transient | system | cancelled;
``reason=TEXT`` the normalised reason equals TEXT (as ``mediaq dead-letters`` prints
it); ``reason~TEXT`` TEXT occurs in the error message, ignoring case;
``reason~/REGEX/`` the message matches the Python regular expression (``search``,
ignoring case); ``since`` / ``until`` an ISO date or date-time (UTC unless it has an
offset) or an age (``30m``, ``12h``, ``7d``): since is inclusive, until exclusive;
``submitted_by`` the submitter (exact). No value may be empty or hold a NUL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from mediaq.errors import Refused

KEYS = ("workflow", "step", "class", "reason", "since", "until", "submitted_by")
ERROR_CLASSES = ("permanent", "transient", "system", "cancelled")
_AGE = re.compile(r"([0-9]{1,6})([mhd])")
_AGE_UNIT = {"m": "minutes", "h": "hours", "d": "days"}
_STEP_NUMBER = re.compile(r"[0-9]{1,6}")


class FilterError(Refused):
    """The filter cannot be read (one line says where)."""


@dataclass(frozen=True)
class JobFilter:
    """A parsed filter; ``None`` means "any". ``str()`` gives text that parses back to it."""

    workflow: str | None = None
    step: int | str | None = None
    error_class: str | None = None
    reason_is: str | None = None
    reason_has: str | None = None
    reason_regex: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    submitted_by: str | None = None

    def __str__(self) -> str:
        parts = []
        for key, op, value in self.clauses():
            parts.append(f"{key}{op}{quote(value)}")
        return " ".join(parts)

    def clauses(self) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        if self.workflow is not None:
            out.append(("workflow", "=", self.workflow))
        if self.step is not None:
            out.append(("step", "=", str(self.step)))
        if self.error_class is not None:
            out.append(("class", "=", self.error_class))
        if self.reason_is is not None:
            out.append(("reason", "=", self.reason_is))
        if self.reason_has is not None:
            out.append(("reason", "~", self.reason_has))
        if self.reason_regex is not None:
            out.append(("reason", "~", f"/{self.reason_regex}/"))
        for key in ("since", "until"):
            when = getattr(self, key)
            if when is not None:
                out.append((key, "=", when.isoformat()))
        if self.submitted_by is not None:
            out.append(("submitted_by", "=", self.submitted_by))
        return out

    def matches_reason(self, message: str | None) -> bool:
        """The reason clause, which is matched here rather than in SQL (the normalisation
        is defined once, in this module)."""
        text = message or ""
        if self.reason_is is not None and normalise_reason(text) != self.reason_is:
            return False
        if self.reason_has is not None and self.reason_has.casefold() not in text.casefold():
            return False
        return self.reason_regex is None or re.search(
            self.reason_regex, text, re.IGNORECASE) is not None

    @property
    def has_reason(self) -> bool:
        return any(getattr(self, f.name) is not None
                   for f in fields(self) if f.name.startswith("reason"))


def quote(value: str) -> str:
    """``value`` as the grammar's bare or quoted value."""
    if value and not any(ch.isspace() or ch == '"' for ch in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_value(text: str, at: int, clause_start: int) -> tuple[str, int]:
    if at < len(text) and text[at] == '"':
        out: list[str] = []
        i = at + 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                out.append(text[i + 1])
                i += 2
            elif ch == '"':
                end = i + 1
                if end < len(text) and not text[end].isspace():
                    raise FilterError(f"malformed clause at {_show(text, clause_start)}: "
                                      "a quoted value must be followed by a space")
                return "".join(out), end
            else:
                out.append(ch)
                i += 1
        raise FilterError(f"malformed clause at {_show(text, clause_start)}: "
                          "unterminated quoted value")
    end = at
    while end < len(text) and not text[end].isspace():
        end += 1
    value = text[at:end]
    if '"' in value:
        raise FilterError(f"malformed clause at {_show(text, clause_start)}: a quote inside "
                          "an unquoted value (quote the whole value)")
    return value, end


def _show(text: str, at: int) -> str:
    shown = text[at:at + 30]
    return repr(shown + ("…" if len(text) > at + 30 else ""))


def parse_filter(text: str) -> JobFilter:
    """Parse ``text``; FilterError (one line) for an unknown key, a malformed clause, a
    repeated key, a bad value or an empty filter."""
    found: dict[str, object] = {}
    seen: set[str] = set()
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        start = i
        while i < len(text) and text[i] not in "=~" and not text[i].isspace():
            i += 1
        key = text[start:i]
        if i >= len(text) or text[i] not in "=~":
            raise FilterError(f"malformed clause at {_show(text, start)}: expected KEY=VALUE "
                              "or reason~TEXT")
        if key not in KEYS:
            raise FilterError(f"unknown key {key[:40]!r} (one of {', '.join(KEYS)})")
        op = text[i]
        value, i = _read_value(text, i + 1, start)
        name = _store(key, op, value)
        if name in seen:
            raise FilterError(f"{key}{op} given twice")
        seen.add(name)
        found[name] = _convert(key, op, value)
    if not found:
        raise FilterError("empty filter: name at least one clause (e.g. workflow=WF-X)")
    return JobFilter(**found)  # type: ignore[arg-type]


def _store(key: str, op: str, value: str) -> str:
    if op == "~" and key != "reason":
        raise FilterError(f"{key}~ is not a filter: only reason takes ~ (use {key}=)")
    if key == "class":
        return "error_class"
    if key == "reason":
        if op == "=":
            return "reason_is"
        return "reason_regex" if _is_regex(value) else "reason_has"
    return key


def _is_regex(value: str) -> bool:
    return len(value) >= 2 and value.startswith("/") and value.endswith("/")


def _convert(key: str, op: str, value: str) -> object:
    if not value:
        raise FilterError(f"{key}{op} needs a value")
    if "\x00" in value:
        raise FilterError(f"{key}{op}: a value cannot hold a NUL character")
    if len(value) > 500:
        raise FilterError(f"{key}{op}: a value is at most 500 characters")
    if key == "step":
        return int(value) if _STEP_NUMBER.fullmatch(value) else value
    if key == "class":
        if value not in ERROR_CLASSES:
            raise FilterError(f"class={value[:40]!r}: one of {', '.join(ERROR_CLASSES)}")
        return value
    if key == "reason" and op == "~" and _is_regex(value):
        pattern = value[1:-1]
        try:
            re.compile(pattern, re.IGNORECASE)
        except (re.error, RecursionError, OverflowError) as exc:
            raise FilterError(f"reason~/…/: not a regular expression ({exc})") from None
        return pattern
    if key in ("since", "until"):
        return parse_when(value, key)
    return value


def parse_age(value: str) -> timedelta | None:
    """An age written ``30m``, ``12h`` or ``7d``; None for anything else."""
    age = _AGE.fullmatch(value.strip())
    return timedelta(**{_AGE_UNIT[age.group(2)]: int(age.group(1))}) if age else None


def parse_when(value: str, key: str = "since", now: datetime | None = None) -> datetime:
    """An ISO date or date-time (UTC unless an offset is given) or an age (30m, 12h, 7d)."""
    age = parse_age(value)
    if age is not None:
        return (now or datetime.now(UTC)) - age
    if not value.isascii():
        raise FilterError(f"{key}={value[:40]!r}: an ISO date or date-time, or an age "
                          "(30m, 12h, 7d)")
    try:
        when = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise FilterError(f"{key}={value[:40]!r}: an ISO date or date-time, or an age "
                          "(30m, 12h, 7d)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------
# The normalised reason
# ---------------------------------------------------------------------------------------

# Applied in this order; each replaces the variable parts of an error message with a
# placeholder, so "a.mp4: truncated at 1.9 s of 3.7 s" and "b.mp4: truncated at 2 s
# of 9 s" are both "<file>: truncated at <n> s of <n> s".
NORMALISATIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # ISO timestamps and dates (before numbers eat them)
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
                r"(?:Z|[+-]\d{2}(?::?\d{2})?)?)?\b"), "<time>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<time>"),
    # UUIDs, then job codes (JOB-2026-000123)
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                r"[0-9a-fA-F]{12}\b"), "<id>"),
    (re.compile(r"\bJOB-\d+(?:-\d+)*\b"), "<job>"),
    # URLs, then paths and bare file names with an extension (both <file>: the same
    # error about /media/in/x.mp4 and about x.mp4 is one group)
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+"), "<url>"),
    (re.compile(r"(?<![\w.])(?:~|\.{1,2})?(?:/[^\s/:'\",;()\[\]{}<>]+)+/?"), "<file>"),
    (re.compile(r"(?<![\w<])[\w.+-]*[A-Za-z_][\w.+-]*\.[A-Za-z][A-Za-z0-9]{0,4}\b"
                r"|(?<![\w<])\d[\w+-]*\.[A-Za-z][A-Za-z0-9]{0,4}\b(?![.\w])"), "<file>"),
    # hex ids: 0x…, or 8+ hex digits holding a digit and a letter
    (re.compile(r"\b0x[0-9a-fA-F]+\b"
                r"|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    # numbers not glued to a word in front (h264 and x86 stay; 3.7s becomes <n>s)
    (re.compile(r"(?<![\w<.])[-+]?\d+(?:[.,]\d+)?(?:e[-+]?\d+)?"), "<n>"),
)
REASON_LIMIT = 200


def normalise_reason(message: str | None) -> str:
    """``message`` with its variable parts replaced by placeholders (<time>, <id>, <job>,
    <url>, <file> for a path or a file name, <hex>, <n>), whitespace collapsed, at most
    200 characters."""
    text = message or ""
    for pattern, placeholder in NORMALISATIONS:
        text = pattern.sub(placeholder, text)
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT - 1] + "…"
