"""Layer boundaries.

The static contracts (actions never reach the database, the engine, the triggers or
the settings; the CLI over the web over the worker over triggers and notifications
over actions; web and CLI without SQL text or worker internals) are import-linter's,
in pyproject.toml, run by ``make lint``. Here: that they hold and that they bite, and
what only a running interpreter shows (which modules an import really loads).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FORBIDDEN = ("psycopg", "psycopg_pool", "sqlalchemy", "mediaq.db", "mediaq.worker",
             "mediaq.queries", "mediaq.operations", "mediaq.cli", "mediaq.triggers",
             "mediaq.submit", "mediaq.config")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml")],
                          cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_the_layer_contracts_hold() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_an_action_that_reaches_the_database_breaks_a_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "mediaq", tmp_path / "mediaq",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    helper = tmp_path / "mediaq" / "actions" / "clip.py"
    # Indirectly: an action helper that imports a service module that holds the SQL.
    helper.write_text(helper.read_text(encoding="utf-8") + "\nfrom mediaq import submit\n",
                      encoding="utf-8")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "mediaq.actions.clip -> mediaq.submit" in done.stdout


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(*sys.modules)"],
                          capture_output=True, text=True, check=True, timeout=60)
    return set(done.stdout.split())


def test_importing_mediaq_and_its_actions_leaves_the_database_layer_out() -> None:
    # A media plugin imports mediaq.actions; it must work without psycopg installed.
    loaded = _modules_after("import mediaq, mediaq.actions")
    assert not {m for m in loaded if m.startswith((*FORBIDDEN, "mediaq.submit"))}


def test_loading_every_builtin_action_leaves_the_database_layer_out() -> None:
    loaded = _modules_after("import mediaq.actions\nmediaq.actions.available_actions()")
    assert not {m for m in loaded if m.startswith(FORBIDDEN)}


def test_mediaq_submit_stays_the_function_once_the_module_is_imported() -> None:
    # Importing the submodule first (as the CLI and the worker do) binds it as the
    # package's attribute `submit`, normally; a fresh interpreter makes it come first.
    code = ("import mediaq.triggers.schedules, mediaq.submit, mediaq, sys\n"
            "assert mediaq.submit is sys.modules['mediaq.submit'].submit, mediaq.submit\n"
            "from mediaq import submit\n"
            "assert callable(submit)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
