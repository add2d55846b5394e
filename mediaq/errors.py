"""Error classes the engine acts on.

Every failure is classified once, here, so the executor decides between
"fail now", "retry with back-off" and "rescue" from the exception type alone.
"""

from __future__ import annotations


class MediaqError(Exception):
    """mediaq failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class PermanentError(MediaqError):
    """The input or the parameters are wrong; retrying cannot help."""


class TransientError(MediaqError):
    """A resource or dependency failed; the step may succeed later."""


class ActionNotAvailable(PermanentError):
    """No installed plugin provides this action."""


class InvalidParameters(PermanentError, ValueError):
    """The step's parameters do not match the action's schema."""


class InputRefused(PermanentError):
    """The input file is missing, unreadable or outside the input roots."""


class Cancelled(MediaqError):
    """The job was cancelled by an operator."""


class Paused(MediaqError):
    """The job was paused by an operator and is handed back."""


class LeaseLost(MediaqError):
    """Another worker owns this job now; this worker must stop writing."""


class StepTimedOut(TransientError):
    """The step ran past its timeout_seconds."""


class JobTimedOut(PermanentError):
    """The job ran past its workflow's timeout_minutes."""


class ConfigError(MediaqError):
    """The configuration is invalid."""


class SchemaOutdated(MediaqError):
    """The database schema is older than this mediaq; run `mediaq db upgrade`."""


class SubmissionRefused(MediaqError):
    """The job cannot be submitted."""


class ReportRefused(MediaqError, LookupError):
    """The report does not exist or its options are invalid."""
