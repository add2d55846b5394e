"""Configuration: `mediaq config`, environment over TOML over defaults, refusals; and
property tests of the small parsers (--param, the named-queries file)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from mediaq.config import GROUPS, SPECS, Settings, load_settings, mask_url
from mediaq.errors import ConfigError, SubmissionRefused
from mediaq.notify.signing import new_secret
from mediaq.queries import load_queries, parse_queries
from mediaq.settings_fields import boolean, integer, number, paths
from mediaq.submit import params_from_pairs, parse_param
from tests.helpers import MEDIAQ

SECRET_URL = "postgresql://u:s3cret@127.0.0.1:1/x"


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment of its own: no MEDIAQ_* of the test session leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAQ_")}
    env["MEDIAQ_HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def run_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MEDIAQ, "config"], env=env, capture_output=True, text=True,
                          timeout=30)


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``mediaq config``'s output as ``{"section.key": value}``."""
    assert result.returncode == 0, result.stderr
    out: dict[str, str] = {}
    section = ""
    for line in result.stdout.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line.strip():
            key, _, value = line.partition(" ")
            out[f"{section}.{key}"] = value.strip()
    return out


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: configuration: "), lines[0]
    return lines[0]


# -- mediaq config ------------------------------------------------------------------------


def test_config_prints_settings_grouped_with_the_password_masked(tmp_path: Path) -> None:
    started = time.monotonic()
    webhook_secret = new_secret()
    result = run_config(base_env(tmp_path, MEDIAQ_DATABASE_URL=SECRET_URL,
                                 MEDIAQ_LEASE_SECONDS="12", MEDIAQ_SMTP_PASSWORD="s3cret",
                                 MEDIAQ_WEBHOOK_SECRET=webhook_secret))
    elapsed = time.monotonic() - started
    shown = printed(result)
    assert "s3cret" not in result.stdout + result.stderr
    assert webhook_secret.removeprefix("whsec_") not in result.stdout + result.stderr
    sections = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert sections == ["[database]", "[worker]", "[storage]", "[limits]", "[triggers]",
                        "[notifications]", "[web]", "[logging]"]
    assert shown["database.url"] == "postgresql://u:***@127.0.0.1:1/x"
    assert shown["notifications.smtp_password"] == "***"
    assert shown["notifications.webhook_secret"] == "***"
    assert shown["storage.home"] == str((tmp_path / "home").resolve())
    assert shown["storage.output_root"] == str((tmp_path / "home" / "outputs").resolve())
    assert shown["storage.input_roots"] == str((tmp_path / "home" / "inputs").resolve())
    assert shown["worker.lease_seconds"] == "12"
    assert shown["worker.poll_seconds"] == "1.0"
    assert {"worker.max_rescues", "worker.retry_base_seconds", "worker.retry_max_seconds",
            "worker.shutdown_grace_seconds", "worker.host_id", "logging.format",
            "logging.level", "web.port"} <= set(shown)
    # nothing listens on port 1: a connection attempt would have failed the command
    assert elapsed < 10


@pytest.mark.parametrize("url", [
    "postgresql://u@127.0.0.1:1/x?password=s3cret",
    "postgresql://u:s3cret@127.0.0.1:1/x?sslmode=disable&password=s3cret",
    "postgresql://u:s3cret@[::1]:1/x",
])
def test_config_never_prints_a_password(tmp_path: Path, url: str) -> None:
    result = run_config(base_env(tmp_path, MEDIAQ_DATABASE_URL=url,
                                 MEDIAQ_SMTP_URL=url.replace("postgresql", "smtp")))
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_environment_beats_the_toml_file_which_beats_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "custom.toml"
    toml.write_text('lease_seconds = 20\npoll_seconds = 2.5\nlog_level = "debug"\n'
                    'input_roots = ["/srv/a", "/srv/b"]\n', encoding="utf-8")
    shown = printed(run_config(base_env(tmp_path, MEDIAQ_CONFIG=str(toml),
                                        MEDIAQ_LEASE_SECONDS="7")))
    assert shown["worker.lease_seconds"] == "7"  # environment
    assert shown["worker.poll_seconds"] == "2.5"  # file
    assert shown["logging.level"] == "debug"  # file
    assert shown["storage.input_roots"] == "/srv/a, /srv/b"
    assert shown["worker.max_rescues"] == "5"  # default


