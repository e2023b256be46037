"""Typed options whose fields carry their own help text and valid range.

A config is a dataclass of :func:`option` fields. Each field's metadata holds the help the
command line shows and the rule ``__post_init__`` checks, so the CLI, the checks and the
docs read one source and cannot drift (PEFT's ``LoraConfig`` is the model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .errors import ConfigError

__all__ = ["Check", "Config", "at_least", "between", "one_of", "option", "satisfies", "option_help"]


@dataclass(frozen=True)
class Check:
    """A rule a value must follow, and how to say it in an error message."""

    rule: str
    test: Callable[[Any], bool]

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def at_least(low: float, kind: type = float, strict: bool = False) -> Check:
    """``value >= low`` (``> low`` when strict), of ``kind``."""
    noun = "an int" if kind is int else "a float"
    if kind is int:
        test = lambda v: isinstance(v, int) and not isinstance(v, bool) and (v > low if strict else v >= low)  # noqa: E731
    else:
        test = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and (v > low if strict else v >= low)  # noqa: E731
    return Check(f"{noun} {'>' if strict else '>='} {low:g}", test)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """A number in the interval, brackets as in maths: ``[low, high)`` etc."""
    def test(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return Check(f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}", test)


def one_of(*choices: Any) -> Check:
    """One of the given values (None included where it is a choice)."""
    shown = " or ".join("None" if c is None else repr(c) for c in choices)
    return Check(shown, lambda v: v in choices)


def satisfies(rule: str, test: Callable[[Any], bool]) -> Check:
    """A rule that is no range or choice (e.g. a policy string another library must parse)."""
    return Check(rule, test)


def option(default: Any, help: str, check: Check | None = None, *, flag: str | None = None) -> Any:  # noqa: A002
    """A config field with its help text and its valid range; ``flag`` renames the CLI option."""
    return field(default=default, metadata={"help": help, "check": check, "flag": flag})


def option_help(config_class: type, name: str) -> str:
    """The help text of one field of a config class."""
    return next(f.metadata.get("help", "") for f in fields(config_class) if f.name == name)


@dataclass
class Config:
    """Base of every options dataclass: checks each field against its rule after init.

    ``owner`` names the thing configured (a strategy, a method) in error messages.
    """

    owner: ClassVar[str] = "headstart"

    def __post_init__(self) -> None:
        for spec in fields(self):
            check = spec.metadata.get("check")
            value = getattr(self, spec.name)
            if check is not None and not (value is None and spec.default is None) and not check(value):
                raise ConfigError(f"The '{spec.name}' option of {self.owner} must be {check.rule}. "
                                  f"Got {value!r} instead.")
