"""What a machine has left: disk free on the storage roots, a process's RSS, the load,
its GPUs' live memory and utilisation (NVML).

Workers send a snapshot with every heartbeat (kept in ``workers.limits`` under the
``_resources`` key, so no schema change); ``mediaq web`` adds its own view of the same
roots when it serves ``/metrics``. Roots that do not exist (yet) on a machine are left
out rather than reported as zero.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import psutil

from mediaq.config import StorageSettings
from mediaq.gpu_readings import read_nvml

# The key of workers.limits under which a worker's snapshot is kept.
RESOURCES_KEY = "_resources"


def watched_roots(storage: StorageSettings) -> list[tuple[str, Path]]:
    """(root kind, path) of the storage roots: every input root and the output root.
    (There is no separate cache root in the settings: staging lives in the output root.)"""
    roots = [("input", p) for p in storage.effective_input_roots]
    roots.append(("output", storage.outputs))
    return roots


def disk_figures(roots: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """shutil.disk_usage of each root that exists: root, path, free and total bytes."""
    figures = []
    for kind, path in roots:
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        figures.append({"root": kind, "path": str(path), "free": usage.free,
                        "total": usage.total})
    return figures


def load1() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not on every platform
        return None


def snapshot(roots: list[tuple[str, Path]]) -> dict[str, Any]:
    """This process's figures: disks, RSS, the host's 1-minute load and its GPUs as NVML
    reads them now (or why it cannot), for the Hosts view."""
    return {"disks": disk_figures(roots), "rss_bytes": psutil.Process().memory_info().rss,
            "load1": load1(), "gpus": read_nvml()}
