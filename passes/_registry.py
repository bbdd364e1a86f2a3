"""Named registries: importances and allocators are registered objects, looked up by name.

Config validation, CLI choices and statistics requests all derive from a registry, so adding an
importance or an allocator is one registered entry, never an edit of if-chains across files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from onnxprune.errors import RecipeError

__all__ = ["Named", "Registry"]

logger = logging.getLogger(__name__)


class Named(Protocol):
    """What a registry holds: something with a ``name`` and a one-line ``description``."""

    name: str
    description: str


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Entries of one kind (``kind`` names it in errors), in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, tuple[str, bool]] = {}

    def register(self, entry: T) -> T:
        """Add ``entry``; a second entry of the same name is refused."""
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} '{entry.name}' is already registered")
        self._entries[entry.name] = entry
        return entry

    def alias(self, name: str, target: str, *, deprecated: bool = False) -> None:
        """Let ``name`` stand for the registered ``target`` (``deprecated``: old recipes' spelling, with a warning)."""
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        if target not in self._entries:
            raise ValueError(f"{self.kind} alias '{name}' names no entry ('{target}')")
        self._aliases[name] = (target, deprecated)

    def aliases(self, *, deprecated: bool = False) -> dict[str, str]:
        """Alias -> registered name (only the current ones, unless ``deprecated``)."""
        return {a: t for a, (t, old) in self._aliases.items() if deprecated or not old}

    def canonical(self, field: str, name: str) -> str:
        """The registered name ``name`` stands for; a deprecated alias logs a warning, an unknown name is refused."""
        if name in self._entries:
            return name
        if name in self._aliases:
            target, deprecated = self._aliases[name]
            if deprecated:
                logger.warning("%s '%s' is deprecated: it is now spelled '%s' (same meaning)", field, name, target)
            return target
        raise RecipeError(f"{field} must be one of {self._choices()}; got '{name}'")

    def _choices(self) -> str:
        return ", ".join((*self._entries, *self.aliases()))

    def __getitem__(self, name: str) -> T:
        key = self._aliases[name][0] if name in self._aliases else name
        try:
            return self._entries[key]
        except KeyError as e:
            raise RecipeError(f"{self.kind} must be one of {self._choices()}; got '{name}'") from e

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def names(self, *, aliases: bool = False) -> tuple[str, ...]:
        """Registered names, in registration order (then the current aliases, with ``aliases``)."""
        return (*self._entries, *self.aliases()) if aliases else tuple(self._entries)

    def check(self, field: str, name: str) -> None:
        """Refuse a config value that names no entry (the message names ``field`` and the choices)."""
        if name not in self:
            raise RecipeError(f"{field} must be one of {self._choices()}; got '{name}'")
