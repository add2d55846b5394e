"""Layer boundaries: media actions never reach the database, the engine or the triggers.

Every module under ``mediaq/actions/`` (subpackages included) is checked, and so is
every mediaq module it imports, and what those import in turn: a helper outside the
package cannot smuggle the database layer in.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mediaq.actions import BUILTIN_MODULES

ROOT = Path(__file__).parent.parent
ACTIONS_DIR = ROOT / "mediaq" / "actions"
ACTIONS = sorted(ACTIONS_DIR.rglob("*.py"))
FORBIDDEN = ("psycopg", "psycopg_pool", "sqlalchemy", "mediaq.db", "mediaq.worker",
             "mediaq.queries", "mediaq.operations", "mediaq.cli", "mediaq.triggers",
             "mediaq.submit", "mediaq.config")
# mediaq/__init__.py re-exports ``submit`` for library users, so importing any mediaq
# module loads mediaq.submit at run time. The walk starts below it: the boundary
# checked here is what the actions' own modules and helpers depend on.
SKIPPED_PACKAGES = ("mediaq",)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else module_name(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            # ``from mediaq.actions import avio`` imports a module, not a name.
            names.update(f"{base}.{alias.name}" for alias in node.names
                         if source_file(f"{base}.{alias.name}") is not None)
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_file(module: str) -> Path | None:
    """The file of a mediaq module, None for anything else."""
    if module != "mediaq" and not module.startswith("mediaq."):
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a.b.c``, ``a.b``, ``a``: importing a module runs its packages too."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def import_chains(start: Path) -> dict[str, list[str]]:
    """Every module reachable from ``start`` through mediaq modules, with the chain of
    modules that leads to it."""
    chains: dict[str, list[str]] = {}
    todo = [(start, [module_name(start)])]
    while todo:
        path, chain = todo.pop()
        for imported in imported_modules(path):
            for module in with_parents(imported):
                if module in chains or module in SKIPPED_PACKAGES:
                    continue
                chains[module] = [*chain, module]
                found = source_file(module)
                if found is not None:
                    todo.append((found, chains[module]))
    return chains


def is_forbidden(module: str) -> bool:
    return any(module == bad or module.startswith(f"{bad}.") for bad in FORBIDDEN)


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: str(p.relative_to(ACTIONS_DIR)))
def test_actions_do_not_reach_the_database_engine_or_triggers(path: Path) -> None:
    bad = {module: chain for module, chain in import_chains(path).items()
           if is_forbidden(module)}
    assert not bad, "\n".join(f"{path.name} reaches {m} via {' -> '.join(c)}"
                              for m, c in sorted(bad.items()))


def test_subpackages_are_checked_too() -> None:
    names = {str(p.relative_to(ACTIONS_DIR)) for p in ACTIONS}
    assert {"base.py", "diagnostic.py", "image.py", "audio/loudness.py",
            "documents/pdf.py", "streaming/hls.py"} <= names


def test_every_builtin_module_is_a_file_that_is_checked() -> None:
    for module in BUILTIN_MODULES:
        path = source_file(module)
        assert path is not None and path in ACTIONS, module


def test_the_walk_finds_the_database_behind_a_helper() -> None:
    # The triggers' scan module is a helper that does reach the database: the walk
    # must report it, and the pure scan pieces the actions use must stay clear of it.
    reached = import_chains(ROOT / "mediaq" / "triggers" / "scan.py")
    assert "mediaq.db" in reached and "psycopg_pool" in reached
    chains = import_chains(ACTIONS_DIR / "library.py")
    assert chains["mediaq.files"] == ["mediaq.actions.library", "mediaq.files"]
    assert not any(is_forbidden(m) for m in import_chains(ROOT / "mediaq" / "files.py"))


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
