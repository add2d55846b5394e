"""The ``mediaq`` command line."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, TypeVar

import click
import psycopg

from mediaq import db, migrate
from mediaq.config import Settings, load_settings
from mediaq.errors import ConfigError, Interrupt, MediaqError

F = TypeVar("F", bound=Callable[..., Any])


class Env:
    """Settings and a database URL, resolved once per command."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._url: str | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = db.database_url(self.settings)
        return self._url

    @contextmanager
    def connect(self, *, check_schema: bool = True) -> Iterator[db.Connection]:
        """A connection in one transaction, committed when the command succeeds."""
        if check_schema:
            migrate.require_current_schema(self.url)
        with db.connect(self.url, application="mediaq-cli") as conn, conn.transaction():
            yield conn

    @contextmanager
    def connect_batches(self) -> Iterator[db.Connection]:
        """An autocommit connection: each ``conn.transaction()`` of a bulk operation (one
        batch) commits by itself, so a long run holds no lock for longer than a batch."""
        migrate.require_current_schema(self.url)
        with db.connect(self.url, autocommit=True, application="mediaq-cli") as conn:
            yield conn


pass_env = click.make_pass_decorator(Env, ensure=True)


class Stoppable(Protocol):
    def stop(self) -> None: ...


def run_in_foreground(env: Env, loop: Stoppable, run: Callable[[], int]) -> int:
    """Run a service loop (notifier, triggers) until it ends or SIGTERM/SIGINT stops it."""
    from mediaq import logs  # structlog only for the commands that log

    logs.configure(env.settings.logging.format, env.settings.logging.level)
    migrate.require_current_schema(env.url)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    return run()


# Exit statuses. Every refusal a person can act on exits 1, whatever its family:
# scripts written against earlier releases test for 1, and the one-line message
# says what is wrong. Usage errors stay click's 2.
EXIT_REFUSED = 1
EXIT_SOFTWARE = 70  # sysexits' EX_SOFTWARE: a bug, not something the caller did


class MediaqGroup(click.Group):
    """Turns known errors into one line on stderr and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MediaqError as exc:
            _fail(_family_prefix(exc) + exc.message, EXIT_REFUSED)
        except Interrupt as exc:
            # Signals steer the executor inside `mediaq worker`; one reaching the
            # command line is a bug, reported as one instead of as a refusal.
            _fail(f"internal error: {type(exc).__name__} escaped: {exc.message}",
                  EXIT_SOFTWARE)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            _fail(f"database unavailable: {first}", EXIT_REFUSED)
        except psycopg.Error as exc:
            detail = exc.diag.message_primary or str(exc).strip().splitlines()[0]
            _fail(f"database refused the request: {detail}", EXIT_REFUSED)


def _family_prefix(exc: MediaqError) -> str:
    """Settings problems are named as such: the fix is in the environment or the file,
    not in the command's arguments. Other families' messages speak for themselves."""
    return "configuration: " if isinstance(exc, ConfigError) else ""


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


@click.group(cls=MediaqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mediaq")
def main() -> None:
    """mediaq: media workflows on PostgreSQL."""


def register() -> None:
    from mediaq.cli import (
        asset_commands,
        db_commands,
        job_commands,
        notify_commands,
        ops_commands,
        queue_commands,
        report_commands,
        trigger_commands,
        web_commands,
        worker_commands,
        workflow_commands,
    )

    for module in (asset_commands, db_commands, job_commands, notify_commands, ops_commands,
                   queue_commands, report_commands, trigger_commands, web_commands,
                   worker_commands, workflow_commands):
        for command in module.COMMANDS:
            main.add_command(command)


register()
