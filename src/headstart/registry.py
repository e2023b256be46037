"""A registry of named classes: what ``@register_strategy`` and ``@register_adaptation`` fill.

One small class (timm's model registry is the model) so every extension point looks up,
lists and reports unknown names the same way. The built-in classes live in modules that import
torch; a registry names those modules and imports them on its first use, so that importing a
package (and building the command line from its configs) does not.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Generic, TypeVar

from .errors import ConfigError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by their ``name`` attribute, in registration order; ``kind`` names them in messages.

    ``modules`` are the modules of the built-in classes, imported in this order on first use (a
    lookup, a listing or a registration), so the order is theirs whichever module is imported first.
    """

    def __init__(self, kind: str, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, type[T]] = {}
        self._modules = tuple(modules)
        self._loaded = not self._modules

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: the modules register into this registry while they load
            for module in self._modules:
                importlib.import_module(module)

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name`` (a name already taken is an error)."""
        self._load()
        if cls.name in self._entries:
            raise ConfigError(f"A {self.kind} named '{cls.name}' is already registered.")
        self._entries[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return [cls.name for cls in self.classes()]

    def classes(self) -> list[type[T]]:
        """Built-in classes in the order of ``modules`` (whichever was imported first), then the others
        in registration order."""
        self._load()
        place = {module: i for i, module in enumerate(self._modules)}
        return sorted(self._entries.values(), key=lambda cls: place.get(cls.__module__, len(place)))

    def get(self, name: str) -> type[T]:
        """The class registered under ``name``; an unknown name is a clear error with a suggestion."""
        self._load()
        if name not in self._entries:
            raise ConfigError(f"Unknown {self.kind} '{name}'.{did_you_mean(str(name), self._entries)} "
                              f"Choose one of: {', '.join(self._entries)}.")
        return self._entries[name]
