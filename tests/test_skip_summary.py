"""Tests skipped for a missing tool are named in one closing line with the one fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import TOOL_PACKAGES, missing_tool_reason, missing_tool_summary

ROOT = Path(__file__).resolve().parent.parent


def test_the_summary_counts_missing_tool_skips_and_names_each_tool_once() -> None:
    messages = [
        f"Skipped: {missing_tool_reason('ffmpeg', 'ffprobe')}",
        missing_tool_reason("chromium"),
        missing_tool_reason("ffprobe"),
        "Skipped: network namespaces need root",  # not a tool: not counted
    ]
    assert missing_tool_summary(messages) == (
        "3 tests skipped for missing tools (chromium, ffmpeg, ffprobe): run 'make test-deps'")
    assert missing_tool_summary(["Skipped: network namespaces need root"]) is None


def test_every_tool_reason_names_its_debian_package() -> None:
    for tool, package in TOOL_PACKAGES.items():
        reason = missing_tool_reason(tool)
        assert f"Debian package {package}" in reason and "make test-deps" in reason
        assert missing_tool_summary([reason]) == (
            f"1 test skipped for missing tools ({tool}): run 'make test-deps'")


def test_the_line_closes_a_run_under_xdist(tmp_path: Path) -> None:
    # An empty PATH hides promtool; its tests skip on the xdist workers, and the line
    # is printed by the controller, right before the final counts.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(PATH=str(tmp_path), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
         "tests/test_deploy.py", "-k", "promtool or prometheus"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    skipped = int(lines[-1].split(" skipped")[0].split()[-1])
    assert skipped >= 1
    assert lines[-2] == (f"{skipped} test{'s' if skipped > 1 else ''} skipped for missing "
                         "tools (promtool): run 'make test-deps'")


def test_make_test_deps_installs_the_package_of_every_tool_the_tests_name() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    variables = {name.strip(): value.split() for name, value in (
        line.split(":=", 1) for line in makefile.splitlines() if line.startswith("TEST_"))}
    packages = variables["TEST_PACKAGES"]
    assert sorted(packages) == sorted(set(TOOL_PACKAGES.values()))
    # One program of each package tells make test-deps whether to install anything.
    assert sorted(TOOL_PACKAGES[tool] for tool in variables["TEST_TOOLS"]) == \
        sorted(packages)
    assert "make test-deps" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
