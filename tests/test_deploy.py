"""deploy/: systemd units (systemd-analyze verify), Prometheus alert rules (promtool check
and promtool's rule unit tests), the Grafana dashboard's metric names, the environment
file example; and `mediaq db roles` in a real database: submitters and readers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.rows import dict_row

from mediaq.config import GROUPS, SPECS, Settings, load_settings
from mediaq.errors import ConfigError
from mediaq.notify.signing import new_secret
from tests.helpers import MEDIAQ, MediaqEnv, diagnostic_workflow, requires_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "mediaq-dashboard.json"
ENV_EXAMPLE = DEPLOY / "mediaq.env.example"
INSTALLED_BINARY = "/opt/mediaq/.venv/bin/mediaq"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
PROMTOOL = shutil.which("promtool")
needs_promtool = requires_tool("promtool")

# What `mediaq web`'s /metrics exposes: metric → labels.
METRICS: dict[str, set[str]] = {
    "media_jobs_total": {"type", "status"},
    "media_jobs_pending": set(),
    "media_jobs_running": {"resource_category"},
    "media_vram_used_bytes": {"host"},
    "media_vram_total_bytes": {"host"},
    "media_queue_depth": {"resource_category"},
    "media_queue_oldest_age_seconds": {"resource_category"},
    "media_queue_eligible": {"resource_category"},
    "media_queue_oldest_eligible_age_seconds": {"resource_category"},
    "media_step_duration_seconds": {"workflow", "action"},
    "media_job_retries_total": {"type"},
    "media_job_rescues_total": {"type"},
    "media_jobs_dead_lettered": set(),
    "media_notifications_total": {"channel", "status"},
    "media_notification_breaker_open": {"endpoint"},
    "media_workers": {"status"},
    "mediaq_jobs_finished_15m": {"outcome"},
    "mediaq_disk_free_bytes": {"root", "path", "host"},
    "mediaq_disk_total_bytes": {"root", "path", "host"},
    "mediaq_worker_rss_bytes": {"worker", "host"},
    "mediaq_host_load1": {"host"},
    "mediaq_action_breaker_open": {"action", "host"},
}
HISTOGRAMS = {"media_step_duration_seconds"}
SCRAPE_LABELS = {"instance", "job"}

UNIT_COMMANDS = {
    "mediaq-worker@.service": "worker --id %H-%i --no-notifier --no-triggers",
    "mediaq-notifier.service": "notifier",
    "mediaq-triggers.service": "triggers",
    "mediaq-web.service": "web --host 127.0.0.1 --port 8080",
    "mediaq-migrate.service": "db upgrade",
}


# -- systemd ------------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (every section), values per key in order."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_units_are_the_expected_ones_with_hardening() -> None:
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(UNIT_COMMANDS)
    grace = Settings().worker.shutdown_grace_seconds
    for name, command in UNIT_COMMANDS.items():
        unit = unit_settings(UNITS / name)
        assert unit["ExecStart"] == [f"{INSTALLED_BINARY} {command}"], name
        assert unit["User"] == ["mediaq"], name
        assert unit["EnvironmentFile"] == ["/etc/mediaq/mediaq.env"], name
        for key, value in [("NoNewPrivileges", "true"), ("ProtectSystem", "strict"),
                           ("PrivateTmp", "true"), ("StateDirectory", "mediaq")]:
            assert unit.get(key) == [value], (name, key)
        if name == "mediaq-migrate.service":
            assert unit["Type"] == ["oneshot"]
            continue
        assert unit["Restart"] == ["on-failure"], name
        assert unit["KillSignal"] == ["SIGTERM"], name
        assert float(unit["TimeoutStopSec"][0]) > grace, name
    worker = unit_settings(UNITS / "mediaq-worker@.service")
    # Outputs and the library are written on the shared storage; the worker keeps the
    # GPU devices (no PrivateDevices) and its running jobs get the full grace period.
    assert "/srv/media/outputs" in worker["ReadWritePaths"][0].split()
    for key in ("PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock"):
        assert key not in worker, key  # each would close /dev/nvidia*
    assert float(worker["TimeoutStopSec"][0]) >= grace + 30


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    binary = Path(sys.executable).with_name("mediaq")
    if not binary.is_file():
        binary = Path(shutil.which("mediaq") or "/nonexistent")
    assert binary.is_file(), "the mediaq console script is not installed"
    for unit in UNITS.glob("*.service"):
        text = unit.read_text(encoding="utf-8")
        assert INSTALLED_BINARY in text, unit.name
        (tmp_path / unit.name).write_text(text.replace(INSTALLED_BINARY, str(binary)))
    names = [n.replace("@.service", "@1.service") for n in sorted(UNIT_COMMANDS)]
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", *(str(tmp_path / n) for n in names)],
                            capture_output=True, text=True, timeout=30)
    # verify only warns about unknown keys or bad values, but it does warn: any line
    # about our units is a finding (lines about the host's own units are not ours).
    assert result.returncode == 0, result.stderr
    findings = [line for line in (result.stdout + result.stderr).splitlines()
                if "mediaq" in line]
    assert not findings, "\n".join(findings)

    # The check is real: a unit with a wrong key and a missing binary is refused.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "mediaq-web.service").write_text(
        (UNITS / "mediaq-web.service").read_text().replace("KillSignal=", "KillSignalz="))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(broken / "mediaq-web.service")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "KillSignalz" in result.stderr and "is not executable" in result.stderr


# -- Prometheus ---------------------------------------------------------------------------


_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")


def metrics_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The media_* and mediaq_* metric names (histogram series folded into their family) and the
    label names a PromQL expression uses."""
    bare = re.sub(r'"[^"]*"', '""', expr.replace("$__rate_interval", "5m"))
    names = set()
    for name in _NAME.findall(bare):
        if name.startswith(("media_", "mediaq_")):
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            names.add(family if family in HISTOGRAMS else name)
    labels = set()
    for group in _GROUPING.findall(bare):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    for group in _MATCHERS.findall(bare):
        labels.update(m.group(0) for m in re.finditer(r"[A-Za-z_]\w*(?=\s*(?:=~|!~|!=|=))",
                                                       group))
    return names, labels


