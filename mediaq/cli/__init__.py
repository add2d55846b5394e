"""The ``mediaq`` command line."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import click
import psycopg

from mediaq import db, migrate
from mediaq.config import Settings, load_settings
from mediaq.errors import MediaqError

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


pass_env = click.make_pass_decorator(Env, ensure=True)


class Stoppable(Protocol):
    def stop(self) -> None: ...


def run_in_foreground(env: Env, loop: Stoppable, run: Callable[[], int]) -> int:
    """Run a service loop (notifier, triggers) until it ends or SIGTERM/SIGINT stops it."""
    from mediaq import logs  # structlog only for the commands that log

    logs.configure(env.settings.log_format, env.settings.log_level)
    migrate.require_current_schema(env.url)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: loop.stop())
    return run()


class MediaqGroup(click.Group):
    """Turns known errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MediaqError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            click.echo(f"error: database unavailable: {first}", err=True)
            sys.exit(1)
        except psycopg.Error as exc:
            detail = exc.diag.message_primary or str(exc).strip().splitlines()[0]
            click.echo(f"error: database refused the request: {detail}", err=True)
            sys.exit(1)


@click.group(cls=MediaqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mediaq")
def main() -> None:
    """mediaq: media workflows on PostgreSQL."""


def register() -> None:
    from mediaq.cli import (
        db_commands,
        job_commands,
        notify_commands,
        report_commands,
        trigger_commands,
        web_commands,
        worker_commands,
        workflow_commands,
    )

    for module in (db_commands, job_commands, notify_commands, report_commands,
                   trigger_commands, web_commands, worker_commands, workflow_commands):
        for command in module.COMMANDS:
            main.add_command(command)


register()
