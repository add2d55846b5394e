"""Effective settings: environment variables over an optional TOML file over defaults.

Every setting is ``MEDIAQ_<NAME>`` in the environment, or ``name = …`` in the file
named by ``MEDIAQ_CONFIG`` (default ``$MEDIAQ_HOME/mediaq.toml``).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mediaq.errors import ConfigError

DEFAULT_HOME = "~/.local/share/mediaq"
SECRET_WORDS = ("password", "secret", "token")


@dataclass(frozen=True)
class Settings:
    """mediaq's configuration. Each field documents its default."""

    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME).expanduser())
    """Where the embedded database, outputs and staging live (MEDIAQ_HOME)."""
    database_url: str | None = None
    """A PostgreSQL ≥ 14 server shared by all workers; unset: the embedded server."""
    input_roots: tuple[Path, ...] = ()
    """Folders inputs must be in (colon- or comma-separated); empty: the home's inputs/."""
    output_root: Path | None = None
    """Outputs go to <output_root>/<job_code>/; default $MEDIAQ_HOME/outputs."""
    library_roots: tuple[Path, ...] = ()
    """Folders ``move_to_library`` may write into; empty: the home's library/."""
    lease_seconds: int = 10
    """How long a claimed job stays owned without a heartbeat; renewed every third of it."""
    poll_seconds: float = 1.0
    """Polling fallback when no NOTIFY arrives."""
    max_rescues: int = 5
    """A job whose worker was lost more often than this fails."""
    retry_base_seconds: float = 5.0
    """Back-off base: retry n waits base·2^n seconds, with jitter."""
    retry_max_seconds: float = 3600.0
    """Back-off cap."""
    shutdown_grace_seconds: float = 30.0
    """On SIGTERM, running jobs get this long to finish before they are handed back."""
    host_id: str = field(default_factory=socket.gethostname)
    """The machine name that per-machine limits and VRAM budgets are kept under."""
    log_format: str = "console"
    """console or json."""
    log_level: str = "info"

    # -- step limits ---------------------------------------------------------------------
    step_memory_limit_mb: int = 0
    """Address-space limit (RLIMIT_AS) of a step's child process in MB; 0: none."""
    step_cpu_seconds_limit: int = 0
    """CPU-time limit (RLIMIT_CPU) of a step's child process in seconds; 0: none."""
    step_isolation: bool = False
    """Run every step in a child process (implied by either limit); a crash of a decoder
    then fails the step instead of the worker."""

    # -- triggers ----------------------------------------------------------------------
    triggers: bool = True
    """Watch folders and fire schedules inside ``mediaq worker`` (MEDIAQ_TRIGGERS)."""
    watch_scan_seconds: float = 5.0
    """How often watch folders are listed; inotify wakes a watcher sooner where it can."""

    # -- notifications -----------------------------------------------------------------
    notifier: bool = True
    """Run the notification delivery loop inside ``mediaq worker`` (MEDIAQ_NOTIFIER)."""
    webhook_secret: str = ""
    """Standard Webhooks signing secret(s), ``whsec_…``; comma-separated during rotation."""
    webhook_allowed_hosts: str = ""
    """Hosts, ``*.domain`` names or CIDRs let through the SSRF guard (comma-separated)."""
    smtp_url: str = ""
    """``smtp://[user:pass@]host[:port][?starttls=auto|always|never]`` or ``smtps://…``."""
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_ca_file: str = ""
    """A CA bundle to trust for the SMTP server's certificate (default: the system's)."""
    mail_from: str = ""
    """The From address of notification e-mail; default mediaq@<host_id>."""
    mail_template_dir: Path | None = None
    """A folder with email.txt / email.html overriding the built-in templates."""
    notify_timeout_seconds: float = 15.0
    """One delivery attempt's time limit (connect, send, answer)."""
    notify_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    """Seconds before each retry (Standard Webhooks' schedule); then the row fails."""
    notify_concurrency: int = 8
    """Deliveries in flight at once per notifier."""
    breaker_threshold: int = 5
    """Consecutive failures that open an endpoint's circuit breaker."""
    breaker_cooldown_seconds: float = 30.0
    """How long an open breaker waits before one probe; doubles while probes fail."""

    @property
    def outputs(self) -> Path:
        return self.output_root or self.home / "outputs"

    @property
    def staging(self) -> Path:
        return self.outputs / ".staging"

    @property
    def effective_input_roots(self) -> tuple[Path, ...]:
        return self.input_roots or (self.home / "inputs",)

    @property
    def effective_library_roots(self) -> tuple[Path, ...]:
        return self.library_roots or (self.home / "library",)

    @property
    def uses_embedded(self) -> bool:
        return not self.database_url

    def describe(self) -> dict[str, str]:
        """Settings as printable strings, secrets masked."""
        shown = {
            "home": str(self.home),
            "database": mask_url(self.database_url) if self.database_url
            else f"embedded PostgreSQL in {self.home / 'pgdata'}",
            "input_roots": ", ".join(str(p) for p in self.effective_input_roots),
            "output_root": str(self.outputs),
            "library_roots": ", ".join(str(p) for p in self.effective_library_roots),
        }
        for f in fields(self):
            if f.name in ("home", "database_url", "input_roots", "output_root", "library_roots"):
                continue
            value = getattr(self, f.name)
            if f.name == "smtp_url" and value:
                shown[f.name] = mask_url(value)
            elif any(word in f.name for word in SECRET_WORDS) and value:
                shown[f.name] = "***"
            else:
                shown[f.name] = str(value)
        return shown


