"""Effective settings: environment variables over an optional TOML file over defaults.

Settings are grouped by concern (``settings.worker.lease_seconds``); each one is
declared once, below, with its type, default, check and one-line doc. Every setting
is ``MEDIAQ_<NAME>`` in the environment (``MEDIAQ_LEASE_SECONDS``), and in the file
named by ``MEDIAQ_CONFIG`` (default ``$MEDIAQ_HOME/mediaq.toml``) either a key of its
section's table (``[worker]`` ``lease_seconds = 10``) or the same ``name = …`` at the
top level, as files written for earlier releases have it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit, urlunsplit

from mediaq.errors import ConfigError
from mediaq.settings_fields import (
    about,
    at_least,
    boolean,
    integer,
    locations,
    number,
    one_of,
    optional_location,
    optional_path,
    optional_text,
    path,
    paths,
    positive,
    raising,
    text,
)

DEFAULT_HOME = "~/.local/share/mediaq"
LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _limits() -> Any:
    """mediaq.rate_limits, imported when a check runs (it imports this module's errors)."""
    return importlib.import_module("mediaq.rate_limits")
def _storage_uri() -> Any:
    return importlib.import_module("mediaq.storage.uri")


def _notify(module: str) -> Any:
    """A mediaq.notify module, imported when a check runs: they import this module."""
    return importlib.import_module(f"mediaq.notify.{module}")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = field(default=None, metadata=about(
        optional_text, flat="database_url", secret="url",
        doc="A PostgreSQL ≥ 14 server shared by all workers; unset: the embedded server."))

    @property
    def embedded(self) -> bool:
        return not self.url


@dataclass(frozen=True)
class WorkerSettings:
    lease_seconds: int = field(default=10, metadata=about(
        integer, check=at_least(2),
        doc="How long a claimed job stays owned without a heartbeat; renewed every third."))
    poll_seconds: float = field(default=1.0, metadata=about(
        number, check=positive, doc="Polling fallback when no NOTIFY arrives."))
    max_rescues: int = field(default=5, metadata=about(
        integer, check=at_least(0), doc="A job whose worker was lost more often than this fails."))
    retry_base_seconds: float = field(default=5.0, metadata=about(
        number, check=positive, doc="Back-off base: retry n waits base·2^n seconds, with jitter."))
    retry_max_seconds: float = field(default=3600.0, metadata=about(
        number, check=positive, doc="Back-off cap."))
    shutdown_grace_seconds: float = field(default=30.0, metadata=about(
        number, check=at_least(0),
        doc="On SIGTERM, running jobs get this long to finish before they are handed back."))
    host_id: str = field(default_factory=socket.gethostname, metadata=about(
        text, doc="The machine name per-machine limits and VRAM budgets are kept under."))
    # Operations that survive a bad day (issue 25): breakers on actions, hard timeouts.
    action_breaker_threshold: int = field(default=5, metadata=about(
        integer, check=at_least(0),
        doc="Transient failures of one action within the window that open its breaker; 0: off."))
    action_breaker_window_seconds: float = field(default=300.0, metadata=about(
        number, check=positive, doc="The window in which an action's failures are counted."))
    action_breaker_cooldown_seconds: float = field(default=60.0, metadata=about(
        number, check=positive,
        doc="How long an open action breaker holds its steps back before one probe runs."))
    step_timeout_grace_seconds: float = field(default=30.0, metadata=about(
        number, check=at_least(0),
        doc="A step past timeout_seconds plus this is abandoned from outside its thread."))
    stall_seconds: float = field(default=600.0, metadata=about(
        number, check=at_least(0),
        doc="A step whose progress has not moved for this long fails (transient); 0: off."))
    min_free_memory_mb: int = field(default=0, metadata=about(
        integer, check=at_least(0),
        doc="Workers stop claiming while the host has less memory available (MB); 0: off."))
    recycle_after_abandoned: int = field(default=2, metadata=about(
        integer, check=at_least(1),
        doc="Steps abandoned while still running (stuck in native code) before the worker "
            "stops claiming and exits to be restarted."))

    def problems(self) -> Iterator[str]:
        if self.retry_max_seconds < self.retry_base_seconds:
            yield "worker.retry_max_seconds must be at least worker.retry_base_seconds"


@dataclass(frozen=True)
class StorageSettings:
    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME).expanduser(), metadata=about(
        path, doc="Where the embedded database, outputs and staging live."))
    input_roots: tuple[Path | str, ...] = field(default=(), metadata=about(
        locations, doc="Folders and s3://bucket/prefix/ roots inputs must be in "
        "(comma-separated); empty: <home>/inputs."))
    output_root: Path | str | None = field(default=None, metadata=about(
        optional_location, doc="Outputs go to <output_root>/<job_code>/ (a folder or "
        "s3://bucket/prefix/); empty: <home>/outputs."))
    library_roots: tuple[Path, ...] = field(default=(), metadata=about(
        paths, doc="Folders move_to_library may write into; empty: <home>/library."))
    retention_days: int = field(default=30, metadata=about(
        integer, check=at_least(0),
        doc="Workers prune finished jobs completed this many days ago (hourly); 0: never."))
    output_free_floor_mb: int = field(default=100, metadata=about(
        integer, check=at_least(0),
        doc="Workers stop claiming while the output root has less free space (MB); 0: off."))
    cache_dir: Path | None = field(default=None, metadata=about(
        optional_path, doc="This host's cache of s3:// inputs; empty: <home>/cache."))
    cache_max_mb: int = field(default=10240, metadata=about(
        integer, check=at_least(1),
        doc="The input cache's size cap; least recently used objects are evicted."))
    s3_endpoint_url: str | None = field(default=None, metadata=about(
        optional_text, secret="url",
        doc="S3-compatible endpoint (http:// allowed), over AWS_ENDPOINT_URL(_S3)."))
    s3_timeout_seconds: float = field(default=60.0, metadata=about(
        number, check=positive,
        doc="A transfer silent this long has stalled (a transient error)."))
    s3_multipart_mb: int = field(default=8, metadata=about(
        integer, check=at_least(5), doc="Objects past this size go up in parts of this size."))
    s3_sweep_seconds: float = field(default=300.0, metadata=about(
        number, check=positive,
        doc="How often a worker sweeps staged objects and multipart uploads of dead attempts."))
    path_map: str = field(default="", metadata=about(
        text, check=raising(lambda value: _storage_uri().PathMap.parse(value)),
        doc="CANONICAL=LOCAL folder pairs (comma-separated): the database stores CANONICAL."))

    @property
    def outputs(self) -> Path:
        """The local output folder (with an s3:// output root: <home>/outputs, where
        steps stage their files before they are uploaded)."""
        if isinstance(self.output_root, Path):
            return self.output_root
        return self.home / "outputs"

    @property
    def remote_output_root(self) -> str | None:
        return self.output_root if isinstance(self.output_root, str) else None

    @property
    def bucket_input_roots(self) -> tuple[str, ...]:
        return tuple(r for r in self.input_roots if isinstance(r, str))

    @property
    def effective_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def staging(self) -> Path:
        # Inside the output root: one filesystem, so publishing an output is a rename.
        return self.outputs / ".staging"

    @property
    def effective_input_roots(self) -> tuple[Path, ...]:
        """The local input roots (bucket prefixes are ``bucket_input_roots``)."""
        if not self.input_roots:
            return (self.home / "inputs",)
        return tuple(r for r in self.input_roots if isinstance(r, Path))

    @property
    def effective_library_roots(self) -> tuple[Path, ...]:
        return self.library_roots or (self.home / "library",)


