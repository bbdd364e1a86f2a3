"""Latency tables: how each channel group's latency moves with its width, measured on the target EP.

Each group's subgraph (``_subgraph``: its producers, consumers and the ops between them) is cut out
of the model and timed at a handful of widths, all sessions interleaved run by run
(:func:`onnxprune.verify.measure_latencies`), so that a burst of load hits every width alike. Tables
are cached on disk, keyed by the model's content, the execution provider, the thread count, the
input shapes, onnxruntime's version, the CPU and the measurement settings: a second run reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _ort
from onnxprune._providers import resolve_ep
from onnxprune.analysis.channels import ChannelAnalysis
from onnxprune.analysis.sensitivity import cache_dir, model_digest
from onnxprune.errors import OnnxPruneError
from onnxprune.passes._subgraph import cut_group, feed_for, shrunk_to
from onnxprune.report import write_json
from onnxprune.verify import measure_latencies

__all__ = ["GroupLatency", "LatencySettings", "LatencyTable", "grid", "latency_table", "table_path"]

logger = logging.getLogger(__name__)
VERSION = 2
#: a progress callback: (groups measured, groups to measure)
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class LatencySettings:
    """How a latency table is measured.

    Attributes:
        ep: Execution provider (``cpu``, ``cuda``, ``tensorrt``).
        threads: onnxruntime intra-op threads (``None``: onnxruntime's default).
        points: Most widths measured per group (a grid of multiples of ``step`` times a power of two).
        step: Widths are multiples of this (``round_to``; the group's block always divides them).
        floor: Smallest width measured, as a fraction of the group.
        runs: Timed runs per width and round.
        rounds: Rounds of interleaved runs; a width's figure is the median of its rounds' medians.
        warmup: Untimed runs per width before each round.
        around: A kept fraction (the ``ratio`` asked for) whose neighbourhood is measured finely too: the
            wanted width rounded down and up to multiples of 8, 16, 32 and 64 (``None``: the grid only).
    """

    ep: str = "cpu"
    threads: int | None = None
    points: int = 16
    step: int = 1
    floor: float = 0.1
    runs: int = 10
    rounds: int = 3
    warmup: int = 2
    around: float | None = None


#: alignments measured around the wanted width (SIMD widths and channel blocks of CPU and GPU kernels)
ALIGNMENTS = (8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class GroupLatency:
    """Measured latency (ms) of one group's subgraph at each width (ascending; the last is the full width)."""

    producer: str
    units: int
    widths: tuple[int, ...]
    ms: tuple[float, ...]

    def at(self, width: int) -> float:
        """Latency at ``width`` (one of the table's widths)."""
        return self.ms[self.widths.index(width)]

    def saving(self, width: int) -> float:
        """Latency saved (ms) by keeping ``width`` units instead of all."""
        return self.ms[-1] - self.at(width)


@dataclasses.dataclass(frozen=True)
class LatencyTable:
    """Latency of every measured group, by producer name; ``skipped``: groups not measured, with the reason."""

    key: str
    settings: Mapping[str, Any]
    groups: Mapping[str, GroupLatency]
    skipped: Mapping[str, str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "key": self.key,
            "settings": dict(self.settings),
            "groups": [dataclasses.asdict(g) for g in self.groups.values()],
            "skipped": dict(self.skipped),
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        groups = {
            g["producer"]: GroupLatency(g["producer"], int(g["units"]), tuple(g["widths"]), tuple(g["ms"]))
            for g in data["groups"]
        }
        return cls(data["key"], data["settings"], groups, data["skipped"], float(data["seconds"]))


def grid(units: int, block: int, settings: LatencySettings) -> tuple[int, ...]:
    """The widths measured for a group, ascending, the full width last.

    Multiples of ``lcm(step, block)`` times the smallest power of two that leaves at most ``points``
    of them, from ``floor`` of the group up; with ``around``, also the wanted width's neighbours at
    each alignment of :data:`ALIGNMENTS` (and at ``lcm(step, block)``).
    """
    quantum = math.lcm(max(settings.step, 1), max(block, 1))
    while units // quantum > settings.points:
        quantum *= 2
    lowest = max(quantum, -(-math.ceil(settings.floor * units) // quantum) * quantum)
    widths = {*range(lowest, units, quantum), units}
    if settings.around is not None:
        base = math.lcm(max(settings.step, 1), max(block, 1))
        wanted = settings.around * units
        for align in (base, *(math.lcm(base, a) for a in ALIGNMENTS)):
            widths.update(w for w in (math.floor(wanted / align) * align, math.ceil(wanted / align) * align))
    return tuple(sorted(w for w in widths if 0 < w <= units))


def _machine() -> str:
    """The CPU (a table measured on another machine does not apply)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} x{os.cpu_count()}"


def _key(model: ir.Model, producers: Iterable[str], shapes: Mapping[str, tuple[int, ...]], s: LatencySettings) -> str:
    inputs = {name: list(shape) for name, shape in sorted(shapes.items())}
    parts = [dataclasses.asdict(s), inputs, sorted(producers), ort.__version__, _machine(), VERSION]
    return hashlib.sha256(f"{model_digest(model)} {json.dumps(parts, sort_keys=True)}".encode()).hexdigest()


def table_path(key: str, cache: str | os.PathLike | None = None) -> Path:
    """Where the table of ``key`` is cached (``cache``, else ``$ONNXPRUNE_CACHE``, else the user's cache)."""
    return cache_dir(cache) / "latency" / f"latency-{key[:32]}.json"


def _read(path: Path, key: str) -> LatencyTable | None:
    try:
        table = LatencyTable.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        if path.exists():
            logger.warning("ignoring unreadable latency table %s (%s)", path, e)
        return None
    return table if table.key == key else None


def _measure_group(
    model: ir.Model, analysis: ChannelAnalysis, gid: int, settings: LatencySettings, providers: list[str]
) -> GroupLatency:
    sub = cut_group(model, analysis, gid)
    widths = grid(sub.units, sub.block, settings)
    feed = feed_for(sub)
    sessions = [
        _ort.session(shrunk_to(sub, w), threads=settings.threads, providers=providers, what=f"subgraph at width {w}")
        for w in widths
    ]
    rounds = [measure_latencies(sessions, feed, settings.runs, settings.warmup) for _ in range(settings.rounds)]
    ms = tuple(statistics.median(r[i] for r in rounds) for i in range(len(widths)))
    return GroupLatency(sub.producer, sub.units, widths, ms)


def latency_table(
    model: ir.Model,
    analysis: ChannelAnalysis,
    gids: Iterable[int],
    settings: LatencySettings,
    *,
    shapes: Mapping[str, tuple[int, ...]],
    cache: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[LatencyTable, Path | None]:
    """The latency table of groups ``gids`` of ``analysis`` (read from the cache, or measured and cached).

    ``shapes`` are the model's input shapes the table is measured at. Returns the table and its cache
    file (``None`` when it could not be written). A group whose subgraph cannot be cut or run is
    skipped with the reason.
    """
    providers = list(resolve_ep(settings.ep).providers)
    gids = list(gids)
    producers = {gid: analysis.groups[gid].producers[0] for gid in gids}
    key = _key(model, producers.values(), shapes, settings)
    path = table_path(key, cache)
    found = _read(path, key)
    if found is not None:
        logger.info("latency table: read %s (%d groups)", path, len(found.groups))
        return found, path
    started = time.perf_counter()
    groups: dict[str, GroupLatency] = {}
    skipped: dict[str, str] = {}
    for done, gid in enumerate(gids):
        try:
            groups[producers[gid]] = _measure_group(model, analysis, gid, settings, providers)
        except (OnnxPruneError, ValueError, KeyError) as e:
            skipped[producers[gid]] = str(e).splitlines()[0] if str(e) else type(e).__name__
            logger.info("latency table: group of %s not measured (%s)", producers[gid], skipped[producers[gid]])
        if progress is not None:
            progress(done + 1, len(gids))
    settings_dict = {**dataclasses.asdict(settings), "shapes": {k: list(v) for k, v in shapes.items()}}
    table = LatencyTable(key, settings_dict, groups, skipped, time.perf_counter() - started)
    logger.info("latency table: %d groups measured in %.1f s", len(groups), table.seconds)
    try:
        write_json(table.to_dict(), path)
    except OSError as e:
        logger.warning("latency table not cached (%s: %s)", path, e)
        return table, None
    return table, path