def check_known(expr: str) -> set[str]:
    names, labels = metrics_and_labels(expr)
    assert names, expr
    unknown = names - set(METRICS)
    assert not unknown, f"{expr}: unknown metrics {unknown}"
    allowed = set().union(*(METRICS[n] for n in names)) | SCRAPE_LABELS
    if names & HISTOGRAMS:
        allowed.add("le")
    assert labels <= allowed, f"{expr}: labels {labels - allowed} not on {names}"
    return names


def alert_rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {r["alert"]: r for group in doc["groups"] for r in group["rules"]}


def test_alert_rules_use_known_metrics() -> None:
    rules = alert_rules()
    assert {"MediaJobQueueBacklog", "MediaJobsStuckRunning", "MediaJobsDeadLettered",
            "MediaNotificationBreakerOpen", "MediaqDiskNearlyFull", "MediaJobFailureRateHigh",
            "MediaJobQueueStale"} <= set(rules)
    assert rules["MediaJobQueueBacklog"]["expr"] == "media_jobs_pending > 50"
    assert rules["MediaJobQueueBacklog"]["for"] == "30m"
    assert rules["MediaJobsStuckRunning"]["for"] == "10m"
    for rule in rules.values():
        check_known(rule["expr"])


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


@needs_promtool
def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    shown = ",".join(f'{k}="{v}"' for k, v in {"instance": "web:8080", "job": "mediaq",
                                                  **labels}.items())
    return {"series": f"{name}{{{shown}}}", "values": values}


SCRAPED = {"instance": "web:8080", "job": "mediaq"}


def expected(alert: str, value: str = "", **labels: str) -> dict[str, Any]:
    """An alert as promtool should report it: labels, and the rule's annotations with
    their templates filled in by hand."""
    rule = alert_rules()[alert]
    shown = {}
    for key, text in rule.get("annotations", {}).items():
        text = text.replace("{{ $value }}", value)
        for name, label in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", label)
        assert "{{" not in text, text
        shown[key] = text
    return {"exp_labels": {**rule.get("labels", {}), **labels}, "exp_annotations": shown}


