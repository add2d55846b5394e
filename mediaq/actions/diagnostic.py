"""Diagnostic actions: test pipelines, alerts and retries without media."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.errors import PermanentError, TransientError
from mediaq.outputs import sha256_of


@action("noop", {"properties": {}})
def noop(ctx: ActionContext) -> ActionResult:
    """Do nothing and succeed."""
    return ActionResult(data={"noop": True})


@action("echo", {"properties": {"value": {"default": None}}})
def echo(ctx: ActionContext) -> ActionResult:
    """Return ``value``, which item of a fanned-out step this is, and the ``value`` of each
    step this one needs (a list for a fanned-out one): graphs shown without media."""
    received = {name: [o and o.get("value") for o in out] if isinstance(out, list)
                else out.get("value")
                for name, out in ctx.needs_outputs.items()}
    return ActionResult(data={"value": ctx.params["value"], "item": ctx.item_index,
                              "received": received})


@action("checksum", {"properties": {}})
def checksum(ctx: ActionContext) -> ActionResult:
    """The SHA-256 and size of the step's source (an earlier step's primary output, else
    the job's input): a step that reads one file of the job and nothing else."""
    path = ctx.source_path
    return ActionResult(data={"name": path.name, "size_bytes": path.stat().st_size,
                              "sha256": sha256_of(path), "source": ctx.source_location})


@action(
    "sleep",
    {"properties": {"seconds": {"type": "number", "minimum": 0, "default": 1},
                    "seconds_per_mb": {"type": "number", "minimum": 0, "default": 0},
                    "output_bytes": {"type": "integer", "minimum": 0, "default": 0},
                    "value": {"default": None}}},
)
def sleep(ctx: ActionContext) -> ActionResult:
    """Sleep for ``seconds``, plus ``seconds_per_mb`` of the input's size (work that grows
    with the input, as a transcode does), reporting progress and honouring cancel.
    ``output_bytes``: first write an output of that many random bytes (seeded by the job
    and the process: two workers' outputs differ), so that publishing can be tested
    around a worker stopped or killed mid-step."""
    outputs = []
    if ctx.params["output_bytes"]:
        path = ctx.output_path(f"{ctx.job_code}_sleep{ctx.step_number}.bin")
        path.write_bytes(random.Random(f"{ctx.job_code}:{os.getpid()}").randbytes(int(ctx.params["output_bytes"])))
        outputs.append(OutputFile(path, role="primary"))
    per_mb = float(ctx.params["seconds_per_mb"])
    size_mb = ctx.input_path.stat().st_size / 1e6 if per_mb else 0.0
    seconds = float(ctx.params["seconds"]) + per_mb * size_mb
    ticks = max(1, int(seconds * 10))
    for i in range(ticks):
        ctx.sleep(seconds / ticks)
        ctx.progress((i + 1) / ticks, "sleeping")
    # ``value`` is given back as echo gives it, so a fan-in of sleeping items shows
    # what it received, in order.
    return ActionResult(outputs=outputs, data={"slept_seconds": seconds,
                                               "value": ctx.params["value"]})


@action(
    "fail",
    {
        "properties": {
            "kind": {"enum": ["permanent", "transient"], "default": "permanent"},
            "times": {"type": "integer", "minimum": 0},
            "message": {"type": "string", "default": "failed on purpose"},
            "while_exists": {"type": "string"},
        }
    },
)
def fail(ctx: ActionContext) -> ActionResult:
    """Fail (``kind`` permanent|transient); with ``times`` only the first N attempts fail;
    with ``while_exists`` only while that file exists (a dependency that recovers, for
    every job at once, when the file is removed)."""
    times = ctx.params.get("times")
    if times is not None and ctx.attempt >= times:
        return ActionResult(data={"failed_attempts": times})
    flag = ctx.params.get("while_exists")
    if flag is not None and not os.path.exists(flag):
        return ActionResult(data={"recovered": True})
    error = PermanentError if ctx.params["kind"] == "permanent" else TransientError
    raise error(str(ctx.params["message"]))


@action("sleep_native", {"properties": {"seconds": {"type": "integer", "minimum": 0,
                                                    "default": 1}}})
def sleep_native(ctx: ActionContext) -> ActionResult:
    """Block in the C library's sleep(3) for ``seconds``, deaf to cancel and deadlines:
    a decoder stuck in native code, for the worker's watchdog to abandon."""
    ctx.progress(0.01, "blocking in sleep(3)")  # one report: then the progress stalls
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.sleep(int(ctx.params["seconds"]))
    return ActionResult(data={"slept_seconds": ctx.params["seconds"]})
