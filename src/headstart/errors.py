"""Errors a user can act on.

Every error raised on user input is a :class:`HeadstartError`; the CLI prints its message
in one line and exits with code 2 instead of showing a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["HeadstartError", "DataError", "ConfigError", "WeightsUnavailableError", "OutputError", "did_you_mean",
           "describe_os_error", "first_line"]


class HeadstartError(Exception):
    """Base class of every error headstart raises on bad input."""


class DataError(HeadstartError):
    """The data is unusable as given: the message names the file, line or class."""


class ConfigError(HeadstartError, ValueError):
    """An option, model name or combination of options is invalid."""


class WeightsUnavailableError(ConfigError):
    """Pre-trained weights are not on this machine and cannot be downloaded."""


class OutputError(HeadstartError, OSError):
    """An output could not be written (disk full, read-only, no permission): nothing half-written is kept."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The exception's first line of text (at most ``limit`` characters), or its type's name when it has none:
    what a one-line error can quote of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def describe_os_error(exc: BaseException) -> str:
    """``'No space left on device'`` for an OSError, else the exception's own first line; torch
    reports a full disk as a RuntimeError from its zip writer, which says nothing a user can act on."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = first_line(exc)
    if "inline_container" in text or "unexpected pos" in text or "file write failed" in text:
        return "the write failed (is the disk full?)"
    return text[:200]


def did_you_mean(given: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or an empty string."""
    close = difflib.get_close_matches(given, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
