"""mediaq: media workflows on PostgreSQL."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "submit"]

if TYPE_CHECKING:
    from mediaq.submit import submit


def __getattr__(name: str) -> Any:
    # mediaq.submit needs psycopg and the SQL files: importing it on first use keeps
    # `import mediaq` (and mediaq.actions, all a media plugin imports) free of the
    # database layer.
    if name == "submit":
        from mediaq.submit import submit

        globals()["submit"] = submit  # the next look-up is a plain attribute
        return submit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """The ``mediaq`` package, whose attribute ``submit`` is always the function.

    Importing the submodule ``mediaq.submit`` (as the CLI, the worker and the triggers
    do) makes the import system bind the module as the package's ``submit``, which
    would turn ``mediaq.submit(conn, ...)`` into calling a module. That binding is
    dropped; ``sys.modules["mediaq.submit"]`` still holds the module for
    ``from mediaq.submit import ...``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "submit" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
