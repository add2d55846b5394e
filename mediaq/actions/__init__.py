"""Media actions, registered by name with a parameter schema.

The modules in :data:`BUILTIN_MODULES` and third-party plugins (entry point group
``mediaq.actions``) register with :func:`action`; the engine looks actions up with
:func:`get_action`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import jsonschema

from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.errors import ActionNotAvailable, InvalidParameters

ActionFn = Callable[[ActionContext], ActionResult]
FusedFn = Callable[[list[ActionContext]], list[ActionResult]]
# Rewrites a step's parameters before the schema sees them (a named preset expanded
# under them) and checks what a schema says badly (which number a mode needs); the
# bool is ``partial`` (a workflow's step, before the job's parameters are merged in).
PrepareFn = Callable[[dict[str, Any], bool], dict[str, Any]]

__all__ = [
    "ActionContext",
    "ActionResult",
    "OutputFile",
    "RegisteredAction",
    "action",
    "available_actions",
    "fused",
    "get_action",
]

ENTRY_POINT_GROUP = "mediaq.actions"
# The modules that register the built-in actions, imported in this order. Plugins
# come from the entry point group; an entry point naming a module of this package is
# ignored (see plugin_entry_points), so no built-in is loaded twice.
BUILTIN_MODULES = (
    "mediaq.actions.diagnostic",
    "mediaq.actions.image",
    "mediaq.actions.image_resize",
    "mediaq.actions.image_metadata",
    "mediaq.actions.documents.actions",
    "mediaq.actions.video",
    "mediaq.actions.chunked.plan",
    "mediaq.actions.chunked.encode",
    "mediaq.actions.chunked.stitch",
    "mediaq.actions.chunked.ladder",
    "mediaq.actions.chunked.package",
    "mediaq.actions.audio.inspect",
    "mediaq.actions.audio.transcode",
    "mediaq.actions.audio.normalize",
    "mediaq.actions.audio.waveform",
    "mediaq.actions.streaming.hls",
    "mediaq.actions.streaming.dash",
    "mediaq.actions.streaming.cmaf",
    "mediaq.actions.editing.sprites",
    "mediaq.actions.editing.preview",
    "mediaq.actions.editing.compile",
    "mediaq.actions.analysis.scenes",
    "mediaq.actions.analysis.transcribe",
    "mediaq.actions.finalize",
    "mediaq.actions.library",
    "mediaq.actions.reels.scenes_extract",
    "mediaq.actions.reels.highlights",
    "mediaq.actions.reels.compilations",
    "mediaq.actions.vision.actions",
)


@dataclass(frozen=True)
class RegisteredAction:
    name: str
    fn: ActionFn
    schema: dict[str, Any]
    description: str
    produces_primary: bool
    # "directory" for actions whose job input is a folder (scan); "file" for the rest.
    input_kind: str = "file"
    # Runs several consecutive steps of this action that read the same source in one
    # pass (decode once, encode many); one result per context, in order.
    fuse: FusedFn | None = None
    prepare: PrepareFn | None = None
    # Runs in a child process of its own: its library holds the GIL for long stretches
    # (pocketsphinx's decoder), which would starve the worker's heartbeat thread and
    # lose the task's lease while the step is still working.
    own_process: bool = False

    @functools.cached_property
    def _validator(self) -> jsonschema.protocols.Validator:
        # Built once: jsonschema.validate() checks the schema itself on every call,
        # which costs more than a thumbnail's resize.
        cls = jsonschema.validators.validator_for(self.schema)
        cls.check_schema(self.schema)
        return cls(self.schema)

    @functools.cached_property
    def _partial_validator(self) -> jsonschema.protocols.Validator:
        # The schema without its top-level "required": what a workflow step may give.
        schema = {k: v for k, v in self.schema.items() if k != "required"}
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        return cls(schema)

    def validate(self, params: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
        """Return ``params`` with schema defaults applied, or raise InvalidParameters.

        ``partial``: the parameters a workflow step gives, which may leave a key the
        schema requires to each job (``--param STEP.KEY=VALUE``); everything given is
        checked all the same (types, values, unknown keys). The step's parameters with
        the job's merged in are checked in full when the step runs.
        """
        if self.prepare is not None:
            try:
                params = self.prepare(params, partial)
            except InvalidParameters as exc:
                raise InvalidParameters(f"action '{self.name}': {exc}") from None
        validator = self._partial_validator if partial else self._validator
        error = jsonschema.exceptions.best_match(validator.iter_errors(params))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "parameters"
            raise InvalidParameters(f"action '{self.name}': {where}: {error.message}")
        merged = {
            key: copy.deepcopy(spec["default"])
            for key, spec in self.schema.get("properties", {}).items()
            if "default" in spec
        }
        merged.update(params)
        return merged


_registry: dict[str, RegisteredAction] = {}
_load_errors: dict[str, str] = {}
_load_lock = threading.Lock()
_loaded = False


def action(
    name: str,
    schema: dict[str, Any] | None = None,
    *,
    produces_primary: bool = False,
    input_kind: str = "file",
    prepare: PrepareFn | None = None,
    own_process: bool = False,
) -> Callable[[ActionFn], ActionFn]:
    """Register ``fn`` as the action ``name``.

    ``schema`` is a JSON Schema for the step's parameters (an object; unknown keys
    are refused unless the schema says otherwise). ``produces_primary`` marks
    actions whose primary output becomes the next step's source; ``input_kind``
    "directory" lets a workflow that starts with this action take a folder as input;
    ``prepare`` rewrites and cross-checks parameters before the schema does (presets);
    ``own_process`` runs it in a child process (a library that holds the GIL).
    """
    full_schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    full_schema.update(schema or {})

    def register(fn: ActionFn) -> ActionFn:
        _registry[name] = RegisteredAction(
            name=name,
            fn=fn,
            schema=full_schema,
            description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
            produces_primary=produces_primary,
            input_kind=input_kind,
            prepare=prepare,
            own_process=own_process,
        )
        return fn

    return register


def fused(name: str) -> Callable[[FusedFn], FusedFn]:
    """Register ``fn`` as the one-pass form of the (already registered) action ``name``."""

    def register(fn: FusedFn) -> FusedFn:
        _registry[name] = dataclasses.replace(_registry[name], fuse=fn)
        return fn

    return register


def _load_plugins() -> None:
    """Import built-in action modules and plugins once; a broken plugin only loses its own."""
    global _loaded
    with _load_lock:
        if _loaded:
            return
        for module in BUILTIN_MODULES:
            _load(module, functools.partial(importlib.import_module, module))
        for ep in plugin_entry_points():
            _load(ep.value, ep.load)
        _loaded = True


def plugin_entry_points() -> list[EntryPoint]:
    """The third-party entry points of the group, each once. An entry point naming a
    module of this package is skipped: built-ins load from BUILTIN_MODULES only (an
    older install of mediaq may still declare some of them as entry points)."""
    seen: set[str] = set()
    plugins: list[EntryPoint] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if _is_builtin(ep.module) or ep.value in seen:
            continue
        seen.add(ep.value)
        plugins.append(ep)
    return plugins


def _is_builtin(module: str) -> bool:
    return module == __name__ or module.startswith(f"{__name__}.")


def _load(name: str, loader: Callable[[], object]) -> None:
    try:
        loaded = loader()
    except Exception as exc:
        _load_errors[name] = f"{type(exc).__name__}: {exc}"
        return
    if callable(loaded):
        loaded()


def get_action(name: str) -> RegisteredAction:
    """The registered action ``name``; ActionNotAvailable (permanent) if none."""
    _load_plugins()
    try:
        return _registry[name]
    except KeyError:
        broken = "; ".join(f"{m} failed to load ({e})" for m, e in _load_errors.items())
        raise ActionNotAvailable(
            f"action '{name}' is not available yet (no installed plugin provides it)"
            + (f"; {broken}" if broken else "")
        ) from None


def available_actions() -> dict[str, RegisteredAction]:
    _load_plugins()
    return dict(sorted(_registry.items()))
