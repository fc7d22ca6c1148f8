"""The exception tree.

Every failure that leaves pld is a :class:`PLDError` whose message names the fix. Vendor
exceptions (openai, xllamacpp, sqlite) are translated at the boundary where they arise, so
callers only ever need to catch this tree.
"""

from __future__ import annotations


class PLDError(Exception):
    """Base class of everything pld raises on purpose."""


class ConfigError(PLDError):
    """A setting, flag or model spec is wrong; the message says which and how to fix it."""


class ModelNotFound(ConfigError):
    """A model file or embedded model is not installed."""


class DataError(PLDError):
    """Input data is malformed; the message names the file, line or field."""


class BackendError(PLDError):
    """A model backend failed. ``retryable`` tells the client whether a retry can help."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BackendTimeout(BackendError):
    """The backend did not answer in time (retried)."""

    retryable = True


class BackendUnavailable(BackendError):
    """The endpoint cannot be reached (connection refused, reset, server gone)."""

    retryable = True


class RateLimited(BackendError):
    """HTTP 429: retried after ``retry_after`` seconds when the server says."""

    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = 429
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class BackendResponseError(BackendError):
    """The backend answered with an error. 5xx are retryable; 4xx are not."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retryable = status is not None and status >= 500


class ContextOverflow(BackendResponseError):
    """The prompt does not fit the model's context window."""


class BudgetExceeded(PLDError):
    """A hard cap (calls or cost) was reached. Completed work is cached: raise the cap and
    resume."""


class TeacherOutputError(PLDError):
    """The teacher's reply did not parse or violated the schema after all re-asks."""


class TeacherDeferred(PLDError):
    """Batch mode: a teacher request missed the cache and was recorded for the next batch file
    instead of being sent. A phase lets every item run to this point (``gather_all``), so the
    batch holds all of the phase's requests; then the run stops with ``TeacherBatchPending``."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class TeacherBatchPending(PLDError):
    """Batch mode: a request file was written and the run waits for its results. Not a
    failure: the CLI exits with ``exit_code`` (75, EX_TEMPFAIL: "try again later").
    ``phase`` and ``requests_file`` say which export waits, for callers that answer it
    themselves (the demo imports recorded replies)."""

    exit_code = 75

    def __init__(self, message: str, *, phase: str = "", requests_file: str = "") -> None:
        super().__init__(message)
        self.phase = phase
        self.requests_file = requests_file


class BatchImportError(PLDError):
    """A batch results file failed validation; nothing was imported. The message lists every
    bad line as FILE:LINE: problem; ``problems`` holds them all."""

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class NotFittedError(PLDError):
    """``predict`` was called on a Distiller that has not been fitted or loaded."""


class RunDirError(PLDError):
    """The run directory is missing, unwritable, not empty, or holds a damaged artifact."""


class CacheError(PLDError):
    """The cache database cannot be opened or is damaged."""


class RuleRefused(PLDError):
    """A rule text a person wrote (``pld edit``) failed the checks every teacher-written rule
    passes: an instruction to the model, no condition, or a copy of a training input."""


class LintFailed(PLDError):
    """Strict lint (``--strict``, ``lint_strict``): the rulebook lint found something. The
    run is complete and saved; ``findings`` holds what was found (see lint.json)."""

    def __init__(self, message: str, *, findings: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.findings = findings
