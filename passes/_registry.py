"""Named registries: importances and allocators are registered objects, looked up by name.

Config validation, CLI choices and statistics requests all derive from a registry, so adding an
importance or an allocator is one registered entry, never an edit of if-chains across files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from onnxprune.errors import RecipeError

__all__ = ["Named", "Registry"]


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

    def register(self, entry: T) -> T:
        """Add ``entry``; a second entry of the same name is refused."""
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} '{entry.name}' is already registered")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError as e:
            raise RecipeError(f"{self.kind} must be one of {', '.join(self._entries)}; got '{name}'") from e

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def check(self, field: str, name: str) -> None:
        """Refuse a config value that names no entry (the message names ``field`` and the choices)."""
        if name not in self._entries:
            raise RecipeError(f"{field} must be one of {', '.join(self._entries)}; got '{name}'")
