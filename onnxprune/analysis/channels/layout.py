"""Where a channel group's units sit along one axis of a value: an ordered list of segments."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["Layout", "Segment", "fixed"]


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of channels along the axis.

    With ``group`` set, the run holds units ``start .. start+units`` of that group, ``size``
    contiguous channels per unit. With ``group`` None the ``units`` channels are fixed (they belong
    to no prunable group, ``size`` is 1).
    """

    group: int | None
    start: int
    units: int
    size: int = 1

    @property
    def channels(self) -> int:
        return self.units * self.size

    def scaled(self, factor: int) -> Segment:
        """The same units with ``factor`` times as many channels each."""
        if self.group is None:
            return Segment(None, 0, self.units * factor)
        return Segment(self.group, self.start, self.units, self.size * factor)


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

    def scaled(self, factor: int) -> Layout:
        """Every unit ``factor`` times wider (flatten of the axes behind the channel axis)."""
        return Layout(self.axis, self.rank, tuple(s.scaled(factor) for s in self.segments))

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
                    first = seg.start + (lo - pos) // seg.size
                    out.append(Segment(seg.group, first, (hi - lo) // seg.size, seg.size))
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
                chans = pos + inside[:, None] * seg.size + np.arange(seg.size)[None, :]
                parts.append(chans.ravel())
            pos += seg.channels
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
