"""mediaq: media workflows on PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"

from mediaq.submit import submit

__all__ = ["__version__", "submit"]
