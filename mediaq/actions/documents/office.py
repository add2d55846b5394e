"""Running LibreOffice headless to convert office documents (DOCX, text) to PDF.

Each conversion gets its own throw-away profile (``-env:UserInstallation``), so
concurrent conversions never share a lock file, and that profile turns macros and
links to untrusted locations off before LibreOffice first starts. LibreOffice runs
in a process group of its own that is killed when the step is cancelled, paused or
times out: no ``soffice.bin`` is ever left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from mediaq.actions.base import ActionContext
from mediaq.errors import PermanentError, TransientError

ENV_BINARY = "MEDIAQ_SOFFICE"
# A guard for runs without a step deadline; the step's own timeout normally ends it sooner.
CONVERSION_TIMEOUT_S = 600.0
_POLL_S = 0.1

# Written into the fresh profile before LibreOffice starts: never run document macros,
# never follow links from documents that are not in a trusted location.
_LOCKED_DOWN_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry"
           xmlns:xs="http://www.w3.org/2001/XMLSchema"
           xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">\
<prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">\
<prop oor:name="DisableMacrosExecution" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">\
<prop oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
</oor:items>
"""


def libreoffice_binary() -> str | None:
    """The LibreOffice program to run: ``$MEDIAQ_SOFFICE`` when set, else soffice on PATH."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        # An explicit choice that does not work is "not available", never a silent fallback.
        return shutil.which(configured)
    return shutil.which("soffice") or shutil.which("libreoffice")


def not_available(name: str, purpose: str) -> PermanentError:
    """The one-line error for a step that needs LibreOffice on a machine without it."""
    return PermanentError(
        f"{name}: {purpose} needs LibreOffice, which is not available "
        f"(install libreoffice-writer-nogui or set {ENV_BINARY})"
    )


def convert_with_libreoffice(
    ctx: ActionContext,
    source: Path,
    target_format: str,
    outdir: Path,
    *,
    name: str | None = None,
    purpose: str | None = None,
    infilter: str | None = None,
) -> Path:
    """Convert ``source`` to ``target_format`` (e.g. "pdf") into ``outdir``; the new file.

    ``name`` is the file name error messages start with (default ``source.name``),
    ``purpose`` what the caller is doing, for the "not available" error, and
    ``infilter`` an import filter with options (e.g. ``Text (encoded):UTF8,LF,,,``).
    ``source`` should have a plain name: LibreOffice names its output after it.
    """
    name = name or source.name
    binary = libreoffice_binary()
    if binary is None:
        raise not_available(name, purpose or f"converting to {target_format.upper()}")
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mediaq-soffice-") as scratch:
        profile = _locked_down_profile(Path(scratch) / "profile")
        command = [
            binary,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless", "--invisible", "--norestore", "--nologo", "--nodefault",
            "--nolockcheck",
            *([f"--infilter={infilter}"] if infilter else []),
            "--convert-to", target_format,
            "--outdir", str(outdir),
            str(source),
        ]
        log_path = Path(scratch) / "soffice.log"
        returncode = _run_to_completion(ctx, command, log_path, name)
        produced = outdir / f"{source.stem}.{target_format.split(':')[0]}"
        if returncode != 0 or not produced.is_file() or produced.stat().st_size == 0:
            reason = _last_line(log_path) or f"exit status {returncode}, no output"
            raise PermanentError(f"{name}: LibreOffice could not convert it to "
                                 f"{target_format} ({reason})")
        return produced


def _locked_down_profile(profile: Path) -> Path:
    user = profile / "user"
    user.mkdir(parents=True)
    (user / "registrymodifications.xcu").write_text(_LOCKED_DOWN_PROFILE, encoding="utf-8")
    return profile


def _run_to_completion(ctx: ActionContext, command: list[str], log_path: Path,
                       name: str) -> int:
    """Run ``command`` in its own process group, polling ``ctx.check()``; its exit status.

    Output goes to a file, not a pipe, so a chatty LibreOffice cannot block on a full pipe.
    Whatever ends the wait (cancel, pause, timeout, an error) kills the whole group.
    """
    env = {**os.environ, "SAL_USE_VCLPLUGIN": "svp"}  # no display needed, none touched
    with log_path.open("wb") as log:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )
        except OSError as exc:
            raise TransientError(f"{name}: LibreOffice could not be started "
                                 f"({exc.strerror or exc})") from None
    try:
        return _wait(ctx, process, name)
    finally:
        _kill_group(process)


def _wait(ctx: ActionContext, process: subprocess.Popen[bytes], name: str) -> int:
    give_up = time.monotonic() + CONVERSION_TIMEOUT_S
    while True:
        ctx.check()
        try:
            return process.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            if time.monotonic() > give_up:
                raise TransientError(
                    f"{name}: LibreOffice did not finish within {CONVERSION_TIMEOUT_S:.0f} s"
                ) from None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill LibreOffice and everything it started (soffice forks soffice.bin), then reap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _last_line(log_path: Path) -> str:
    """The last meaningful line LibreOffice printed (its warnings about Java are noise)."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    meaningful = [line.strip() for line in lines if line.strip() and "javaldx" not in line]
    return meaningful[-1][:300] if meaningful else ""
