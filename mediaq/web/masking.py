"""Workflow ``notify:`` maps can hold secrets (Slack webhook paths, tokens in webhook
queries). The API shows them masked and puts the originals back when an edited
document comes back with the masked text unchanged."""

from __future__ import annotations

from typing import Any

from mediaq.notify.outbox import shown_recipient


def _recipients(notify: Any) -> list[str]:
    if not isinstance(notify, dict):
        return []
    return [r for value in notify.values() if isinstance(value, list)
            for r in value if isinstance(r, str)]


def masked(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with every notify recipient as ``shown_recipient`` prints it."""
    notify = doc.get("notify")
    if not isinstance(notify, dict):
        return doc
    shown = {key: [shown_recipient(r) if isinstance(r, str) else r for r in value]
             if isinstance(value, list) else value for key, value in notify.items()}
    return {**doc, "notify": shown}


def unmasked(doc: Any, current: dict[str, Any] | None) -> Any:
    """``doc`` with masked recipients replaced by the current version's originals."""
    if not isinstance(doc, dict) or current is None or not isinstance(doc.get("notify"), dict):
        return doc
    originals = {shown_recipient(r): r for r in _recipients(current.get("notify"))}
    notify = {key: [originals.get(r, r) if isinstance(r, str) else r for r in value]
              if isinstance(value, list) else value for key, value in doc["notify"].items()}
    return {**doc, "notify": notify}
