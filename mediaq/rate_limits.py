"""Rate limits of the HTTP API: token buckets kept in PostgreSQL.

Every `mediaq web` process takes from the same rows (``rate_limit_buckets``), so a
limit holds however many processes serve behind one address. One statement takes a
token from each of a request's buckets (per client address, per token, and per token
for submits and uploads) and says which refused and when a token will be back.

A limit is written ``COUNT/PERIOD`` (``600/m``: 600 a minute, with bursts of up to 600;
periods s, m, h); a list of them by role (``submitter=120/m,admin=0``) with an
optional bare default (``300/m,admin=0``); ``0`` or ``off``: no limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mediaq import db
from mediaq.errors import ConfigError

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
ROLES = ("viewer", "submitter", "operator", "admin")


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``seconds``, in bursts of up to ``count``."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def parse_rate(text: str) -> Rate | None:
    """``600/m`` → Rate(600, 60); ``0`` or ``off`` → None (no limit)."""
    word = text.strip().lower()
    if word in ("0", "off", "none", ""):
        return None
    count, _, period = word.partition("/")
    seconds = PERIODS.get(period.strip() or "s")
    if not count.strip().isdigit() or seconds is None or int(count) < 1:
        raise ConfigError(f"rate limit {text!r}: expected COUNT/PERIOD such as 600/m "
                          "(periods s, m, h), or 0 for none")
    return Rate(int(count), seconds)


def parse_role_rates(text: str) -> dict[str, Rate | None]:
    """``300/m,admin=0`` → each role's rate (a bare item is every role's default)."""
    found: dict[str, Rate | None] = {}
    default: Rate | None = None
    for item in (part.strip() for part in text.split(",") if part.strip()):
        role, equals, rate = item.partition("=")
        if not equals:
            default = parse_rate(item)
            continue
        if role.strip() not in ROLES:
            raise ConfigError(f"rate limit {item!r}: unknown role {role.strip()!r} "
                              f"(one of {', '.join(ROLES)})")
        found[role.strip()] = parse_rate(rate)
    return {role: found.get(role, default) for role in ROLES}


def parse_role_sizes(text: str) -> dict[str, int | None]:
    """``500MB,admin=10GB`` → each role's largest upload in bytes (None: no limit)."""
    found: dict[str, int | None] = {}
    default: int | None = None
    for item in (part.strip() for part in text.split(",") if part.strip()):
        role, equals, size = item.partition("=")
        if equals and role.strip() not in ROLES:
            raise ConfigError(f"upload limit {item!r}: unknown role {role.strip()!r} "
                              f"(one of {', '.join(ROLES)})")
        value = parse_size(size if equals else item)
        if equals:
            found[role.strip()] = value
        else:
            default = value
    return {role: found.get(role, default) for role in ROLES}


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
          "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> int | None:
    """``500MB`` → 500000000; ``2GiB`` → 2147483648; ``0`` → None (no limit)."""
    word = text.strip().lower().replace(" ", "")
    digits = word.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = word[len(digits):]
    try:
        number = float(digits)
    except ValueError:
        number = -1
    if unit not in _UNITS or number < 0 or not math.isfinite(number):
        raise ConfigError(f"size {text!r}: expected a number of bytes such as 500MB or 2GiB")
    return int(number * _UNITS[unit]) or None


@dataclass(frozen=True)
class Verdict:
    """Whether every bucket let the request through; if not, which refused and how many
    seconds until it has a token again."""

    allowed: bool
    bucket: str | None = None
    retry_after: int = 0
    limit: Rate | None = None


def take(conn: db.Connection, wanted: dict[str, Rate]) -> Verdict:
    """Take one token from each bucket in ``wanted`` (name → rate), in one statement."""
    if not wanted:
        return Verdict(True)
    names = sorted(wanted)  # one order for every process: no deadlock between two takes
    rows = db.fetch_all(conn, "rate_limit_take", {
        "buckets": names,
        "capacity": [float(wanted[n].count) for n in names],
        "per_second": [wanted[n].per_second for n in names]})
    refused = [row for row in rows if not row["allowed"]]
    if not refused:
        return Verdict(True)
    worst = max(refused, key=lambda row: _wait(row))
    return Verdict(False, worst["bucket"], max(1, math.ceil(_wait(worst))),
                   wanted[worst["bucket"]])


def _wait(row: dict[str, Any]) -> float:
    return (1.0 - float(row["tokens"])) / float(row["per_second"])


def forget_idle(conn: db.Connection) -> int:
    """Drop buckets that have been full for a while (they hold nothing a fresh one
    would not)."""
    return db.execute(conn, "rate_limit_forget_idle")
