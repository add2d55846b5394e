"""The Hosts view's live GPU figures (mediaq/gpu_readings.py): a reading made from NVML's own
ctypes structures (pynvml's, filled as the driver fills them: no GPU here to read), and
what this machine without a GPU answers."""

from __future__ import annotations

from typing import Any

import pynvml

from mediaq.gpu_readings import MIB, read_nvml, reading
from mediaq.queries import queries
from tests.helpers import MediaqEnv, wait_for


def test_a_reading_from_nvml_structures_is_formatted_for_people() -> None:
    memory = pynvml.c_nvmlMemory_t(total=81559 * MIB, free=80325 * MIB, used=1234 * MIB)
    rates = pynvml.c_nvmlUtilization_t(gpu=37, memory=12)
    gpu = reading(0, b"NVIDIA H100 80GB HBM3", memory, rates)
    assert (gpu.used_mb, gpu.total_mb, gpu.utilisation_percent) == (1234, 81559, 37)
    assert gpu.describe() == "GPU 0 NVIDIA H100 80GB HBM3: 1,234 of 81,559 MB used · 37 % busy"
    # a MIG instance reports no utilisation: memory only
    assert reading(1, "NVIDIA A100", memory, None).describe() == (
        "GPU 1 NVIDIA A100: 1,234 of 81,559 MB used")


def test_read_nvml_says_plainly_when_there_is_none() -> None:
    found = read_nvml()
    if found["available"]:  # a machine with a driver: live figures
        assert all(g["total_mb"] > 0 and g["text"].startswith("GPU ") for g in found["gpus"])
    else:
        assert found["reason"].startswith("NVML is not available here: "), found
        assert "\n" not in found["reason"]


def test_each_host_shows_what_its_own_worker_read(mq: MediaqEnv) -> None:
    """Each host's GPU reading travels in its workers' heartbeats, so the Hosts view shows
    every machine's live figures (here: a machine without a GPU says why), not only the
    web server's own."""
    mq.start_worker("--id", "w-gpus", host_id="render-7")

    def reported() -> dict[str, Any] | None:
        with mq.connect() as conn:
            rows = conn.execute(queries["dash_hosts"]).fetchall()
        return next((r["gpus"] for r in rows if r["host"] == "render-7" and r["gpus"]), None)

    gpus = wait_for(reported, timeout=60, message="render-7's GPU reading")
    here = read_nvml()
    assert gpus["available"] == here["available"]
    if not here["available"]:
        assert gpus["reason"] == here["reason"]
