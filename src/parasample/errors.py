"""The exceptions that mean "bad input", as opposed to a bug.

Validators raise :class:`InputError` (an option out of range, a file that is malformed, a
combination that cannot work) with a message that says what is wrong and how to fix it; the
command line prints it as one line, ``error: ...``, with exit code 2. Any other exception is a
crash inside parasample: the command line shows its traceback and asks for a report, so a bug
never reads as the user's fault.
"""

from __future__ import annotations

__all__ = ["InputError", "MissingInputError", "require_at_least"]


class InputError(ValueError):
    """Bad input: a value, file or combination the caller can change (a ``ValueError``, so
    library callers that catch ``ValueError`` keep working)."""


class MissingInputError(InputError, FileNotFoundError):
    """A file, model or package the caller must provide is not there."""


def require_at_least(config, least: int, *names: str) -> None:
    """Raise :class:`InputError` naming the first of ``config``'s fields ``names`` below
    ``least`` (the range check every frozen config repeats for its counts)."""
    for name in names:
        if getattr(config, name) < least:
            raise InputError(f"{name}={getattr(config, name)} must be >= {least}.")