@pytest.mark.parametrize(("where", "setting", "words"), [
    ("env", "MEDIAQ_LEASE_SECONDS=abc", "worker.lease_seconds = 'abc' (from "
                                        "MEDIAQ_LEASE_SECONDS): expected an integer"),
    ("env", "MEDIAQ_LEASE_SECONDS=1", "worker.lease_seconds must be at least 2 "
                                      "(got '1' from MEDIAQ_LEASE_SECONDS)"),
    ("env", "MEDIAQ_POLL_SECONDS=soon", "worker.poll_seconds = 'soon'"),
    ("env", "MEDIAQ_POLL_SECONDS=-1", "worker.poll_seconds must be positive"),
    ("env", "MEDIAQ_RETRY_BASE_SECONDS=-5", "worker.retry_base_seconds must be positive"),
    ("env", "MEDIAQ_RETRY_MAX_SECONDS=1", "retry_max_seconds must be at least"),
    ("env", "MEDIAQ_LOG_FORMAT=xml", "logging.format must be one of console, json"),
    ("env", "MEDIAQ_LOG_LEVEL=loud", "logging.level must be one of"),
    ("env", "MEDIAQ_WEB_PORT=70000", "web.port must be at most 65535"),
    ("env", "MEDIAQ_STEP_ISOLATION=maybe", "limits.step_isolation = 'maybe'"),
    ("env", "MEDIAQ_WEBHOOK_SECRET=whsec_s3cret", "notifications.webhook_secret is not valid: "
                                                  "too short (at least 16 key bytes) (got *** "
                                                  "from MEDIAQ_WEBHOOK_SECRET)"),
    ("env", "MEDIAQ_WEBHOOK_SECRET=whsec_s3cret!", "not a whsec_ secret"),
    ("env", "MEDIAQ_WEBHOOK_ALLOWED_HOSTS=a b", "notifications.webhook_allowed_hosts is not "
                                                "valid: 'a b' is neither a host name nor a CIDR"),
    ("env", "MEDIAQ_SMTP_URL=smtp://u:s3cret@mail?starttls=maybe",
     "notifications.smtp_url is not valid: starttls must be one of auto, always, never "
     "(got smtp://u:***@mail?starttls=maybe from MEDIAQ_SMTP_URL)"),
    ("env", "MEDIAQ_SMTP_URL=http://u:s3cret@mail", "expected smtp://host[:port]"),
    ("env", "MEDIAQ_NOTIFY_RETRY_SCHEDULE=5,soon", "notifications.retry_schedule is not valid: "
                                                   "comma-separated seconds expected"),
    ("env", "MEDIAQ_NOTIFY_RETRY_SCHEDULE=5,-1", "delays must not be negative"),
    ("toml", "bogus_key = 1", "unknown settings: bogus_key"),
    ("toml", "[worker]\nbogus_key = 1", "unknown settings: [worker] bogus_key"),
    ("toml", "lease_seconds = 'abc'", "(from custom.toml: lease_seconds): expected an integer"),
    ("toml", "[worker]\nlease_seconds = 1", "(got 1 from custom.toml: [worker] lease_seconds)"),
    ("toml", "lease_seconds = 3\n[worker]\nlease_seconds = 4",
     "worker.lease_seconds is set twice"),
    ("toml", "poll_seconds = [1, 2]", "worker.poll_seconds"),
    ("toml", "input_roots = 5", "storage.input_roots"),
    ("toml", "lease_seconds = = 3", "custom.toml"),
])
def test_invalid_settings_give_one_line_and_exit_1(
    tmp_path: Path, where: str, setting: str, words: str
) -> None:
    env = base_env(tmp_path, MEDIAQ_DATABASE_URL=SECRET_URL)
    if where == "env":
        name, _, value = setting.partition("=")
        env[name] = value
    else:
        toml = tmp_path / "custom.toml"
        toml.write_text(setting + "\n", encoding="utf-8")
        env["MEDIAQ_CONFIG"] = str(toml)
    line = one_line_error(run_config(env))
    assert words in line
    assert "Traceback" not in line and "s3cret" not in line


def test_config_file_in_home_is_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "mediaq.toml").write_text("max_rescues = 9\n", encoding="utf-8")
    assert printed(run_config(base_env(tmp_path)))["worker.max_rescues"] == "9"