@dataclass(frozen=True)
class LimitSettings:
    step_memory_limit_mb: int = field(default=0, metadata=about(
        integer, check=at_least(0),
        doc="Address-space limit (RLIMIT_AS) of a step's child process in MB; 0: none."))
    step_cpu_seconds_limit: int = field(default=0, metadata=about(
        integer, check=at_least(0),
        doc="CPU-time limit (RLIMIT_CPU) of a step's child process in seconds; 0: none."))
    step_isolation: bool = field(default=False, metadata=about(
        boolean,
        doc="Run every step in a child process (implied by a limit): a crash fails the step."))

    @property
    def isolated(self) -> bool:
        return bool(self.step_isolation or self.step_memory_limit_mb > 0
                    or self.step_cpu_seconds_limit > 0)


@dataclass(frozen=True)
class TriggerSettings:
    enabled: bool = field(default=True, metadata=about(
        boolean, flat="triggers", doc="Watch folders and fire schedules inside `mediaq worker`."))
    watch_scan_seconds: float = field(default=5.0, metadata=about(
        number, check=positive,
        doc="How often watch folders are listed; inotify wakes a watcher sooner."))


@dataclass(frozen=True)
class NotificationSettings:
    enabled: bool = field(default=True, metadata=about(
        boolean, flat="notifier",
        doc="Run the notification delivery loop inside `mediaq worker`."))
    webhook_secret: str = field(default="", metadata=about(
        text, check=raising(lambda value: _notify("signing").parse_secrets(value)),
        secret="value",
        doc="Standard Webhooks signing secret(s), whsec_…; comma-separated during rotation."))
    webhook_allowed_hosts: str = field(default="", metadata=about(
        text, check=raising(lambda value: _notify("ssrf").AllowList.parse(value)),
        doc="Hosts, *.domain names or CIDRs let through the SSRF guard (comma-separated)."))
    smtp_url: str = field(default="", metadata=about(
        text, check=raising(lambda value: value and _notify("mail").parse_smtp_url(value)),
        secret="url",
        doc="smtp://[user:pass@]host[:port][?starttls=auto|always|never] or smtps://…."))
    smtp_user: str = field(default="", metadata=about(
        text, doc="The SMTP login, unless smtp_url has one."))
    smtp_password: str = field(default="", metadata=about(
        text, secret="value", doc="The SMTP password, unless smtp_url has one."))
    smtp_ca_file: str = field(default="", metadata=about(
        text, doc="A CA bundle to trust for the SMTP server (default: the system's)."))
    mail_from: str = field(default="", metadata=about(
        text, doc="The From address of notification e-mail; empty: mediaq@<host_id>."))
    mail_template_dir: Path | None = field(default=None, metadata=about(
        optional_path, doc="A folder with email.txt / email.html replacing the built-in."))
    timeout_seconds: float = field(default=15.0, metadata=about(
        number, check=positive, flat="notify_timeout_seconds",
        doc="One delivery attempt's time limit (connect, send, answer)."))
    retry_schedule: str = field(default="5,300,1800,7200,18000,36000,36000", metadata=about(
        text, flat="notify_retry_schedule",
        check=raising(lambda value: _notify("notifier").parse_schedule(value)),
        doc="Seconds before each retry (Standard Webhooks' schedule); then the row fails."))
    concurrency: int = field(default=8, metadata=about(
        integer, check=at_least(1), flat="notify_concurrency",
        doc="Deliveries in flight at once per notifier."))
    breaker_threshold: int = field(default=5, metadata=about(
        integer, check=at_least(1),
        doc="Consecutive failures that open an endpoint's circuit breaker."))
    breaker_cooldown_seconds: float = field(default=30.0, metadata=about(
        number, check=positive,
        doc="How long an open breaker waits before one probe; doubles while probes fail."))


