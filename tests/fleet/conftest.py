"""The multi-host proofs: worker hosts as network namespaces on a bridge, against Debian's
PostgreSQL server and an S3-protocol server listening on that bridge (tests/fleet/harness.py).

`make test` runs them in a reduced form (one run of each fault); `make chaos`
(MEDIAQ_CHAOS=full) repeats each fault and prints the figures. The server logs lock
waits past deadlock_timeout and every deadlock with both statements:
MEDIAQ_FLEET_PG_LOG=folder keeps its log, MEDIAQ_FLEET_PG_EXTRA adds postgresql.conf
lines (e.g. a shorter deadlock_timeout to see shorter waits)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.fleet.harness import Fleet, fleet, why_no_fleet

FULL = os.environ.get("MEDIAQ_CHAOS") == "full"

Figure = Callable[[str], None]


def scaled(full: int, reduced: int) -> int:
    """How many runs a fleet test makes in this mode."""
    return full if FULL else reduced


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = why_no_fleet()
    if reason:
        for item in items:
            if "tests/fleet/" in str(item.path).replace(os.sep, "/"):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def three_hosts() -> Iterator[Fleet]:
    """Debian's PostgreSQL on a bridge and three namespace hosts joined to it."""
    with fleet(3) as made:
        yield made


@pytest.fixture(scope="module")
def three_hosts_s3() -> Iterator[Fleet]:
    """As ``three_hosts``, with an S3-protocol server (moto) on the bridge too."""
    with fleet(3, s3=True) as made:
        yield made


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Figure:
    """Print a test's measured figure (shown with -s, and in the run's summary)."""
    def report(text: str) -> None:
        line = f"[fleet] {request.node.name}: {text}"
        print(line)
        request.config.stash.setdefault(FIGURES, []).append(line)
    return report


FIGURES = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("fleet figures")
        for line in lines:
            terminalreporter.write_line(line)
