"""The reliability suite: `make chaos` runs it in full (MEDIAQ_CHAOS=full); `make test`
runs the same tests in a reduced form so CI keeps watch over every fault."""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("MEDIAQ_CHAOS") == "full"


def scaled(full: int, reduced: int) -> int:
    """How many runs, jobs or files a chaos test uses in this mode."""
    return full if FULL else reduced


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> object:
    """Print a test's measured figure so `make chaos` shows it (pytest -s or the summary)."""
    def report(text: str) -> None:
        line = f"[chaos] {request.node.name}: {text}"
        print(line)
        request.config.stash.setdefault(FIGURES, []).append(line)
    return report


FIGURES = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("chaos figures")
        for line in lines:
            terminalreporter.write_line(line)
