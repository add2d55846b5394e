"""Every exception mediaq defines, in two separate trees.

``MediaqError`` is the root of everything a person may be shown: its message is one
line, and its family says what kind of answer it is, so the web layer and the CLI
map a family, never a single class::

    MediaqError                      something to tell a person (one-line message)
    ├── Refused                      the request, input or definition is wrong      400
    │   └── SubmissionRefused, WorkflowError, ReportRefused, SignatureError,
    │       TargetRefused
    ├── NotFound                     the thing named does not exist                 404
    │   └── JobNotFound
    ├── Conflict                     it exists, but its state does not allow this    409
    │   └── InvalidTransition
    ├── Unavailable                  a dependency is not ready; later may work      503
    │   └── SchemaOutdated
    ├── ConfigError                  this installation's settings are wrong         500
    └── StepError                    a step failed; the executor classifies on these
        ├── PermanentError           retrying cannot help                           400
        │   ├── ActionNotAvailable, InvalidParameters, InputRefused, JobTimedOut
        └── TransientError           the step may succeed later                     503
            └── StepTimedOut

``Interrupt`` is the root of the signals that only steer the executor::

    Interrupt                        not an error (one reaching a person is a bug: 500)
    ├── Cancelled, Paused, LeaseLost the job must stop (ActionContext.check raises them)
    └── StepFailed                   a step's failure, already classified

They are not failures to report, so they are not MediaqErrors: an ``except
MediaqError`` never swallows a stop request, and no handler turns one into a
"bad request".

Every class pickles with its message (a step run in a child process sends its
exception back to the worker, see ``mediaq.worker.isolation``).
"""

from __future__ import annotations

from typing import Any


class _OneLine:
    """A message defaulting to the class docstring, kept in ``args`` so it pickles."""

    args: tuple[Any, ...]

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())  # type: ignore[call-arg]

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class MediaqError(_OneLine, Exception):
    """mediaq failed."""


# -- families a person is shown ----------------------------------------------------------


class Refused(MediaqError):
    """The request is invalid."""


class NotFound(MediaqError, LookupError):
    """It does not exist."""


class Conflict(MediaqError):
    """Its current state does not allow this."""


class Unavailable(MediaqError):
    """A service mediaq depends on is not ready; trying again later may work."""


class ConfigError(MediaqError):
    """The configuration is invalid."""


class StepError(MediaqError):
    """A step failed (the executor decides between failing and retrying by subclass)."""


class PermanentError(StepError):
    """The input or the parameters are wrong; retrying cannot help."""


class TransientError(StepError):
    """A resource or dependency failed; the step may succeed later."""


# -- refused ---------------------------------------------------------------------------


class SubmissionRefused(Refused):
    """The job cannot be submitted."""


class WorkflowError(Refused):
    """The workflow definition is invalid."""


class ReportRefused(Refused, LookupError):
    """The report does not exist or its options are invalid."""


class SignatureError(Refused, ValueError):
    """The delivery's signature does not verify."""


class TargetRefused(Refused):
    """The webhook target is not a public address and is not allowed."""


# -- not found, conflict, unavailable ------------------------------------------------------


class JobNotFound(NotFound):
    """No such job."""


class InvalidTransition(Conflict):
    """The job is not in a state that allows this."""


class SchemaOutdated(Unavailable):
    """The database schema is older than this mediaq; run `mediaq db upgrade`."""


# -- step failures -----------------------------------------------------------------------


class ActionNotAvailable(PermanentError):
    """No installed plugin provides this action."""


class InvalidParameters(PermanentError, ValueError):
    """The step's parameters do not match the action's schema."""


class InputRefused(PermanentError):
    """The input file is missing, unreadable or outside the input roots."""


class JobTimedOut(PermanentError):
    """The job ran past its workflow's timeout_minutes."""


class StepTimedOut(TransientError):
    """The step ran past its timeout_seconds."""


# -- control flow: not errors ------------------------------------------------------------


class Interrupt(_OneLine, Exception):
    """The executor must change course (a signal, never shown as an error)."""


class Cancelled(Interrupt):
    """The job was cancelled by an operator."""


class Paused(Interrupt):
    """The job was paused by an operator and is handed back."""


class LeaseLost(Interrupt):
    """Another worker owns this job now; this worker must stop writing."""


class StepFailed(Interrupt):
    """A step failed and was classified: ``error_class`` is 'permanent' or 'transient'
    (``mediaq.worker.outcomes.classify``); the executor turns it into a step outcome."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error_class, self.message))