@needs_promtool
def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on the series it is about, after its
    `for:`, and stays quiet otherwise."""
    tests = [
        {   # a backlog nobody works on, a new dead letter, a failing endpoint
            "interval": "1m",
            "input_series": [
                series("media_jobs_pending", "60x60"),
                series("media_jobs_running", "0x60", resource_category="cpu"),
                series("media_jobs_running", "0x60", resource_category="gpu_encode"),
                series("media_jobs_dead_lettered", "2x10 3x50"),
                series("media_notification_breaker_open", "1x60", endpoint="hooks.example"),
                series("media_notification_breaker_open", "0x60", endpoint="ok.example"),
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "MediaJobQueueBacklog", "exp_alerts": []},
                {"eval_time": "35m", "alertname": "MediaJobQueueBacklog",
                 "exp_alerts": [expected("MediaJobQueueBacklog", "60", **SCRAPED)]},
                {"eval_time": "5m", "alertname": "MediaJobsStuckRunning", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "MediaJobsStuckRunning",
                 "exp_alerts": [expected("MediaJobsStuckRunning")]},
                {"eval_time": "20m", "alertname": "MediaJobsDeadLettered",
                 "exp_alerts": [expected("MediaJobsDeadLettered", "1", **SCRAPED)]},
                {"eval_time": "40m", "alertname": "MediaJobsDeadLettered", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "MediaNotificationBreakerOpen",
                 "exp_alerts": []},
                {"eval_time": "20m", "alertname": "MediaNotificationBreakerOpen",
                 "exp_alerts": [expected("MediaNotificationBreakerOpen",
                                         endpoint="hooks.example")]},
                {"eval_time": "20m", "alertname": "MediaqMetricsAbsent", "exp_alerts": []},
            ],
        },
        {   # workers busy: nothing is stuck
            "interval": "1m",
            "input_series": [
                series("media_jobs_pending", "5x30"),
                series("media_jobs_running", "0x30", resource_category="cpu"),
                series("media_jobs_running", "1x30", resource_category="gpu_ai"),
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "MediaJobsStuckRunning", "exp_alerts": []},
            ],
        },
        {   # no category reports a running gauge at all: stuck too
            "interval": "1m",
            "input_series": [series("media_jobs_pending", "5x30")],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "MediaJobsStuckRunning",
                 "exp_alerts": [expected("MediaJobsStuckRunning")]},
            ],
        },
        {   # no metrics at all
            "interval": "1m",
            "input_series": [series("up", "1x30")],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "MediaqMetricsAbsent",
                 "exp_alerts": [expected("MediaqMetricsAbsent")]},
            ],
        },
    ]
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    spec = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_resource_failure_and_queue_age_alerts_fire(tmp_path: Path) -> None:
    """promtool's rule unit tests of issue 25's alerts: a disk under 10 % free for 10
    minutes, more than 20 % of finished jobs failed, an eligible job waiting 30+ minutes."""
    gib = 1024 ** 3
    disk = {"root": "output", "path": "/srv/media/outputs", "host": "gpu-1"}
    roomy = {"root": "input", "path": "/srv/media/inputs", "host": "gpu-1"}
    tests = [
        {   # the output disk drops to 5 % free at minute 10; the input disk stays at 50 %
            "interval": "1m",
            "input_series": [
                series("mediaq_disk_free_bytes", f"{50 * gib}x10 {5 * gib}x30", **disk),
                series("mediaq_disk_total_bytes", f"{100 * gib}x40", **disk),
                series("mediaq_disk_free_bytes", f"{50 * gib}x40", **roomy),
                series("mediaq_disk_total_bytes", f"{100 * gib}x40", **roomy),
            ],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "MediaqDiskNearlyFull", "exp_alerts": []},
                {"eval_time": "15m", "alertname": "MediaqDiskNearlyFull", "exp_alerts": []},
                {"eval_time": "21m", "alertname": "MediaqDiskNearlyFull",
                 "exp_alerts": [expected("MediaqDiskNearlyFull", **SCRAPED, **disk)]},
            ],
        },
        {   # 3 of 10 finished jobs failed (30 %), from minute 10 on
            "interval": "1m",
            "input_series": [
                series("mediaq_jobs_finished_15m", "10x10 7x30", outcome="completed"),
                series("mediaq_jobs_finished_15m", "0x10 3x30", outcome="failed"),
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "MediaJobFailureRateHigh", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "MediaJobFailureRateHigh",
                 "exp_alerts": [expected("MediaJobFailureRateHigh")]},
            ],
        },
        {   # 10 % failed, and 1 of 2 (too few to say): quiet; nothing finished: quiet
            "interval": "1m",
            "input_series": [
                series("mediaq_jobs_finished_15m", "9x20 1x20 0x20", outcome="completed"),
                series("mediaq_jobs_finished_15m", "1x20 1x20 0x20", outcome="failed"),
            ],
            "alert_rule_test": [
                {"eval_time": "15m", "alertname": "MediaJobFailureRateHigh", "exp_alerts": []},
                {"eval_time": "35m", "alertname": "MediaJobFailureRateHigh", "exp_alerts": []},
                {"eval_time": "55m", "alertname": "MediaJobFailureRateHigh", "exp_alerts": []},
            ],
        },
        {   # a cpu job that could start waits ever longer; gpu_ai stays fresh
            "interval": "1m",
            "input_series": [
                series("media_queue_oldest_eligible_age_seconds", "0+60x60",
                       resource_category="cpu"),
                series("media_queue_oldest_eligible_age_seconds", "30x60",
                       resource_category="gpu_ai"),
            ],
            "alert_rule_test": [
                {"eval_time": "33m", "alertname": "MediaJobQueueStale", "exp_alerts": []},
                {"eval_time": "40m", "alertname": "MediaJobQueueStale",
                 "exp_alerts": [expected("MediaJobQueueStale", resource_category="cpu")]},
            ],
        },
    ]
    tests.append({  # an action's breaker on gpu-1 opens at minute 5 and stays open
        "interval": "1m",
        "input_series": [
            series("mediaq_action_breaker_open", "0x5 1x30", action="transcode_video",
                   host="gpu-1"),
            series("mediaq_action_breaker_open", "0x35", action="noop", host=""),
        ],
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "MediaqActionBreakerOpen", "exp_alerts": []},
            {"eval_time": "25m", "alertname": "MediaqActionBreakerOpen",
             "exp_alerts": [expected("MediaqActionBreakerOpen", action="transcode_video",
                                     host="gpu-1")]},
        ],
    })
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    spec = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "resources_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = promtool("test", "rules", "resources_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- Alertmanager -------------------------------------------------------------------------


def test_alertmanager_example_routes_alerts_to_slack() -> None:
    """The structure, whatever is installed: a route whose receivers all post to Slack."""
    doc = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    receivers = {r["name"]: r for r in doc["receivers"]}
    route = doc["route"]
    used = {route["receiver"]} | {r["receiver"] for r in route.get("routes", [])}
    assert used <= set(receivers), used - set(receivers)
    for name in used:
        slack = receivers[name]["slack_configs"]
        assert slack and all(c["channel"].startswith("#") for c in slack), name
    # the webhook URL is a secret: read from a file, never written in the example
    assert "hooks.slack.com/services/" not in yaml.safe_dump(doc)
    assert doc["global"]["slack_api_url_file"].startswith("/etc/")
    severities = {s for r in alert_rules().values() for s in [r["labels"]["severity"]]}
    assert severities <= {"warning", "critical"}
    assert any("critical" in m for r in route["routes"] for m in r["matchers"])


@requires_tool("amtool")
def test_amtool_checks_the_alertmanager_example() -> None:
    amtool = shutil.which("amtool")
    assert amtool is not None
    result = subprocess.run([amtool, "check-config", str(ALERTMANAGER)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- Grafana ------------------------------------------------------------------------------


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def test_grafana_dashboard_uses_only_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = list(dashboard_exprs(dashboard["panels"]))
    assert len(exprs) >= len(panels)
    used: set[str] = set()
    for expr in exprs:
        used |= check_known(expr)
    assert used == set(METRICS), f"not shown: {set(METRICS) - used}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    assert any("histogram_quantile(0.9" in e for e in exprs)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "workflow"} <= set(variables)
    assert variables["workflow"]["definition"] == (
        "label_values(media_step_duration_seconds_count, workflow)")


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, Grafana's variables filled in, parses as PromQL (as a
    recording rule that promtool checks)."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [e.replace("$__rate_interval", "5m").replace("$workflow", ".*")
             for e in dashboard_exprs(dashboard["panels"])]
    rules = [{"record": f"mediaq:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- the environment file -----------------------------------------------------------------


_ASSIGNMENT = re.compile(r"^(#?)(MEDIAQ_[A-Z0-9_]+)=(.*)$")


def test_env_example_names_only_real_settings() -> None:
    known = {spec.env.removeprefix("MEDIAQ_").lower() for spec in SPECS}
    active: dict[str, str] = {}
    mentioned = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line)
        if not match:
            assert not re.match(r"^#?\s*MEDIAQ_\w+\s*=", line), f"odd line: {line!r}"
            continue
        commented, key, value = match.groups()
        name = key.removeprefix("MEDIAQ_").lower()
        assert name in known, f"{key} is not a setting in mediaq.config"
        assert name not in mentioned, f"{key} appears twice"
        mentioned.add(name)
        if not commented:
            active[key] = value
    missing = known - mentioned
    assert not missing, f"settings missing from {ENV_EXAMPLE.name}: {sorted(missing)}"
    # Secrets are placeholders; the webhook secret's is refused until it is replaced
    # (`mediaq webhooks secret` makes one), the other values are valid settings.
    with pytest.raises(ConfigError, match=r"webhook_secret is not valid.*\(got \*\*\* from"):
        load_settings(active)
    settings = load_settings({**active, "MEDIAQ_WEBHOOK_SECRET": new_secret()})
    assert settings.database.url and not settings.database.embedded
    assert settings.logging.format == "json"
    for key, value in active.items():
        if any(word in key.lower() for word in ("password", "secret")) and value:
            assert "CHANGE_ME" in value, key
    assert "CHANGE_ME" in active["MEDIAQ_DATABASE_URL"]
    # Workers get the whole grace period before systemd kills them.
    worker = unit_settings(UNITS / "mediaq-worker@.service")
    assert float(worker["TimeoutStopSec"][0]) > settings.worker.shutdown_grace_seconds


def test_toml_example_is_valid_and_uses_sections() -> None:
    example = DEPLOY / "mediaq.example.toml"
    document = tomllib.loads(example.read_text(encoding="utf-8"))
    assert set(document) <= set(GROUPS), "the example uses [section] tables only"
    settings = load_settings({"MEDIAQ_CONFIG": str(example)})
    assert settings.storage.home == Path("/var/lib/mediaq")
    assert settings.logging.format == "json" and settings.web.port == 8080


def test_production_guide_sql_runs(mq: MediaqEnv) -> None:
    """The SQL in PRODUCTION.md (autovacuum settings, retention) runs on the schema."""
    guide = (DEPLOY / "PRODUCTION.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", guide, re.DOTALL)
    assert any("autovacuum_vacuum_scale_factor" in b for b in blocks)
    with mq.connect() as conn:
        for block in blocks:
            conn.execute(block)
        tuned = conn.execute("SELECT relname FROM pg_class WHERE reloptions IS NOT NULL"
                             " AND relnamespace = 'mediaq'::regnamespace").fetchall()
    assert {"workflow_jobs", "step_executions", "workflow_notifications",
            "media_workflow_events"} <= {r["relname"] for r in tuned}


# -- mediaq db roles ----------------------------------------------------------------------


def connect_as(url: str, user: str, password: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, user=user, password=password, autocommit=True,
                           row_factory=dict_row)


def refused(conn: psycopg.Connection[dict[str, Any]], statement: str,
            error: type[psycopg.Error] = psycopg.errors.InsufficientPrivilege) -> None:
    with pytest.raises(error):
        conn.execute(statement)


@pytest.fixture
def login_names(server_url: str) -> Iterator[tuple[str, str]]:
    """Two LOGIN role names unique to this run (roles are cluster-wide), dropped after."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"mq_submitter_{suffix}", f"mq_reader_{suffix}")
    yield names
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_db_roles_submitter_and_reader(mq: MediaqEnv, login_names: tuple[str, str]) -> None:
    submitter, reader = login_names
    mq.apply_workflow(diagnostic_workflow("WF-ROLES", {"action": "noop"}))
    first = mq.cli("db", "roles", "--login", f"{submitter}:submitter",
                   "--login", f"{reader}:reader")
    passwords = dict(re.findall(r"^(\S+): created, member of \S+, password (\S+)$",
                                first.stdout, re.MULTILINE))
    assert set(passwords) == {submitter, reader}, first.stdout
    again = mq.cli("db", "roles", "--login", f"{submitter}:submitter")  # idempotent
    assert f"{submitter}: exists, password unchanged" in again.stdout
    assert "password " not in again.stdout.replace("password unchanged", "")
    bad = mq.cli("db", "roles", "--login", "nobody:admin", check=False)
    assert bad.returncode == 2 and "USER:submitter" in bad.stderr
    # A password from stdin replaces the reader's; only a SCRAM verifier is stored.
    piped = subprocess.run([*MEDIAQ, "db", "roles", "--login", f"{reader}:reader",
                            "--password-stdin"], input="s3cret-from-stdin\n", env=mq.env,
                           capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert f"{reader}: password set" in piped.stdout and "s3cret" not in piped.stdout
    stored = mq.one("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (reader,))
    assert stored["rolpassword"].startswith("SCRAM-SHA-256$")
    passwords[reader] = "s3cret-from-stdin"

    # The engine's own callers are unchanged: any submitted_by, idempotency keys.
    other = mq.one("SELECT job_code, submitted_by FROM submit_job('WF-ROLES', '/in/o.png',"
                   " idempotency_key => 'carol-1', submitted_by => 'carol')")
    assert other["submitted_by"] == "carol"
    assert mq.one("SELECT job_code FROM submit_job('WF-ROLES', '/in/o.png',"
                  " idempotency_key => 'carol-1')")["job_code"] == other["job_code"]

    with connect_as(mq.url, submitter, passwords[submitter]) as conn:
        job = conn.execute("SELECT job_code, submitted_by, status FROM "
                           "mediaq.submit_job('WF-ROLES', '/in/a.png', 7)").fetchone()
        assert job is not None and job["submitted_by"] == submitter
        assert job["status"] in ("pending", "queued")
        keyed = conn.execute("SELECT (mediaq.submit_job('WF-ROLES', '/in/b.png',"
                             " idempotency_key => 'mine-1')).job_code").fetchone()
        same = conn.execute("SELECT (mediaq.submit_job('WF-ROLES', '/in/b.png',"
                            " idempotency_key => 'mine-1')).job_code").fetchone()
        assert keyed == same
        mine = conn.execute("SELECT job_code, submitted_by FROM mediaq.my_jobs").fetchall()
        assert keyed is not None
        assert {r["job_code"] for r in mine} == {job["job_code"], keyed["job_code"]}
        assert {r["submitted_by"] for r in mine} == {submitter}
        # Nobody else's jobs, by any path.
        refused(conn, "SELECT * FROM mediaq.workflow_jobs")
        refused(conn, "SELECT mediaq.submit_job('WF-ROLES', '/in/c.png',"
                      " idempotency_key => 'carol-1')", psycopg.errors.UniqueViolation)
        refused(conn, "SELECT mediaq.submit_job('WF-ROLES', '/in/c.png',"
                      " submitted_by => 'carol')")
        # Nothing but submit_job writes.
        refused(conn, "UPDATE mediaq.workflow_jobs SET priority = 10")
        refused(conn, "DELETE FROM mediaq.workflow_jobs")
        refused(conn, "UPDATE mediaq.my_jobs SET priority = 10")
        refused(conn, "DELETE FROM mediaq.my_jobs")
        refused(conn, "INSERT INTO mediaq.workflow_jobs (workflow_id, input_file_path)"
                      " VALUES (1, '/in/x.png')")
        refused(conn, "SELECT * FROM mediaq.workflow_definitions")
        refused(conn, "UPDATE mediaq.media_queue SET priority = 10")
        # The owner's rights inside submit_job are not lent to the caller's temporary
        # objects: a temp table named like mediaq's does not capture the queue row.
        conn.execute("CREATE TEMP TABLE media_queue (job_id bigint, queue_name text,"
                     " priority int, scheduled_time timestamptz, status text,"
                     " worker_id text, id bigint)")
        hijack = conn.execute("SELECT (mediaq.submit_job('WF-ROLES', '/in/d.png')).job_code"
                              ).fetchone()
        assert conn.execute("SELECT count(*) AS n FROM pg_temp.media_queue"
                            ).fetchone() == {"n": 0}
    assert hijack is not None
    queued = mq.one("SELECT count(*) AS n FROM media_queue q JOIN workflow_jobs j"
                    " ON j.id = q.job_id WHERE j.job_code = %s", (hijack["job_code"],))
    assert queued["n"] == 1
    assert mq.one("SELECT count(*) AS n FROM workflow_jobs WHERE submitted_by = %s",
                  (submitter,))["n"] == 3

    with connect_as(mq.url, reader, passwords[reader]) as conn:
        assert conn.execute("SELECT count(*) AS n FROM mediaq.workflow_jobs"
                            ).fetchone() == {"n": 4}
        relations = conn.execute("SELECT relname, relkind FROM pg_class"
                                 " WHERE relnamespace = 'mediaq'::regnamespace"
                                 " AND relkind IN ('r', 'p', 'v', 'm')").fetchall()
        assert {"v", "r"} <= {r["relkind"] for r in relations}
        for row in relations:  # every table and view is readable
            conn.execute(sql.SQL("SELECT * FROM mediaq.{} LIMIT 1").format(
                sql.Identifier(row["relname"])))
        refused(conn, "INSERT INTO mediaq.workflow_jobs (workflow_id, input_file_path)"
                      " VALUES (1, '/in/x.png')")
        refused(conn, "UPDATE mediaq.workflow_jobs SET priority = 10")
        refused(conn, "DELETE FROM mediaq.settings")
        refused(conn, "SELECT mediaq.submit_job('WF-ROLES', '/in/r.png')")


# -- an external autoscaler ---------------------------------------------------------------

AUTOSCALE = DEPLOY / "autoscale"
# systemd is not running here: this stands in for systemctl, keeping the active
# mediaq-worker@ units as files in $UNITS_DIR and recording every call.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$UNITS_DIR/calls"
case $1 in
    list-units) ls "$UNITS_DIR" | grep '^mediaq-worker@' | sed 's/$/ loaded active running/' ;;
    start) touch "$UNITS_DIR/$2" ;;
    stop) rm -f "$UNITS_DIR/$3" ;;