# -- load_settings ------------------------------------------------------------------------


def test_load_settings_defaults(tmp_path: Path) -> None:
    s = load_settings(env={"MEDIAQ_HOME": str(tmp_path)})
    assert s == Settings().replace(home=tmp_path.resolve(), host_id=s.worker.host_id)
    assert s.database.embedded and s.database.url is None
    assert s.storage.effective_input_roots == (tmp_path.resolve() / "inputs",)
    assert s.storage.outputs == tmp_path.resolve() / "outputs"
    assert s.storage.staging == tmp_path.resolve() / "outputs" / ".staging"
    assert (s.worker.lease_seconds, s.worker.poll_seconds, s.worker.max_rescues) == (10, 1.0, 5)
    assert "embedded PostgreSQL" in s.describe()["database"]["url"]


def test_load_settings_reads_the_environment(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    s = load_settings(env={
        "MEDIAQ_HOME": str(tmp_path), "MEDIAQ_DATABASE_URL": SECRET_URL,
        "MEDIAQ_INPUT_ROOTS": f"{a}:{b},{tmp_path / 'c'}",
        "MEDIAQ_OUTPUT_ROOT": str(tmp_path / "o"),
        "MEDIAQ_LEASE_SECONDS": "4", "MEDIAQ_POLL_SECONDS": "0.25", "MEDIAQ_HOST_ID": "box-7",
        "MEDIAQ_MAX_RESCUES": "",  # empty: unset
        "MEDIAQ_TEST_DATABASE_URL": "postgresql://ignored/", "MEDIAQ_SOMETHING_ELSE": "x",
    })
    assert s.database.url == SECRET_URL and not s.database.embedded
    assert s.storage.input_roots == (a.resolve(), b.resolve(), (tmp_path / "c").resolve())
    assert s.storage.outputs == (tmp_path / "o").resolve()
    worker = s.worker
    assert (worker.lease_seconds, worker.poll_seconds, worker.host_id, worker.max_rescues) == (
        4, 0.25, "box-7", 5)
    assert s.describe()["database"]["url"] == "postgresql://u:***@127.0.0.1:1/x"


def test_load_settings_order_overrides_env_file(tmp_path: Path) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text("lease_seconds = 20\nretry_max_seconds = 60\nmax_rescues = 2\n",
                    encoding="utf-8")
    env = {"MEDIAQ_HOME": str(tmp_path), "MEDIAQ_CONFIG": str(toml),
           "MEDIAQ_RETRY_MAX_SECONDS": "90"}
    s = load_settings(env=env, lease_seconds=30, max_rescues=None)
    assert (s.worker.lease_seconds, s.worker.retry_max_seconds, s.worker.max_rescues) == (
        30, 90.0, 2)


def test_load_settings_refusals(tmp_path: Path) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text("colour = 'blue'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown settings: colour"):
        load_settings(env={"MEDIAQ_HOME": str(tmp_path), "MEDIAQ_CONFIG": str(toml)})
    with pytest.raises(ConfigError, match="lease_seconds"):
        load_settings(env={"MEDIAQ_HOME": str(tmp_path), "MEDIAQ_LEASE_SECONDS": "x"})
    with pytest.raises(ConfigError, match="at least 2"):
        load_settings(env={"MEDIAQ_HOME": str(tmp_path), "MEDIAQ_LEASE_SECONDS": "1"})
    with pytest.raises(ConfigError, match="unknown settings"):
        load_settings(env={"MEDIAQ_HOME": str(tmp_path)}, colour="blue")


def test_sections_in_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text(
        "home = '/srv/mq'\n"  # a flat key next to tables: files of earlier releases
        "[worker]\nlease_seconds = 20\nretry_base_seconds = 2\n"
        "[storage]\ninput_roots = ['/srv/in']\n"
        "[notifications]\ntimeout_seconds = 3.5\nenabled = false\n"
        "[triggers]\nenabled = false\n"
        "[limits]\nstep_memory_limit_mb = 512\n"
        "[web]\nport = 9000\n"
        "[logging]\nformat = 'json'\n"
        "[database]\nurl = 'postgresql://db/mq'\n", encoding="utf-8")
    s = load_settings(env={"MEDIAQ_CONFIG": str(toml)})
    assert s.storage.home == Path("/srv/mq")
    assert (s.worker.lease_seconds, s.worker.retry_base_seconds) == (20, 2.0)
    assert s.storage.input_roots == (Path("/srv/in"),)
    assert s.notifications.timeout_seconds == 3.5 and not s.notifications.enabled
    assert not s.triggers.enabled
    assert s.limits.step_memory_limit_mb == 512 and s.limits.isolated
    assert (s.web.port, s.logging.format) == (9000, "json")
    assert s.database.url == "postgresql://db/mq"


def test_flat_keys_and_sections_read_the_same(tmp_path: Path) -> None:
    flat, sectioned = tmp_path / "flat.toml", tmp_path / "sectioned.toml"
    flat.write_text("notify_concurrency = 3\nnotifier = false\nlog_level = 'debug'\n"
                    "database_url = 'postgresql://db/mq'\nweb_port = 9001\n", encoding="utf-8")
    sectioned.write_text("[notifications]\nconcurrency = 3\nenabled = false\n"
                         "[logging]\nlevel = 'debug'\n[database]\nurl = 'postgresql://db/mq'\n"
                         "[web]\nport = 9001\n", encoding="utf-8")
    env = {"MEDIAQ_HOME": str(tmp_path)}
    assert (load_settings(env={**env, "MEDIAQ_CONFIG": str(flat)})
            == load_settings(env={**env, "MEDIAQ_CONFIG": str(sectioned)}))


def test_environment_names_are_unchanged(tmp_path: Path) -> None:
    # deploy/ files and users' environments use these names.
    assert {spec.env for spec in SPECS} == {
        "MEDIAQ_HOME", "MEDIAQ_DATABASE_URL", "MEDIAQ_INPUT_ROOTS", "MEDIAQ_OUTPUT_ROOT",
        "MEDIAQ_LIBRARY_ROOTS", "MEDIAQ_LEASE_SECONDS", "MEDIAQ_POLL_SECONDS",
        "MEDIAQ_MAX_RESCUES", "MEDIAQ_RETRY_BASE_SECONDS", "MEDIAQ_RETRY_MAX_SECONDS",
        "MEDIAQ_SHUTDOWN_GRACE_SECONDS", "MEDIAQ_HOST_ID", "MEDIAQ_LOG_FORMAT",
        "MEDIAQ_LOG_LEVEL", "MEDIAQ_STEP_MEMORY_LIMIT_MB", "MEDIAQ_STEP_CPU_SECONDS_LIMIT",
        "MEDIAQ_STEP_ISOLATION", "MEDIAQ_TRIGGERS", "MEDIAQ_WATCH_SCAN_SECONDS",
        "MEDIAQ_NOTIFIER", "MEDIAQ_WEBHOOK_SECRET", "MEDIAQ_WEBHOOK_ALLOWED_HOSTS",
        "MEDIAQ_SMTP_URL", "MEDIAQ_SMTP_USER", "MEDIAQ_SMTP_PASSWORD", "MEDIAQ_SMTP_CA_FILE",
        "MEDIAQ_MAIL_FROM", "MEDIAQ_MAIL_TEMPLATE_DIR", "MEDIAQ_NOTIFY_TIMEOUT_SECONDS",
        "MEDIAQ_NOTIFY_RETRY_SCHEDULE", "MEDIAQ_NOTIFY_CONCURRENCY",
        "MEDIAQ_BREAKER_THRESHOLD", "MEDIAQ_BREAKER_COOLDOWN_SECONDS",
        # added with the [web] section
        "MEDIAQ_WEB_HOST", "MEDIAQ_WEB_PORT",
        # added with retention (mediaq prune)
        "MEDIAQ_RETENTION_DAYS",
        # added with uploads, download links and rate limits (`mediaq web`)
        "MEDIAQ_WEB_PUBLIC_URL", "MEDIAQ_DOWNLOAD_LINK_TTL_SECONDS", "MEDIAQ_RATE_LIMIT",
        "MEDIAQ_SUBMIT_RATE_LIMIT", "MEDIAQ_ADDRESS_RATE_LIMIT", "MEDIAQ_UPLOAD_MAX_SIZE",
        "MEDIAQ_UPLOAD_EXPIRY_HOURS",
        # added with breakers, storage health and the step watchdog (issue 25)
        "MEDIAQ_ACTION_BREAKER_THRESHOLD", "MEDIAQ_ACTION_BREAKER_WINDOW_SECONDS",
        "MEDIAQ_ACTION_BREAKER_COOLDOWN_SECONDS", "MEDIAQ_STEP_TIMEOUT_GRACE_SECONDS",
        "MEDIAQ_STALL_SECONDS", "MEDIAQ_RECYCLE_AFTER_ABANDONED",
        "MEDIAQ_OUTPUT_FREE_FLOOR_MB", "MEDIAQ_MIN_FREE_MEMORY_MB",
        # added with object storage (mediaq.storage)
        "MEDIAQ_CACHE_DIR", "MEDIAQ_CACHE_MAX_MB", "MEDIAQ_S3_ENDPOINT_URL",
        "MEDIAQ_S3_TIMEOUT_SECONDS", "MEDIAQ_S3_MULTIPART_MB", "MEDIAQ_S3_SWEEP_SECONDS",
        "MEDIAQ_PATH_MAP",
    }
    env = {"MEDIAQ_HOME": str(tmp_path), "MEDIAQ_NOTIFY_CONCURRENCY": "2", "MEDIAQ_NOTIFIER": "no",
           "MEDIAQ_TRIGGERS": "0", "MEDIAQ_LOG_FORMAT": "json", "MEDIAQ_STEP_ISOLATION": "yes"}
    s = load_settings(env=env)
    assert s.notifications.concurrency == 2 and not s.notifications.enabled
    assert not s.triggers.enabled and s.logging.format == "json" and s.limits.isolated


def test_every_setting_is_declared_once_with_a_doc() -> None:
    assert set(GROUPS) == {f.name for f in fields(Settings)}
    assert len({spec.flat for spec in SPECS}) == len(SPECS)
    assert len({spec.dotted for spec in SPECS}) == len(SPECS)
    for spec in SPECS:
        assert spec.doc and "\n" not in spec.doc, spec.dotted
        # the default passes its own check
        assert spec.check is None or spec.check(spec.default) is None, spec.dotted


def test_replace_takes_environment_names() -> None:
    s = Settings().replace(notifier=False, lease_seconds=30, database_url="postgresql://x/y")
    assert not s.notifications.enabled and s.worker.lease_seconds == 30
    assert s.database.url == "postgresql://x/y" and Settings().notifications.enabled
    with pytest.raises(ConfigError, match="unknown settings: colour"):
        Settings().replace(colour="blue")


def test_mask_url() -> None:
    assert mask_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"


# -- --param parsing (property tests) -----------------------------------------------------

YAML_WORDS = {"yes", "no", "on", "off", "true", "false", "null", "y", "n"}
step_names = st.text(st.characters(blacklist_characters="=\n\r", blacklist_categories=("Cs",)),
                     min_size=1, max_size=20).filter(lambda s: s.strip() == s and s != "")
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,15}", fullmatch=True)
words = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True).filter(
    lambda w: w not in YAML_WORDS)
