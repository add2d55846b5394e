"""Live GPU figures, read through NVML: memory used/total and utilisation of each GPU.
Every worker sends its machine's reading with its heartbeat's resource snapshot
(``mediaq.host_stats``), so the Hosts view shows each host's GPUs live; ``mediaq web``
reads its own machine directly. Without a driver or the library (a machine without a
GPU) the reading says plainly why NVML is absent."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    used_mb: int
    total_mb: int
    utilisation_percent: int | None  # None where the GPU does not report it (MIG)

    def describe(self) -> str:
        """One line for people: ``GPU 0 NVIDIA H100: 1,234 of 81,559 MB used · 37 % busy``."""
        busy = ("" if self.utilisation_percent is None
                else f" · {self.utilisation_percent} % busy")
        return f"GPU {self.index} {self.name}: {self.used_mb:,} of {self.total_mb:,} MB used{busy}"


def reading(index: int, name: Any, memory: Any, utilisation: Any | None) -> GpuReading:
    """A reading from NVML's own structures (``nvmlDeviceGetMemoryInfo``'s total/used in
    bytes, ``nvmlDeviceGetUtilizationRates``' gpu percent); old drivers return the name
    as bytes."""
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return GpuReading(index=index, name=text, used_mb=int(memory.used) // MIB,
                      total_mb=int(memory.total) // MIB,
                      utilisation_percent=None if utilisation is None else int(utilisation.gpu))


def read_nvml() -> dict[str, Any]:
    """``{"available": True, "gpus": [...]}`` or ``{"available": False, "reason": ...}``."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver: NVML's own words say which
        return {"available": False, "reason": f"NVML is not available here: {exc}"}
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            try:
                rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            except pynvml.NVMLError:  # not supported (a MIG instance): memory only
                rates = None
            gpus.append(reading(index, pynvml.nvmlDeviceGetName(handle),
                                pynvml.nvmlDeviceGetMemoryInfo(handle), rates))
        return {"available": True, "gpus": [{**asdict(g), "text": g.describe()} for g in gpus]}
    except Exception as exc:
        return {"available": False, "reason": f"NVML failed to read the GPUs: {exc}"}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
