"""Coupling two layouts whose segments differ but whose channels correspond.

The fast path (:meth:`ChannelAnalysis.couple`) merges groups whose segments line up one to one.
Attention with grouped KV heads needs more: a query head and the KV head it reads sit at the same
position of the head axis, but the query projection has ``heads`` blocks and the key projection
``kv_heads``. Here both layouts are expanded into *atoms* (for each channel, the whole group blocks
it belongs to), and the groups are merged when the atoms correspond one to one, or the finer group
is *rebased* onto the coarser one when each of its blocks maps to exactly one block of the other
(every query head follows its KV head). Rebasing rewrites the finer group's segments everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.analysis.channels.layout import Layout, Segment

if TYPE_CHECKING:
    from onnxprune.analysis.channels.graph import ChannelAnalysis

__all__ = ["couple_atoms", "rebase_layout"]

#: a channel's atom: (root group, first unit, end unit) rounded out to whole group blocks; None if fixed
Atom = tuple[int, int, int] | None
_MAX_CHANNELS = 1 << 16


def _atoms(a: ChannelAnalysis, layout: Layout) -> list[Atom]:
    out: list[Atom] = []
    for seg in layout.segments:
        if seg.group is None:
            out += [None] * seg.channels
            continue
        root = a.groups.find(seg.group)
        block = a.groups[root].block
        for c in range(seg.channels):
            lo = seg.start + (c // seg.size) * seg.per
            hi = lo + seg.per
            lo, hi = lo // block * block, -(-hi // block) * block
            out.append((root, lo, hi))
    return out


def _mapping(pairs: list[tuple[Atom, Atom]], source: int, target: int) -> dict[int, int] | None:
    """Block start of ``source`` -> block start of ``target`` if every source block maps to one target block."""
    found: dict[int, int] = {}
    for sa, sb in pairs:
        if sa is None or sb is None or sa[0] != source:
            continue
        if sb[0] != target or sa[2] - sa[1] != sb[2] - sb[1]:
            return None
        if found.setdefault(sa[1], sb[1]) != sb[1]:
            return None
    return found


def _rebase(
    a: ChannelAnalysis, source: int, target: int, starts: dict[int, int], size: int, extra: tuple[Layout, Layout]
) -> tuple[Layout, Layout] | None:
    """Rewrite every segment of group ``source`` in ``target``'s units (``starts``: block start map).

    Returns ``extra`` rewritten too, or None (nothing changed) if some layout cannot be rewritten.
    """
    units = a.groups[source].units
    if sorted(starts) != list(range(0, units, size)):
        return None  # some of source's units never meet target: they could not follow it
    unit_map = np.empty(units, dtype=np.int64)
    for lo, to in starts.items():
        unit_map[lo : lo + size] = np.arange(to, to + size)
    rewritten = {}
    for value, layout in a.layouts.items():
        new = rebase_layout(a, layout, source, target, unit_map)
        if new is None:
            return None
        if new is not layout:
            rewritten[value] = new
    done = tuple(rebase_layout(a, layout, source, target, unit_map) for layout in extra)
    if None in done:
        return None
    a.layouts.update(rewritten)
    a.groups.absorb(source, target)
    return done  # type: ignore[return-value]


def rebase_layout(a: ChannelAnalysis, layout: Layout, source: int, target: int, unit_map: np.ndarray) -> Layout | None:
    """``layout`` with the segments of group ``source`` expressed in ``target``'s units (None: impossible)."""
    if not any(a.groups.find(g) == source for g in layout.groups()):
        return layout
    segments: list[Segment] = []
    for seg in layout.segments:
        if seg.group is None or a.groups.find(seg.group) != source:
            segments.append(seg)
            continue
        mapped = unit_map[seg.start : seg.start + seg.units]
        breaks = np.flatnonzero(np.diff(mapped) != 1) + 1
        bounds = [0, *breaks.tolist(), seg.units]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if lo % seg.per or (hi - lo) % seg.per:
                return None
            segments.append(Segment(target, int(mapped[lo]), hi - lo, seg.size, seg.per))
    return Layout(layout.axis, layout.rank, tuple(segments))


def couple_atoms(a: ChannelAnalysis, first: Layout, other: Layout) -> Layout | None:
    """Merge or rebase the groups of two layouts whose channels correspond one to one.

    Returns ``first`` as it reads afterwards (a rebase rewrites segments), or None if they cannot couple.
    """
    if first.width != other.width or first.width > _MAX_CHANNELS:
        return None
    for _ in range(len(a.groups.roots()) + 1):
        pairs = list(zip(_atoms(a, first), _atoms(a, other), strict=True))
        link = None
        for sa, sb in pairs:
            if (sa is None) != (sb is None):
                return None
            if sa is not None and sb is not None:
                if sa[0] == sb[0] and sa[1:] != sb[1:]:
                    return None
                if sa[0] != sb[0]:
                    link = (sa[0], sb[0])
        if link is None:
            return first
        rewritten = _link(a, pairs, *link, (first, other))
        if rewritten is None:
            return None
        first, other = rewritten
    return None


def _link(
    a: ChannelAnalysis, pairs: list[tuple[Atom, Atom]], ra: int, rb: int, extra: tuple[Layout, Layout]
) -> tuple[Layout, Layout] | None:
    """Union ``ra`` and ``rb`` if their blocks correspond one to one, else rebase the finer onto the other.

    Returns ``extra`` brought up to date, or None if neither is possible.
    """
    forward = _mapping(pairs, ra, rb)
    backward = _mapping([(y, x) for x, y in pairs], rb, ra)
    ga, gb = a.groups[ra], a.groups[rb]
    if forward is not None and backward is not None and ga.units == gb.units:
        if all(k == v for k, v in forward.items()) and len(forward) * ga.block == ga.units:
            a.groups.union(ra, rb)
            return extra
    for source, target, mapping in ((ra, rb, forward), (rb, ra, backward)):
        sizes = _block_sizes(pairs, source)
        if mapping is None or len(sizes) != 1 or a.groups[source].units <= a.groups[target].units:
            continue
        done = _rebase(a, source, target, mapping, sizes.pop(), extra)
        if done is not None:
            return done
    return None


def _block_sizes(pairs: list[tuple[Atom, Atom]], root: int) -> set[int]:
    """The block sizes the atoms of ``root`` span."""
    return {x[2] - x[1] for pair in pairs for x in pair if x is not None and x[0] == root}
