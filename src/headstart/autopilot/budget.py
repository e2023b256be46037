"""A time budget, read from a clock that tests can replace, and the spelling of durations."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from ..errors import ConfigError

__all__ = ["Budget", "parse_duration", "format_duration"]

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``90s``, ``20m``, ``1h``, ``1h30m`` or a bare number of minutes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text) * 60
    else:
        spelled = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(spelled) * 60
        except ValueError:
            match = _DURATION.match(spelled)
            if not spelled or match is None:
                raise ConfigError(f"The budget must be a duration such as 90s, 20m, 1h or 1h30m (a bare number is "
                                  f"minutes). Got {text!r} instead.") from None
            seconds = sum(float(value) * _UNITS[unit] for value, unit in zip(match.groups(), "hms") if value)
    if seconds <= 0:
        raise ConfigError(f"The budget must be longer than zero. Got {text!r} instead.")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h05m``, ``12m30s`` or ``40s``: how a person reads a time left."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Budget:
    """Seconds a job may take. ``spent`` counts what an interrupted earlier attempt used, so a
    resumed job keeps to the same total."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic, spent: float = 0.0) -> None:
        self.seconds, self.clock, self.before = float(seconds), clock, float(spent)
        self.started = clock()

    def spent(self) -> float:
        return self.before + self.clock() - self.started

    def left(self) -> float:
        return max(0.0, self.seconds - self.spent())

    def __repr__(self) -> str:
        return f"Budget({format_duration(self.seconds)}, {format_duration(self.left())} left)"
