"""Retry back-off: base · 2^n seconds, full jitter on the upper half, capped."""

from __future__ import annotations

import random


def retry_delay(
    retry_number: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry ``retry_number`` (0 for the first retry)."""
    ceiling = min(cap, base * (2 ** max(0, retry_number)))
    # Jitter spreads retries of jobs that failed together (an outage) over time.
    return (rng or random).uniform(ceiling / 2, ceiling)
