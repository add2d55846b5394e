"""How a setting is declared: ``field(default=…, metadata=about(parse, check=…, doc=…))``.

The declaration keeps everything about one setting in one place, in the dataclass
field's metadata: its one-line doc, the parser that turns an environment string or
a TOML value into its type, an optional check of the parsed value, the flat name
(``MEDIAQ_<FLAT>`` in the environment, a top-level key in the file) when it differs
from the field's name, and whether it is a secret that ``mediaq config`` masks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediaq.errors import ConfigError

Parse = Callable[[Any], Any]
Check = Callable[[Any], "str | None"]


def about(parse: Parse, *, doc: str, check: Check | None = None, flat: str | None = None,
          secret: str = "") -> dict[str, Any]:
    """The metadata of one setting's dataclass field. ``secret``: "value" (shown as ***)
    or "url" (its password masked)."""
    return {"doc": doc, "parse": parse, "check": check, "flat": flat, "secret": secret}


# -- parsers: an environment string or a TOML value → the setting's type -------------------
# Each raises ValueError with what it expected; the loader adds where the value came from.


def _scalar(raw: Any, expected: str) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"expected {expected}")
    return raw


def integer(raw: Any) -> int:
    value = _scalar(raw, "an integer")
    if isinstance(value, float) and not value.is_integer():  # 2.5 is no lease length
        raise ValueError("expected an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError("expected an integer") from None


def number(raw: Any) -> float:
    value = _scalar(raw, "a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number") from None


def boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def text(raw: Any) -> str:
    return str(_scalar(raw, "a string"))


def optional_text(raw: Any) -> str | None:
    return text(raw) or None


def path(raw: Any) -> Path:
    return Path(text(raw)).expanduser().resolve()


def optional_path(raw: Any) -> Path | None:
    return path(raw) if text(raw) else None


def paths(raw: Any) -> tuple[Path, ...]:
    """A list of folders, or one string of them separated by colons or commas."""
    if isinstance(raw, str):
        items = raw.replace(",", ":").split(":")
    elif isinstance(raw, list | tuple) and all(isinstance(i, str | Path) for i in raw):
        items = [str(i) for i in raw]
    else:
        raise ValueError("expected a list of folders or a colon-separated string")
    return tuple(Path(p).expanduser().resolve() for p in items if p.strip())


def _location(item: str) -> Path | str:
    """A local folder (resolved) or an ``s3://bucket/prefix/`` kept as written."""
    if item.startswith("s3://"):
        return item if item.endswith("/") else item + "/"
    if "://" in item:
        raise ValueError(f"{item!r}: only local folders and s3:// prefixes are supported")
    return Path(item).expanduser().resolve()


def locations(raw: Any) -> tuple[Path | str, ...]:
    """Folders and ``s3://bucket/prefix/`` roots: a list, or one string separated by
    commas or colons (an s3:// prefix is never split at its own colon)."""
    if isinstance(raw, str):
        items = [part for item in raw.split(",")
                 for part in ([item] if "://" in item else item.split(":"))]
    elif isinstance(raw, list | tuple) and all(isinstance(i, str | Path) for i in raw):
        items = [str(i) for i in raw]
    else:
        raise ValueError("expected a list of folders or a comma-separated string")
    return tuple(_location(p.strip()) for p in items if p.strip())


def optional_location(raw: Any) -> Path | str | None:
    return _location(text(raw).strip()) if text(raw).strip() else None


# -- checks: a parsed value → what is wrong with it, or None -------------------------------


def at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be at least {low:g}"
    return check


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be positive"


def raising(validate: Callable[[Any], object]) -> Check:
    """A check made of a function that raises ConfigError ("name: why") for a bad value:
    the parser the code that uses the setting applies, run once more at load time."""
    def check(value: Any) -> str | None:
        try:
            validate(value)
        except ConfigError as exc:
            return "is not valid: " + (exc.message.partition(": ")[2] or exc.message)
        return None
    return check


def one_of(*choices: str, fold: bool = False) -> Check:
    def check(value: Any) -> str | None:
        word = value.lower() if fold else value
        return None if word in choices else f"must be one of {', '.join(choices)}"
    return check
