"""A registry of named classes: what ``@register_strategy`` and ``@register_adaptation`` fill.

One small class (timm's model registry is the model) so every extension point looks up,
lists and reports unknown names the same way.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import ConfigError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by their ``name`` attribute, in registration order; ``kind`` names them in messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name`` (a name already taken is an error)."""
        if cls.name in self._entries:
            raise ConfigError(f"A {self.kind} named '{cls.name}' is already registered.")
        self._entries[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return list(self._entries)

    def classes(self) -> list[type[T]]:
        return list(self._entries.values())

    def get(self, name: str) -> type[T]:
        """The class registered under ``name``; an unknown name is a clear error with a suggestion."""
        if name not in self._entries:
            raise ConfigError(f"Unknown {self.kind} '{name}'.{did_you_mean(str(name), self._entries)} "
                              f"Choose one of: {', '.join(self._entries)}.")
        return self._entries[name]