@dataclass(frozen=True)
class WebSettings:
    host: str = field(default="127.0.0.1", metadata=about(
        text, flat="web_host", doc="The address `mediaq web` listens on."))
    port: int = field(default=8080, metadata=about(
        integer, check=at_least(1), flat="web_port", doc="The port `mediaq web` listens on."))
    public_url: str = field(default="", metadata=about(
        text, flat="web_public_url",
        doc="The URL clients reach `mediaq web` at, for links in webhooks; empty: none."))
    link_ttl_seconds: int = field(default=3600, metadata=about(
        integer, check=at_least(1), flat="download_link_ttl_seconds",
        doc="How long a signed download link works."))
    rate_limit: str = field(default="1200/m", metadata=about(
        text, check=raising(lambda value: _limits().parse_role_rates(value)),
        doc="API requests per token, by role (300/m, submitter=600/m, admin=0; 0: none)."))
    submit_rate_limit: str = field(default="300/m", metadata=about(
        text, check=raising(lambda value: _limits().parse_role_rates(value)),
        doc="Submits and uploads per token, by role (as rate_limit)."))
    address_rate_limit: str = field(default="3000/m", metadata=about(
        text, check=raising(lambda value: _limits().parse_rate(value)),
        doc="API requests per client address, tokens or not (0: none)."))
    upload_max_size: str = field(default="500MB", metadata=about(
        text, check=raising(lambda value: _limits().parse_role_sizes(value)),
        doc="The largest upload, by role (500MB, admin=10GB; 0: none); larger gets 413."))
    upload_expiry_hours: float = field(default=24.0, metadata=about(
        number, check=positive,
        doc="An unfinished upload untouched this long is removed with its bytes."))

    def problems(self) -> Iterator[str]:
        if self.port > 65535:
            yield "web.port must be at most 65535"


