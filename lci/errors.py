"""User-facing errors.

Every mistake a user can make (a bad config key, an unknown loss, a missing data file, a
corrupt checkpoint) is raised as an :class:`LCIError`. The CLI turns it into one line on stderr
and exit status 2; library callers can catch it (it is a ``ValueError``).
"""
from __future__ import annotations

from typing import Iterable


class LCIError(ValueError):
    """A problem with the user's input, explained in one line."""


class ConfigError(LCIError):
    """A config key or value that is not allowed."""


class DataError(LCIError):
    """A data set that is missing, malformed or inconsistent."""


class CheckpointError(LCIError):
    """A checkpoint that cannot be used to resume."""


def allowed(values: Iterable) -> str:
    """Format a list of allowed values for an error message."""
    return ", ".join(repr(v) for v in values)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss; the run stops with this reason."""


#: Errors that would happen again on a retry: bad input, and a run that diverges (training is
#: deterministic for a seed). A Tune trial that hits one ends at once instead of being retried.
RECURRING_ERRORS = (LCIError, DivergenceError)
#: The result key that carries the one-line reason of a run that ended on such an error.
FAILED_KEY = "lci_failed"
