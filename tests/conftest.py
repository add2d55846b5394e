"""Test fixtures: a real PostgreSQL (embedded, or MEDIAQ_TEST_DATABASE_URL), one migrated
template database per session, and a fresh database per test cloned from it."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from mediaq import db, migrate
from mediaq.config import Settings, load_settings
from tests.helpers import MediaqEnv, missing_tool_summary, with_database

TEMPLATE = f"mediaq_template_{os.getpid()}"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An admin URL of a real PostgreSQL server for the whole session."""
    external = os.environ.get("MEDIAQ_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from mediaq import embedded

    home = Path(tempfile.mkdtemp(prefix="mediaq-test-pg-"))
    os.chmod(home, 0o755)
    url = embedded.ensure_running(home)
    try:
        yield with_database(url, "postgres")
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = with_database(server_url, TEMPLATE)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


@contextmanager
def scratch_database(server_url: str, template: str | None) -> Iterator[str]:
    """A database that exists for the duration of the block (a copy of ``template``)."""
    name = f"mediaq_test_{uuid.uuid4().hex[:10]}"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy_of}')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with scratch_database(server_url, TEMPLATE) as url:
        yield url


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database with no mediaq schema."""
    with scratch_database(server_url, None) as url:
        yield url


@pytest.fixture
def mq(tmp_path: Path, database_url: str) -> Iterator[MediaqEnv]:
    """A mediaq installation: database, home, input root, and helpers to drive it."""
    env = MediaqEnv.create(tmp_path, database_url)
    try:
        yield env
    finally:
        env.stop_workers()


@pytest.fixture
def settings(mq: MediaqEnv) -> Settings:
    return load_settings(mq.env)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Generator[None]:
    """End the report with one line naming the tools whose absence skipped tests.

    A wrapper that runs first, so the line comes after the short test summary (which
    lists every skip) and just before the final counts. Under pytest-xdist the
    controller holds every worker's skip reports, so one line covers them all.
    """
    yield
    messages = []
    for report in terminalreporter.stats.get("skipped", []):
        # A skip's longrepr is (path, line, "Skipped: <reason>"), also once it has
        # crossed from an xdist worker.
        if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            messages.append(str(report.longrepr[2]))
    line = missing_tool_summary(messages)
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool[db.Connection]]:
    """A worker's connection pool on a fresh, migrated database."""
    pool = db.make_pool(database_url, size=2)
    try:
        yield pool
    finally:
        pool.close()
