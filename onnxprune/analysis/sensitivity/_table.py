"""The sensitivity table: per unit and ratio, the model's output error and task metric; JSON, CSV, plot, cache."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.report import write_json

__all__ = ["Point", "Table", "Unit", "cache_dir", "digest", "write_csv", "write_plot", "write_table_json"]

logger = logging.getLogger(__name__)
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Point:
    """One measurement: the ratio (sparsity, channel fraction or rank fraction removed), error, metric."""

    ratio: float
    error: float
    metric: float | None


@dataclasses.dataclass(frozen=True)
class Unit:
    """A measured unit and its curve (ratios ascending; ratio 0 is the dense model, error 0)."""

    kind: str
    name: str
    nodes: tuple[str, ...]
    size: int
    points: tuple[Point, ...]

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Ratios and errors with the dense point (0, 0) first."""
        ratios = [0.0] + [p.ratio for p in self.points if p.ratio > 0]
        errors = [0.0] + [p.error for p in self.points if p.ratio > 0]
        return np.asarray(ratios), np.asarray(errors)


@dataclasses.dataclass(frozen=True)
class Table:
    """Result of an analysis.

    Attributes:
        key: The cache key (model content, data and settings).
        settings: What was measured (kinds, grid, methods, samples).
        metric_name: ``top1`` (labels in ``--data``) or ``agreement`` (argmax agreement with the dense model).
        dense_metric: The dense model's metric (1.0 for agreement).
        units: Every measured unit.
        seconds: Time the measurement took.
    """

    key: str
    settings: Mapping[str, Any]
    metric_name: str
    dense_metric: float | None
    units: tuple[Unit, ...]
    seconds: float

    def of_kind(self, kind: str) -> list[Unit]:
        return [u for u in self.units if u.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        units = tuple(
            Unit(u["kind"], u["name"], tuple(u["nodes"]), int(u["size"]), tuple(Point(**p) for p in u["points"]))
            for u in data["units"]
        )
        return cls(data["key"], data["settings"], data["metric_name"], data["dense_metric"], units, data["seconds"])

    def rows(self) -> Iterable[dict[str, Any]]:
        """One row per unit and ratio."""
        for u in self.units:
            for p in u.points:
                yield {
                    "kind": u.kind,
                    "unit": u.name,
                    "nodes": " ".join(u.nodes),
                    "size": u.size,
                    "ratio": p.ratio,
                    "error": p.error,
                    self.metric_name: p.metric,
                }


def cache_dir(given: str | os.PathLike | None = None) -> Path:
    """Where tables are cached: ``given``, $ONNXPRUNE_CACHE, ``$XDG_CACHE_HOME/onnxprune``, ``~/.cache/onnxprune``."""
    if given is not None:
        return Path(given)
    env = os.environ.get("ONNXPRUNE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "onnxprune"


def digest(parts: Iterable[bytes | str]) -> str:
    """SHA-256 of the parts, in order."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()


def _atomic_text(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table_json(table: Table, path: Path) -> Path:
    """The whole table as JSON (atomic)."""
    return write_json(table.to_dict(), path)


def write_csv(table: Table, path: Path) -> Path:
    """One row per unit and ratio (atomic)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["kind", "unit", "nodes", "size", "ratio", "error", table.metric_name])
    writer.writeheader()
    writer.writerows(table.rows())
    return _atomic_text(buffer.getvalue(), path)


def write_plot(table: Table, path: Path) -> Path | None:
    """Error curves per kind (log scale), one line per unit; ``None`` (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'onnxprune[plot]'): no plot written")
        return None
    kinds = list(dict.fromkeys(u.kind for u in table.units))
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(5 * max(len(kinds), 1), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=False):
        units = table.of_kind(kind)
        for unit in units:
            ratios, errors = unit.curve()
            ax.plot(ratios[1:], errors[1:], marker="o", linewidth=1, markersize=3, label=unit.name)
        if len(units) <= 12:
            ax.legend(fontsize=6)
        ax.set_yscale("log")
        ax.set_title(f"{kind} ({len(units)} units)")
        ax.set_xlabel("rank fraction removed" if kind == "lowrank" else "fraction removed")
        ax.set_ylabel("relative output error")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