esac
"""


def test_external_autoscaler_follows_the_eligible_queue(mq: MediaqEnv, tmp_path: Path) -> None:
    """deploy/autoscale/mediaq-scale.sh starts worker instances for the jobs that could
    start now (not those retrying later) and drains the surplus when the queue empties;
    the KEDA example scales on metrics /metrics exposes."""
    mq.apply_workflow(diagnostic_workflow("T-SCALE", {"action": "noop"}))
    source = mq.input_file("in.bin")
    mq.query("INSERT INTO workflow_jobs (workflow_id, input_file_path) SELECT id, %s "
             "FROM workflow_definitions, generate_series(1, 12) "
             "WHERE workflow_code = 'T-SCALE' AND is_current", (str(source),))
    mq.query("UPDATE workflow_jobs SET retry_after = now() + interval '1 hour' "
             "WHERE id IN (SELECT id FROM workflow_jobs ORDER BY id LIMIT 2)")
    depth = {r["resource_category"]: r for r in json.loads(
        mq.cli("queue", "depth", "--json").stdout)}
    assert set(depth) == {"cpu", "gpu_encode", "gpu_ai"}
    assert (depth["cpu"]["waiting"], depth["cpu"]["eligible"], depth["gpu_ai"]["waiting"]) == (
        12, 10, 0)

    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir()
    units.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "mediaq").write_text(f'#!/bin/sh\nexec {" ".join(MEDIAQ)} "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    (units / "mediaq-worker@blue.service").touch()  # not numbered: left alone
    env = {**mq.env, "PATH": f"{bin_dir}:/usr/bin:/bin", "UNITS_DIR": str(units),
           "MEDIAQ_BIN": str(bin_dir / "mediaq"), "MEDIAQ_SCALE_RANGE": "1:8",
           "MEDIAQ_SCALE_JOBS_PER_WORKER": "4", "MEDIAQ_SCALE_CATEGORIES": "cpu gpu_encode"}

    def scale() -> set[str]:
        result = subprocess.run(["sh", str(AUTOSCALE / "mediaq-scale.sh")], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return {p.name for p in units.glob("mediaq-worker@*")}

    # 10 eligible jobs, 4 per instance: 3 instances.
    assert scale() == {f"mediaq-worker@{n}.service" for n in (1, 2, 3)} | {
        "mediaq-worker@blue.service"}
    mq.query("UPDATE workflow_jobs SET status = 'cancelled', completed_at = now() "
             "WHERE retry_after IS NULL")
    # Only jobs retrying in an hour are left: back to the minimum, the rest drained.
    assert scale() == {"mediaq-worker@1.service", "mediaq-worker@blue.service"}
    calls = (units / "calls").read_text().splitlines()
    assert "stop --no-block mediaq-worker@3.service" in calls
    assert not any("blue" in call for call in calls if call.startswith("stop"))
    assert mq.cli("queue", "depth", "--workers", "2:8").stdout.strip() == "2"

    keda = yaml.safe_load((AUTOSCALE / "keda-scaledobject.yaml").read_text(encoding="utf-8"))
    [trigger] = keda["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert check_known(trigger["metadata"]["query"]) == {
        "media_queue_eligible", "media_jobs_running"}