typed_values = st.one_of(
    st.integers(-10**9, 10**9).map(lambda n: (str(n), n)),
    st.booleans().map(lambda b: (str(b).lower(), b)),
    st.integers(-10**6, 10**6).map(lambda n: (f"{n / 100:.2f}", float(f"{n / 100:.2f}"))),
    words.map(lambda w: (w, w)),
    st.tuples(words, words).map(lambda t: (f"{t[0]}={t[1]}", f"{t[0]}={t[1]}")),
    st.lists(st.integers(0, 99), max_size=4).map(lambda xs: (json.dumps(xs), xs)),
)


@given(step=step_names, key=keys, value=typed_values)
@example(step="transcode.1080p", key="crf", value=("23", 23))
@example(step="Make.Thumb", key="size", value=("300", 300))
@example(step="1", key="enabled", value=("true", True))
def test_parse_param_splits_at_the_last_dot_and_types_the_value(
    step: str, key: str, value: tuple[str, object]
) -> None:
    raw, expected = value
    assert parse_param(f"{step}.{key}={raw}") == (step, key, expected)


@given(pairs=st.lists(st.tuples(step_names, keys, typed_values), max_size=6))
def test_params_from_pairs_groups_by_step_last_value_wins(
    pairs: list[tuple[str, str, tuple[str, object]]]
) -> None:
    expected: dict[str, dict[str, object]] = {}
    for step, key, (_, value) in pairs:
        expected.setdefault(step, {})[key] = value
    assert params_from_pairs([f"{s}.{k}={raw}" for s, k, (raw, _) in pairs]) == expected


