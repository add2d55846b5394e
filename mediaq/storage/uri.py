"""``s3://bucket/key`` locations and per-host path mappings (no I/O here)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from mediaq.errors import ConfigError, InputRefused

SCHEME = "s3://"
# S3's bucket naming rules, relaxed to what S3-compatible stores also accept (dots,
# upper case on some MinIO set-ups are refused by S3 itself; we follow S3).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def is_s3(text: object) -> bool:
    return isinstance(text, str) and text.startswith(SCHEME)


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str  # no leading slash; "" for a bucket's root, ends with "/" for a prefix

    @classmethod
    def parse(cls, text: str, *, prefix: bool = False) -> S3Uri:
        """``s3://bucket/key``; InputRefused naming the text for anything else.
        ``prefix``: a folder-like location (the key may be empty; a "/" is added)."""
        if not is_s3(text):
            raise InputRefused(f"{text}: not an s3:// location")
        bucket, _, key = text[len(SCHEME):].partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise InputRefused(f"{text}: {bucket!r} is not a valid bucket name")
        if "\x00" in key or any(part in (".", "..") for part in key.split("/")):
            raise InputRefused(f"{text}: the key may not contain '.' or '..' parts or NUL")
        if prefix:
            key = key if not key or key.endswith("/") else key + "/"
        elif not key or key.endswith("/"):
            raise InputRefused(f"{text}: names a folder, not an object")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return posixpath.basename(self.key.rstrip("/"))

    def child(self, *parts: str) -> S3Uri:
        """The object (or, when the last part ends with "/", the prefix) ``parts``
        below this prefix."""
        key = self.key + "/".join(p.strip("/") for p in parts)
        return S3Uri(self.bucket, key + "/" if parts and parts[-1].endswith("/") else key)

    def within(self, root: S3Uri) -> bool:
        return self.bucket == root.bucket and self.key.startswith(root.key)


def check_s3_input(text: str, roots: tuple[str, ...]) -> S3Uri:
    """The input object ``text`` if it lies under one of the bucket-prefix ``roots``,
    else InputRefused with one line."""
    uri = S3Uri.parse(text)
    parsed = [S3Uri.parse(root, prefix=True) for root in roots]
    if not any(uri.within(root) for root in parsed):
        allowed = ", ".join(str(r) for r in parsed) or "none configured"
        raise InputRefused(f"{text}: outside the input roots' bucket prefixes ({allowed})")
    return uri


@dataclass(frozen=True)
class PathMap:
    """``MEDIAQ_PATH_MAP=/mnt/nas=/Volumes/nas[,/a=/b]``: the canonical prefix the
    database stores, and where this host mounts it. Paths are translated at the edges:
    to local before a file is opened, to canonical before a path is stored."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> PathMap:
        pairs = []
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            canonical, sep, local = item.partition("=")
            if not sep or not canonical.startswith("/") or not local.startswith("/"):
                raise ConfigError(f"path_map: {item!r} is not CANONICAL=LOCAL "
                                  "(two absolute folders)")
            pairs.append((canonical.rstrip("/") or "/", local.rstrip("/") or "/"))
        # The longest prefix wins: /mnt/nas/video may be mounted apart from /mnt/nas.
        pairs.sort(key=lambda pair: -len(pair[0]))
        return cls(tuple(pairs))

    def to_local(self, text: str) -> str:
        return self._swap(text, 0, 1)

    def to_canonical(self, text: str | Path) -> str:
        return self._swap(str(text), 1, 0)

    def _swap(self, text: str, src: int, dst: int) -> str:
        for pair in sorted(self.pairs, key=lambda p: -len(p[src])):
            prefix = pair[src]
            if text == prefix or text.startswith(prefix.rstrip("/") + "/"):
                return pair[dst] + text[len(prefix):] if prefix != "/" else text
        return text