@dataclass(frozen=True)
class LoggingSettings:
    format: str = field(default="console", metadata=about(
        text, check=one_of(*LOG_FORMATS), flat="log_format",
        doc="console for people, json for log shippers."))
    level: str = field(default="info", metadata=about(
        text, check=one_of(*LOG_LEVELS, fold=True), flat="log_level",
        doc="The least severe level written."))


@dataclass(frozen=True)
class Settings:
    """mediaq's configuration, one group per concern (the TOML file's [sections])."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    triggers: TriggerSettings = field(default_factory=TriggerSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    web: WebSettings = field(default_factory=WebSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    def replace(self, **changes: Any) -> Settings:
        """A copy with settings changed, named as in the environment (``notifier=False``);
        values are already typed and are not checked."""
        groups: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            if name not in _BY_FLAT:
                raise ConfigError(f"unknown settings: {name}")
            spec = _BY_FLAT[name]
            groups.setdefault(spec.section, {})[spec.key] = value
        return dataclasses.replace(self, **{
            section: dataclasses.replace(getattr(self, section), **values)
            for section, values in groups.items()})

    def describe(self) -> dict[str, dict[str, str]]:
        """Settings as printable strings by section, secrets masked, roots effective."""
        shown: dict[str, dict[str, str]] = {}
        for spec in SPECS:
            value = getattr(getattr(self, spec.section), spec.key)
            shown.setdefault(spec.section, {})[spec.key] = _shown(spec.secret, value)
        storage = self.storage
        shown["storage"].update({
            "input_roots": ", ".join([*(str(p) for p in storage.effective_input_roots),
                                      *storage.bucket_input_roots]),
            "output_root": storage.remote_output_root or str(storage.outputs),
            "cache_dir": str(storage.effective_cache_dir),
            "library_roots": ", ".join(str(p) for p in storage.effective_library_roots),
        })
        if self.database.embedded:
            shown["database"]["url"] = f"embedded PostgreSQL in {storage.home / 'pgdata'}"
        return shown


def _shown(secret: str, value: Any) -> str:
    if secret == "url" and value:
        return mask_url(str(value))
    if secret and value:
        return "***"
    if isinstance(value, bool):  # as the environment and the file write it
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


# -- the declarations, walked -------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One setting as declared: where it lives and how it is read and checked."""

    section: str
    key: str
    flat: str
    doc: str
    default: Any
    parse: Callable[[Any], Any]
    check: Callable[[Any], str | None] | None
    secret: str

    @property
    def env(self) -> str:
        return f"MEDIAQ_{self.flat.upper()}"

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.key}"


