"""What this worker may run: categories, per-machine limits and the VRAM budget."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

from mediaq.errors import ConfigError

CATEGORIES = ("cpu", "gpu_encode", "gpu_ai")
GPU_CATEGORIES = frozenset({"gpu_encode", "gpu_ai"})
# Jobs at once per machine and category when --limits does not say otherwise.
DEFAULT_LIMITS = {"cpu": 5, "gpu_encode": 2, "gpu_ai": 1}


def parse_categories(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return CATEGORIES
    names = tuple(c.strip() for c in raw.split(",") if c.strip())
    unknown = [c for c in names if c not in CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown resource categories: {', '.join(unknown)}")
    return names


def parse_limits(raw: str | None) -> dict[str, int]:
    """``cpu=5,gpu_ai=1`` over the defaults."""
    limits = dict(DEFAULT_LIMITS)
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in CATEGORIES or not value.strip().isdigit():
            raise ConfigError(f"bad limit {item.strip()!r}: expected CATEGORY=N")
        limits[name] = int(value)
    return limits


@dataclass(frozen=True)
class GpuInfo:
    total_mb: int
    free_mb: int
    name: str


def read_gpu() -> GpuInfo | None:
    """Total and free memory of GPU 0 through NVML, or None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no library: a machine without a GPU
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        return GpuInfo(
            total_mb=int(mem.total) // (1024 * 1024),
            free_mb=int(mem.free) // (1024 * 1024),
            name=name.decode() if isinstance(name, bytes) else str(name),
        )
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


@dataclass
class Capacity:
    """This process's view of what it may still start (the database has the final say)."""

    categories: tuple[str, ...]
    limits: dict[str, int]
    vram_budget_mb: int
    gpu: GpuInfo | None = None
    # At most this many jobs in this process (autoscaled workers run one each); None:
    # as many as the machine's limits allow.
    process_jobs: int | None = None
    running: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def free_categories(self) -> list[str]:
        with self._lock:
            if self.process_jobs is not None and sum(self.running.values()) >= self.process_jobs:
                return []
            return [
                c for c in self.categories
                if self.running.get(c, 0) < self.limits.get(c, 0)
            ]

    def take(self, category: str) -> None:
        with self._lock:
            self.running[category] = self.running.get(category, 0) + 1

    def give_back(self, category: str) -> None:
        with self._lock:
            self.running[category] = max(0, self.running.get(category, 0) - 1)

    @property
    def total_running(self) -> int:
        with self._lock:
            return sum(self.running.values())

    @property
    def max_parallel(self) -> int:
        machine = sum(self.limits.get(c, 0) for c in self.categories)
        return machine if self.process_jobs is None else min(machine, self.process_jobs)

    def unserved(self) -> dict[str, str]:
        """The categories this worker takes but cannot run (all or most) jobs of, with why.

        A GPU category without a VRAM budget (no GPU found, no ``--vram-mb``) runs only
        jobs that need no VRAM; every bundled GPU workflow needs some.
        """
        reasons: dict[str, str] = {}
        for category in self.categories:
            if self.limits.get(category, 0) <= 0:
                reasons[category] = f"its limit is 0 ({category}=0)"
            elif category in GPU_CATEGORIES and self.vram_budget_mb <= 0:
                reasons[category] = ("VRAM budget 0 MB (no GPU found and no --vram-mb): "
                                     "only jobs that need no VRAM")
        return reasons

    def live_vram_free_mb(self) -> int | None:
        """Free VRAM right now per NVML (other programs count too), None without a GPU."""
        if self.gpu is None:
            return None
        info = read_gpu()
        return info.free_mb if info else None


def vram_budget(declared_mb: int | None, gpu: GpuInfo | None) -> int:
    """The budget: what the operator declared, else the GPU's total memory, else 0."""
    if declared_mb is not None:
        return declared_mb
    return gpu.total_mb if gpu else 0
