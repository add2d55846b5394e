"""Where actions come from: built-ins from BUILTIN_MODULES, plugins from entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

import mediaq.actions
from mediaq.actions import BUILTIN_MODULES, ENTRY_POINT_GROUP, available_actions


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_entry_points_naming_built_in_modules_are_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    declared = [
        # What an older install of mediaq declared for three built-ins.
        entry("diagnostic", "mediaq.actions.diagnostic"),
        entry("image", "mediaq.actions.image"),
        entry("documents", "mediaq.actions.documents"),
        entry("audio", "mediaq.actions.audio.transcode:register"),
        entry("thirdparty", "thirdparty_actions.media"),
        entry("thirdparty-again", "thirdparty_actions.media"),  # installed twice
    ]
    monkeypatch.setattr(mediaq.actions, "entry_points", lambda group: declared)
    assert [ep.value for ep in mediaq.actions.plugin_entry_points()] == [
        "thirdparty_actions.media"]


def test_every_built_in_module_imports_and_registers_actions() -> None:
    registered = {a.fn.__module__ for a in available_actions().values()}
    assert {module for module in registered if module.startswith("mediaq.")} \
        == set(BUILTIN_MODULES)
    assert not mediaq.actions._load_errors
