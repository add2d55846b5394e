"""Running one step's action in a child process, under memory and CPU-time limits.

The worker has threads and database connections, so children come from a
``forkserver`` (a clean process that has imported the actions once; forking from
it costs milliseconds), never from ``fork`` of the worker itself. The child gets
``RLIMIT_AS`` (``step_memory_limit_mb``) and ``RLIMIT_CPU``
(``step_cpu_seconds_limit``) and runs the action with a context whose callbacks
talk back over a pipe: progress, log lines, ``submit_files`` and the reads of earlier
outputs (``local_path``, ``source_path``: fetched by the parent, on demand) reach the
parent's context; the parent checks cancellation, pauses, lost leases and the deadline
while it waits, and ends the child when the step must stop. A child that runs out
of memory, past its CPU time, or dies of a signal becomes one clear PermanentError
and the worker goes on with its next job.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
from pathlib import Path
from typing import Any

from mediaq.actions import BUILTIN_MODULES, ActionContext, ActionResult, get_action
from mediaq.config import LimitSettings, Settings
from mediaq.errors import PermanentError

POLL_S = 0.05
# A failed step whose peak address space came this close to the memory limit is
# reported as having exceeded it (the allocation that failed was the one past it).
PEAK_MARGIN = 64 << 20

_context_lock = threading.Lock()
_mp_context: Any = None


def _forkserver() -> Any:
    global _mp_context
    with _context_lock:
        if _mp_context is None:
            ctx = multiprocessing.get_context("forkserver")
            # The server imports the actions (PyAV, Pillow, numpy…) once; each child
            # forks from it with them loaded.
            ctx.set_forkserver_preload(["mediaq.worker.isolation", *BUILTIN_MODULES])
            _mp_context = ctx
        return _mp_context


def isolation_wanted(settings: Settings, action_name: str) -> bool:
    """A step runs in a child under the step limits when they are set, and always for an
    action that asks for a process of its own (it holds the GIL)."""
    return settings.limits.isolated or get_action(action_name).own_process


# --------------------------------------------------------------------------- parent


def run_isolated(action_name: str, contexts: list[ActionContext], *, fused: bool,
                 settings: Settings) -> list[ActionResult]:
    """Run ``action_name`` (its ``fuse`` when ``fused``) on ``contexts`` in a child;
    one result per context, or the action's exception re-raised here."""
    lead = contexts[0]
    payload = {
        "action": action_name, "fused": fused,
        "memory_mb": settings.limits.step_memory_limit_mb,
        "cpu_seconds": settings.limits.step_cpu_seconds_limit,
        "contexts": [_portable(ctx) for ctx in contexts],
    }
    mp = _forkserver()
    parent_end, child_end = mp.Pipe()
    process = mp.Process(target=_child_main, args=(child_end, payload), daemon=True,
                         name=f"mediaq-step-{lead.job_code}-{lead.step_number}")
    process.start()
    child_end.close()
    try:
        return _serve(parent_end, process, contexts, settings)
    finally:
        parent_end.close()
        if process.is_alive():
            process.kill()
        process.join(5)
        process.close()


def _portable(ctx: ActionContext) -> dict[str, Any]:
    # The source goes as it is if it is a path already; else the child asks for it
    # (``_child_main``), so the parent fetches it only if the action reads it.
    source = ctx.source_if_resolved
    return {
        "job_code": ctx.job_code, "step_number": ctx.step_number, "step_name": ctx.step_name,
        "input_path": ctx.input_path, "source_path": source, "params": ctx.params,
        "source_location": ctx.source_location,
        "staging_dir": ctx.staging_dir, "attempt": ctx.attempt, "deadline": ctx.deadline,
        "previous_outputs": ctx.previous_outputs, "workflow_code": ctx.workflow_code,
        "input_roots": ctx.input_roots, "library_roots": ctx.library_roots,
        "needs_outputs": ctx.needs_outputs, "item_index": ctx.item_index,
    }