@given(step=step_names, key=keys,
       raw=st.one_of(st.text(max_size=30), st.dates().map(date.isoformat),
                     st.sampled_from([".nan", ".inf", "2024-01-25 10:00:00", "!!binary aGk=",
                                      "!!set {a}", "{a: [1, {b: 2}]}", "[unclosed", "~"])))
@example(step="finalize", key="until", raw="2024-01-25")
def test_parse_param_values_can_be_stored_as_json(step: str, key: str, raw: str) -> None:
    """Whatever follows the '=', the value is either refused or fits a JSONB column."""
    try:
        value = parse_param(f"{step}.{key}={raw}")[2]
    except SubmissionRefused:
        return
    json.dumps(value, allow_nan=False)


@given(text=st.text(max_size=30))
@example(text="size=300")
@example(text="step.size")
@example(text=".size=3")
@example(text="step.=3")
def test_parse_param_refuses_targets_without_step_and_key(text: str) -> None:
    target = text.partition("=")[0]
    step, _, key = target.rpartition(".")
    if "=" in text and step and key:
        return
    with pytest.raises(SubmissionRefused, match=r"expected STEP\.KEY=VALUE"):
        parse_param(text)


# -- named queries (property tests) ------------------------------------------------------

query_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
sql_line = st.from_regex(r"[A-Za-z0-9_ (),=%*.'<>:|+-]{1,40}", fullmatch=True).filter(
    lambda line: not line.startswith("-- ") and line.strip() == line)
