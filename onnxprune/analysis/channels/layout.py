"""Where a channel group's units sit along one axis of a value: an ordered list of segments."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["Layout", "Segment", "fixed"]


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of channels along the axis.

    With ``group`` set, the run holds units ``start .. start+units`` of that group: every ``per``
    consecutive units are ``size`` contiguous channels (``per`` > 1 where channels are coarser than
    units: an attention-head axis, one channel per ``head_dim`` units). With ``group`` None the
    ``units`` channels are fixed (they belong to no prunable group, ``size`` and ``per`` are 1).
    """

    group: int | None
    start: int
    units: int
    size: int = 1
    per: int = 1

    @property
    def channels(self) -> int:
        return self.units // self.per * self.size

    def scaled(self, factor: int, divide: int = 1) -> Segment:
        """The same units with ``factor / divide`` times as many channels each (reduced to lowest terms)."""
        if self.group is None:
            return Segment(None, 0, self.units * factor // divide)
        size, per = self.size * factor, self.per * divide
        common = math.gcd(size, per)
        return Segment(self.group, self.start, self.units, size // common, per // common)


def fixed(channels: int) -> Segment:
    """A segment of channels that no group owns."""
    return Segment(None, 0, channels)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The segments along axis ``axis`` of a value of rank ``rank``."""

    axis: int
    rank: int
    segments: tuple[Segment, ...]

    @property
    def width(self) -> int:
        return sum(s.channels for s in self.segments)

    def groups(self) -> Iterator[int]:
        """The (unresolved) group ids appearing in the layout."""
        return (s.group for s in self.segments if s.group is not None)

    def moved(self, axis: int, rank: int | None = None) -> Layout:
        """The same segments on another axis (and rank)."""
        return Layout(axis, self.rank if rank is None else rank, self.segments)

    def scaled(self, factor: int, divide: int = 1) -> Layout:
        """Every unit ``factor / divide`` times as wide (a merge of the axes behind, or a split off them)."""
        return Layout(self.axis, self.rank, tuple(s.scaled(factor, divide) for s in self.segments))

    def cut(self, begin: int, end: int) -> tuple[Segment, ...] | None:
        """The segments covering channels ``begin .. end``; None if a cut falls inside a unit."""
        out: list[Segment] = []
        pos = 0
        for seg in self.segments:
            lo, hi = max(begin, pos), min(end, pos + seg.channels)
            if lo < hi:
                if seg.group is None:
                    out.append(fixed(hi - lo))
                else:
                    if (lo - pos) % seg.size or (hi - pos) % seg.size:
                        return None
                    first = seg.start + (lo - pos) // seg.size * seg.per
                    out.append(Segment(seg.group, first, (hi - lo) // seg.size * seg.per, seg.size, seg.per))
            pos += seg.channels
        return tuple(out)

    def positions(self, kept_units: Callable[[int], np.ndarray | None]) -> np.ndarray:
        """Channel positions kept, given each group's kept units (None: all kept)."""
        parts: list[np.ndarray] = []
        pos = 0
        for seg in self.segments:
            units = None if seg.group is None else kept_units(seg.group)
            if units is None:
                parts.append(np.arange(pos, pos + seg.channels))
            else:
                inside = units[(units >= seg.start) & (units < seg.start + seg.units)] - seg.start
                blocks = np.unique(inside // seg.per) if seg.per > 1 else inside
                chans = pos + blocks[:, None] * seg.size + np.arange(seg.size)[None, :]
                parts.append(chans.ravel())
            pos += seg.channels
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