def _serve(conn: multiprocessing.connection.Connection, process: Any,
           contexts: list[ActionContext], settings: Settings) -> list[ActionResult]:
    lead = contexts[0]
    while True:
        # Cancel, pause, a lost lease or the deadline raise here; the caller's finally
        # then ends the child.
        lead.check()
        try:
            ready = conn.poll(POLL_S)
            message = conn.recv() if ready else None
        except (EOFError, OSError):
            message = None
            ready = True
        if message is None:
            if ready or not process.is_alive():
                process.join(2)
                raise _death(process.exitcode, lead, settings.limits)
            continue
        kind = message[0]
        if kind == "progress":
            lead.progress(message[1], message[2])
        elif kind == "log":
            lead.log(message[1])
        elif kind == "submit":
            _, workflow_code, paths, skip_existing, priority = message
            try:
                reply: tuple[Any, ...] = ("ok", lead.submit_files(
                    workflow_code, paths, skip_existing=skip_existing, priority=priority))
            except Exception as exc:  # handed to the child, which raises it in the action
                reply = ("error", _picklable(exc))
            conn.send(reply)
        elif kind == "read":  # an earlier output (None: the source) as a path here
            _, index, output = message
            try:
                ctx = contexts[index]
                reply = ("ok", ctx.source_path if output is None else ctx.local_path(output))
            except Exception as exc:  # raised in the action, as if read there
                reply = ("error", _picklable(exc))
            conn.send(reply)
        elif kind == "result":
            results: list[ActionResult] = message[1]
            return results
        elif kind == "error":
            raise message[1]


def _death(exitcode: int | None, ctx: ActionContext, limits: LimitSettings) -> Exception:
    """What a child that ended without an answer died of, as one clear error."""
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        if number == signal.SIGXCPU:
            return PermanentError(f"step '{ctx.step_name}' exceeded its CPU-time limit of "
                                  f"{limits.step_cpu_seconds_limit} s")
        name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
        if number == signal.SIGKILL and limits.step_cpu_seconds_limit > 0:
            return PermanentError(f"step '{ctx.step_name}' was killed (SIGKILL): past its "
                                  f"CPU-time limit of {limits.step_cpu_seconds_limit} s, or "
                                  f"by the system")
        hint = (f" (its memory limit is {limits.step_memory_limit_mb} MB)"
                if limits.step_memory_limit_mb > 0 else "")
        return PermanentError(f"step '{ctx.step_name}' process died of signal {name}{hint}")
    return PermanentError(f"step '{ctx.step_name}' process exited with status {exitcode} "
                          "without a result")


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


# --------------------------------------------------------------------------- child


class _ChildEvent(threading.Event):
    """The child's cancel event: the parent ends the child instead of setting it."""


def _child_main(conn: multiprocessing.connection.Connection, payload: dict[str, Any]) -> None:
    import resource

    memory_mb, cpu_s = payload["memory_mb"], payload["cpu_seconds"]
    if memory_mb > 0:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_s > 0:  # SIGXCPU at the soft limit; SIGKILL a little later if it is ignored
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    def submit(workflow_code: str, paths: list[Path], *, skip_existing: bool,
               priority: int | None) -> list[str | None]:
        with lock:
            conn.send(("submit", workflow_code, paths, skip_existing, priority))
            answer = conn.recv()
        if answer[0] == "error":
            raise answer[1]
        result: list[str | None] = answer[1]
        return result

    def read(index: int, output: dict[str, Any] | None) -> Path:
        with lock:
            conn.send(("read", index, output))
            answer = conn.recv()
        if answer[0] == "error":
            raise answer[1]
        path: Path = answer[1]
        return path

    contexts = [ActionContext(**{**fields, "source_path": fields["source_path"]
                                 or functools.partial(read, index, None)},
                              cancel_event=_ChildEvent(),
                              on_progress=lambda f, stage: send(("progress", f, stage)),
                              on_log=lambda line: send(("log", line)),
                              submit_files=submit,
                              resolve_output=functools.partial(read, index))
                for index, fields in enumerate(payload["contexts"])]
    try:
        action = get_action(payload["action"])
        if payload["fused"]:
            assert action.fuse is not None
            results = action.fuse(contexts)
        else:
            results = [action.fn(contexts[0])]
        message: tuple[Any, ...] = ("result", results)
    except MemoryError:
        message = ("error", _memory_error(contexts[0], memory_mb) if memory_mb > 0
                   else MemoryError())
    except BaseException as exc:  # every outcome goes back to the parent to classify
        # A library whose allocation failed under the limit reports it its own way
        # ("Generic error in an external library", "out of memory"): a peak at the
        # limit says what really happened.
        if memory_mb > 0 and _peak_bytes() >= (memory_mb << 20) - PEAK_MARGIN:
            message = ("error", _memory_error(contexts[0], memory_mb))
        else:
            message = ("error", _picklable(exc))
    try:
        send(message)
    except (MemoryError, pickle.PicklingError) as exc:
        send(("error", RuntimeError(f"{type(exc).__name__}: the step's result could not be "
                                    "sent to the worker")))
    conn.close()
    os._exit(0)  # no atexit handlers of libraries the parent owns


def _peak_bytes() -> int:
    """This process's peak address-space size (what RLIMIT_AS caps)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _memory_error(ctx: ActionContext, memory_mb: int) -> PermanentError:
    return PermanentError(f"step '{ctx.step_name}' exceeded its memory limit of {memory_mb} MB")
