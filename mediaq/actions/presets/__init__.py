"""Named encoding presets in YAML (``encoding.yaml`` here, plus the file named by
``MEDIAQ_ENCODING_PRESETS``), expanded into a step's parameters before validation.

A step gives ``preset: web``; :func:`expand_preset` returns the preset's settings with the
step's own parameters over them, so the merged parameters are checked by the action's
schema like any others (a preset cannot smuggle in a bad value). ``preset`` naming an
x264 speed (``veryfast``) keeps its old meaning: the encoder speed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from mediaq.errors import InvalidParameters

PRESETS_ENV = "MEDIAQ_ENCODING_PRESETS"
BUILTIN_FILE = Path(__file__).with_name("encoding.yaml")
SPEED_NAMES = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
               "slower", "veryslow")


@functools.cache
def _load(path: str) -> dict[str, dict[str, Any]]:
    source = Path(path)
    try:
        doc = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InvalidParameters(f"{source.name}: encoding presets cannot be read "
                                f"({detail})") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise InvalidParameters(f"{source.name}: encoding presets must map each name to "
                                "its settings")
    for name in doc:
        if name in SPEED_NAMES:
            raise InvalidParameters(f"{source.name}: preset name {name!r} is an encoder "
                                    "speed; choose another name")
        if "preset" in doc[name]:
            raise InvalidParameters(f"{source.name}: preset {name!r} names another preset "
                                    "(presets do not nest)")
    return {str(k): dict(v) for k, v in doc.items()}


def encoding_presets() -> dict[str, dict[str, Any]]:
    """Every named preset: the built-in ones, replaced or added to by the user's file."""
    presets = dict(_load(str(BUILTIN_FILE)))
    extra = os.environ.get(PRESETS_ENV)
    if extra:
        presets.update(_load(extra))
    return presets


def expand_preset(params: dict[str, Any], accepted: set[str]) -> dict[str, Any]:
    """``params`` with its named preset's settings (those in ``accepted``) under it."""
    name = params.get("preset")
    if not isinstance(name, str):
        return params
    if name in SPEED_NAMES:
        return {"speed": name, **params}
    presets = encoding_presets()
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise InvalidParameters(f"preset: unknown encoding preset {name!r} (presets: "
                                f"{known}; or an encoder speed such as veryfast)")
    settings = {k: v for k, v in presets[name].items() if k in accepted}
    merged = {**settings, **{k: v for k, v in params.items() if k != "preset"}}
    merged["preset"] = name
    return merged


def clear_cache() -> None:
    _load.cache_clear()
