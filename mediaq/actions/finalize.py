"""The closing step of every seeded workflow: check the job's outputs and list them.

``finalize_job`` reads what earlier steps recorded (``ctx.previous_outputs``),
checks that each file is still there with the recorded size (and, when asked,
the recorded SHA-256), and writes a manifest next to them. The engine copies the
same list, checksums included, into the job's ``output_metadata``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mediaq.actions import action
from mediaq.actions.base import ActionContext, ActionResult, OutputFile
from mediaq.errors import PermanentError
from mediaq.outputs import sha256_of


@action("finalize_job", {
    "properties": {
        "verify_checksums": {"type": "boolean", "default": False},
        "manifest": {"type": "boolean", "default": True},
    },
})
def finalize_job(ctx: ActionContext) -> ActionResult:
    """Check every output of the job and write a manifest of them."""
    outputs = ctx.previous_outputs
    for index, output in enumerate(outputs, start=1):
        ctx.progress(index / max(len(outputs), 1), "verifying outputs")
        _verify(ctx, output, checksum=ctx.params["verify_checksums"])
    summary = {
        "job_code": ctx.job_code,
        "output_count": len(outputs),
        "total_bytes": sum(int(o.get("size_bytes") or 0) for o in outputs),
        "by_role": _count_by_role(outputs),
    }
    if not ctx.params["manifest"]:
        return ActionResult(data=summary)
    path = ctx.output_path(f"{ctx.job_code}_manifest.json")
    manifest = {**summary, "outputs": [_manifest_entry(o) for o in outputs]}
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return ActionResult(outputs=[OutputFile(path, role="report")], data=summary)


def _verify(ctx: ActionContext, output: dict[str, Any], *, checksum: bool) -> None:
    # An output recorded as an s3:// object is fetched here (reused if this host made it).
    path = ctx.local_path(output)
    if not path.is_file():
        raise PermanentError(f"output {path.name} of step {output.get('step')} is missing")
    size = path.stat().st_size
    if output.get("size_bytes") is not None and size != output["size_bytes"]:
        raise PermanentError(f"output {path.name} has {size} bytes, "
                             f"{output['size_bytes']} were recorded")
    if checksum and output.get("sha256") and sha256_of(path) != output["sha256"]:
        raise PermanentError(f"output {path.name} does not match its recorded SHA-256")


def _count_by_role(outputs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for output in outputs:
        counts[output.get("role", "primary")] = counts.get(output.get("role", "primary"), 0) + 1
    return counts


def _manifest_entry(output: dict[str, Any]) -> dict[str, Any]:
    entry = dict(output)
    entry.pop("local_path", None)  # this host's copy, not the output's location
    entry["file"] = Path(output["path"]).name  # the manifest lives beside its outputs
    return entry