_SECRET_PARAM = re.compile(r"((?:^|&)(?:password|passwd|sslpassword)=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` → secrets replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = _SECRET_PARAM.sub(r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _split_paths(raw: str | list[str]) -> tuple[Path, ...]:
    items = raw if isinstance(raw, list) else raw.replace(",", ":").split(":")
    return tuple(Path(p).expanduser().resolve() for p in items if p.strip())


def _coerce(name: str, raw: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if name in ("input_roots", "library_roots"):
            return _split_paths(raw)
        if name in ("home", "output_root", "mail_template_dir"):
            return Path(str(raw)).expanduser().resolve()
        if kind == "bool":
            return _boolean(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return str(raw)
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(f"setting {name}: {raw!r} is not a valid {kind}") from None


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(word)


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the effective settings (``overrides`` win over everything)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("MEDIAQ_HOME", DEFAULT_HOME)).expanduser().resolve()
    values: dict[str, Any] = {"home": home}
    config_file = Path(env.get("MEDIAQ_CONFIG", home / "mediaq.toml")).expanduser()
    if "MEDIAQ_CONFIG" in env and not config_file.is_file():
        raise ConfigError(f"MEDIAQ_CONFIG: {config_file} does not exist")
    if config_file.is_file():
        try:
            file_values = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
        values.update(file_values)
    known = {f.name for f in fields(Settings)}
    for name in known:
        env_value = env.get(f"MEDIAQ_{name.upper()}")
        if env_value not in (None, ""):
            values[name] = env_value
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    _validate(settings)
    return settings


LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _validate(s: Settings) -> None:
    problems = [
        (s.lease_seconds < 2, "lease_seconds must be at least 2"),
        (s.poll_seconds <= 0, "poll_seconds must be positive"),
        (s.max_rescues < 0, "max_rescues must not be negative"),
        (s.retry_base_seconds <= 0, "retry_base_seconds must be positive"),
        (s.retry_max_seconds < s.retry_base_seconds,
         "retry_max_seconds must be at least retry_base_seconds"),
        (s.shutdown_grace_seconds < 0, "shutdown_grace_seconds must not be negative"),
        (s.log_format not in LOG_FORMATS, f"log_format must be one of {', '.join(LOG_FORMATS)}"),
        (s.log_level.lower() not in LOG_LEVELS,
         f"log_level must be one of {', '.join(LOG_LEVELS)}"),
        (s.notify_timeout_seconds <= 0, "notify_timeout_seconds must be positive"),
        (s.notify_concurrency < 1, "notify_concurrency must be at least 1"),
        (s.breaker_threshold < 1, "breaker_threshold must be at least 1"),
        (s.breaker_cooldown_seconds <= 0, "breaker_cooldown_seconds must be positive"),
        (s.step_memory_limit_mb < 0, "step_memory_limit_mb must not be negative"),
        (s.step_cpu_seconds_limit < 0, "step_cpu_seconds_limit must not be negative"),
    ]
    for failed, message in problems:
        if failed:
            raise ConfigError(message)
