"""Descriptions of config fields, read from the configs themselves: one source for ``--help`` and ``passes``.

A field's description is its ``metadata["help"]``, else its entry in the ``Attributes:`` section of
the config's docstring (or of a base class's: shared selection fields are documented once per
config). A field with a vocabulary (``metadata["choices"]``, a registry) also lists its words.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

__all__ = ["choices_text", "describe", "field_docs", "undocumented"]

_ENTRY = re.compile(r"^(\s+)([A-Za-z_][\w/]*):\s*(.*)$")


def _attributes(doc: str) -> dict[str, str]:
    """The ``Attributes:`` entries of a Google-style docstring (``a/b: text`` documents both)."""
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    entries: dict[str, list[str]] = {}
    indent: int | None = None
    names: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        match = _ENTRY.match(line)
        if indent is None and match:
            indent = depth
        if indent is None or depth < indent:
            break
        if depth == indent and match:
            names = match.group(2).split("/")
            for name in names:
                entries[name] = [match.group(3)]
        else:
            for name in names:
                entries[name].append(line.strip())
    return {name: " ".join(" ".join(parts).split()).replace("``", "") for name, parts in entries.items()}


@functools.cache
def field_docs(config_class: type) -> dict[str, str]:
    """Description of each field of ``config_class`` that has one."""
    docs: dict[str, str] = {}
    for cls in reversed(config_class.__mro__):
        docs.update(_attributes(cls.__doc__ or "") if cls.__doc__ and cls is not object else {})
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for name, field in fields.items():
        if field.metadata.get("help"):
            docs[name] = field.metadata["help"]
    return {name: docs[name] for name in fields if name in docs}


def choices_text(config_class: type, name: str) -> str:
    """``word: description; ...`` of a field's vocabulary (current aliases noted), or ``""``."""
    field = next((f for f in dataclasses.fields(config_class) if f.name == name), None)
    choices: Any = field.metadata.get("choices") if field else None
    if choices is None:
        return ""
    words = "; ".join(f"{w.name}: {w.description}" for w in choices)
    aliases = "; ".join(f"{a} = {t}" for a, t in choices.aliases().items())
    return words + (f" ({aliases})" if aliases else "")


def describe(config_class: type, name: str) -> str:
    """A field's description followed by its choices (``""`` when it has neither)."""
    text = field_docs(config_class).get(name, "")
    choices = choices_text(config_class, name)
    if choices:
        text = f"{text.rstrip('.')}. Choices: {choices}." if text else f"Choices: {choices}."
    return text


def undocumented(config_class: type) -> list[str]:
    """Fields of ``config_class`` without a description (a test keeps this empty)."""
    docs = field_docs(config_class)
    return [f.name for f in dataclasses.fields(config_class) if not docs.get(f.name)]
