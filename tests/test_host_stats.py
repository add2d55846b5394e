"""mediaq.host_stats and the heartbeat's resource report, without a database."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any, cast

from mediaq.config import StorageSettings
from mediaq.host_stats import disk_figures, snapshot, watched_roots
from mediaq.worker import heartbeat
from mediaq.worker.heartbeat import Heartbeat


def test_watched_roots_are_the_input_and_output_roots(tmp_path: Path) -> None:
    storage = StorageSettings(home=tmp_path, input_roots=(tmp_path / "a", tmp_path / "b"),
                              output_root=tmp_path / "out")
    assert watched_roots(storage) == [("input", tmp_path / "a"), ("input", tmp_path / "b"),
                                      ("output", tmp_path / "out")]
    assert watched_roots(StorageSettings(home=tmp_path)) == [
        ("input", tmp_path / "inputs"), ("output", tmp_path / "outputs")]


def test_disk_figures_skip_missing_roots_and_are_sane(tmp_path: Path) -> None:
    figures = disk_figures([("output", tmp_path), ("input", tmp_path / "not-there")])
    assert len(figures) == 1
    (disk,) = figures
    assert disk["root"] == "output" and disk["path"] == str(tmp_path)
    assert 0 < disk["free"] <= disk["total"] == shutil.disk_usage(tmp_path).total
    shot = snapshot([("output", tmp_path)])
    assert shot["rss_bytes"] > 0 and (shot["load1"] is None or shot["load1"] >= 0)


def test_a_stalled_measurement_reports_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    beat = Heartbeat(cast(Any, None), "w", 10, {}, threading.Lock(),
                     roots=[("output", tmp_path)])
    assert beat._latest_resources() is None  # nothing measured yet
    beat.resources = (time.monotonic(), snapshot(beat.roots))
    fresh = beat._latest_resources()
    assert fresh is not None and fresh.obj["disks"][0]["root"] == "output"
    monkeypatch.setattr(heartbeat, "RESOURCES_INTERVAL_S", 0.01)
    time.sleep(0.05)
    assert beat._latest_resources() is None
