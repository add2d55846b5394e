"""How fast a cancel stops a running step: the product's 2 s promise, as a figure.

The regular suite checks that cancel interrupts a step (tests/test_lifecycle.py); how
long it takes depends on the machine's load, so it is measured here, in a run that says
its figures, and never asserted as a wall-clock bound in `make test`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.chaos.conftest import scaled
from tests.chaos.fault_helpers import percentile, spread
from tests.helpers import MediaqEnv, diagnostic_workflow, wait_for


def test_cancel_stops_running_steps_fast(mq: MediaqEnv, figure: Callable[[str], None]) -> None:
    rounds = scaled(20, 3)
    mq.apply_workflow(diagnostic_workflow("C-CANCEL", {"action": "sleep",
                                                       "parameters": {"seconds": 120}}))
    mq.start_worker("--limits", "cpu=2")
    latencies: list[float] = []
    for n in range(rounds):
        code = mq.submit("C-CANCEL", mq.input_file(f"c{n}.bin"))
        wait_for(lambda c=code: mq.job(c)["progress_stage"] == "sleeping", timeout=60,
                 message="the step to run")
        asked = time.monotonic()
        mq.cli("cancel", code)
        wait_for(lambda c=code: mq.job(c)["status"] == "cancelled", timeout=60, interval=0.02,
                 message="cancelled")
        latencies.append(time.monotonic() - asked)
        step = mq.one("SELECT se.status FROM step_executions se JOIN workflow_jobs j"
                      " ON j.id = se.job_id WHERE j.job_code = %s", (code,))
        assert step["status"] == "cancelled"
    figure(f"{rounds} running 120 s steps cancelled through the CLI: request to "
           f"'cancelled' {spread(latencies)} (promise: 2 s; p90 {percentile(latencies, 90):.2f} s)")