statements = st.lists(sql_line, min_size=1, max_size=6).map("\n".join).filter(
    lambda s: not s.endswith(";"))


@given(queries=st.dictionaries(query_names, statements, min_size=1, max_size=8),
       descriptions=st.booleans(), trailing=st.sampled_from(["", ";", ";\n", "\n\n"]))
def test_parse_queries_round_trip(queries: dict[str, str], descriptions: bool,
                                  trailing: str) -> None:
    text = "-- a header comment\n\n"
    for name, statement in queries.items():
        text += f"-- name: {name}\n"
        if descriptions:
            text += f"-- What {name} does.\n"
        text += f"{statement}{trailing}\n"
    assert parse_queries(text) == queries


@given(name=query_names, a=statements, b=statements)
def test_parse_queries_refuses_a_name_defined_twice(name: str, a: str, b: str) -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries(f"-- name: {name}\n{a};\n\n-- name: {name}\n{b};\n")


def test_the_shipped_queries_file_parses() -> None:
    queries = load_queries()
    assert {"jobs_dashboard", "queue_monitor", "job_submit", "workflow_insert"} <= set(queries)
    assert all(q and not q.endswith(";") for q in queries.values())


def test_yaml_value_parsing_matches_yaml() -> None:
    assert parse_param("a.b=[1, 2]")[2] == yaml.safe_load("[1, 2]")
    assert parse_param("a.b=")[2] == ""
    assert parse_param("a.b=x=y")[2] == "x=y"
    assert parse_param("a.b=[unclosed")[2] == "[unclosed"


@pytest.mark.parametrize(("parse", "raw", "expected"), [
    (integer, "10", 10), (integer, 10, 10), (integer, 10.0, 10),
    (number, "0.25", 0.25), (number, 3, 3.0),
    (boolean, "yes", True), (boolean, "OFF", False), (boolean, True, True),
    (paths, "/a:/b,/c", (Path("/a"), Path("/b"), Path("/c"))), (paths, ["/a"], (Path("/a"),)),
    (paths, "", ()),
])
def test_setting_parsers_accept(parse: Any, raw: Any, expected: Any) -> None:
    assert parse(raw) == expected


@pytest.mark.parametrize(("parse", "raw"), [
    (integer, "x"), (integer, 2.5), (integer, True), (integer, [1]),
    (number, "soon"), (number, False), (number, {"a": 1}),
    (boolean, "maybe"), (paths, 5), (paths, [1, 2]),
])
def test_setting_parsers_refuse(parse: Any, raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^expected "):
        parse(raw)