# Section name → its group class, in the order `mediaq config` prints them.
GROUPS: dict[str, type[Any]] = get_type_hints(Settings)


def _specs() -> tuple[Spec, ...]:
    found = []
    for section, group in GROUPS.items():
        defaults = group()
        for f in fields(group):
            meta = f.metadata
            found.append(Spec(section, f.name, meta["flat"] or f.name, meta["doc"],
                              getattr(defaults, f.name), meta["parse"], meta["check"],
                              meta["secret"]))
    return tuple(found)


SPECS = _specs()
SECTIONS = tuple(GROUPS)


# -- loading ------------------------------------------------------------------------------


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the effective settings; ``overrides`` (by environment name without
    ``MEDIAQ_``, e.g. ``lease_seconds=30``) win over everything, None means unset."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("MEDIAQ_HOME", DEFAULT_HOME)).expanduser().resolve()
    # The home is read first: the default file is in it.
    raw: dict[Spec, tuple[Any, str]] = {
        _BY_FLAT["home"]: (home, "MEDIAQ_HOME" if "MEDIAQ_HOME" in env else "default")}
    raw.update(_from_file(env, home))
    for spec in SPECS:
        value = env.get(spec.env)
        if value not in (None, ""):
            raw[spec] = (value, spec.env)
    unknown = sorted(name for name in overrides if name not in _BY_FLAT)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    raw.update({_BY_FLAT[k]: (v, "override") for k, v in overrides.items() if v is not None})
    return _build(raw)


_BY_FLAT = {spec.flat: spec for spec in SPECS}
_BY_DOTTED = {spec.dotted: spec for spec in SPECS}


def _from_file(env: dict[str, str], home: Path) -> dict[Spec, tuple[Any, str]]:
    config_file = Path(env.get("MEDIAQ_CONFIG", home / "mediaq.toml")).expanduser()
    if "MEDIAQ_CONFIG" in env and not config_file.is_file():
        raise ConfigError(f"MEDIAQ_CONFIG: {config_file} does not exist")
    if not config_file.is_file():
        return {}
    try:
        document = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: {exc}") from None
    found: dict[Spec, tuple[Any, str]] = {}
    unknown: list[str] = []
    for name, value in document.items():
        if name in SECTIONS and isinstance(value, dict):
            entries = [(f"{name}.{key}", f"[{name}] {key}", v) for key, v in value.items()]
        else:
            spec = _BY_FLAT.get(name)
            entries = [(spec.dotted if spec else name, name, value)]
        for dotted, written, item in entries:
            spec = _BY_DOTTED.get(dotted)
            if spec is None:
                unknown.append(written)
            elif spec in found:  # TOML itself refuses a key twice in one table
                raise ConfigError(f"{config_file}: {spec.dotted} is set twice, as "
                                  f"[{spec.section}] {spec.key} and as {spec.flat}")
            else:
                found[spec] = (item, f"{config_file.name}: {written}")
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    return found


def _build(raw: dict[Spec, tuple[Any, str]]) -> Settings:
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for spec, (value, source) in raw.items():
        # A secret's value never reaches a message (messages end up in logs).
        shown = _shown(spec.secret, value) if spec.secret else repr(value)
        try:
            parsed = spec.parse(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{spec.dotted} = {shown} (from {source}): {exc}") from None
        problem = spec.check(parsed) if spec.check else None
        if problem:
            raise ConfigError(f"{spec.dotted} {problem} (got {shown} from {source})")
        values[spec.section][spec.key] = parsed
    settings = Settings(**{section: GROUPS[section](**kept) for section, kept in values.items()})
    for section in SECTIONS:
        group = getattr(settings, section)
        for problem in getattr(group, "problems", lambda: ())():
            raise ConfigError(problem)
    return settings


# -- showing ------------------------------------------------------------------------------

_SECRET_PARAM = re.compile(r"((?:^|&)(?:password|passwd|sslpassword)=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` → secrets replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = _SECRET_PARAM.sub(r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
