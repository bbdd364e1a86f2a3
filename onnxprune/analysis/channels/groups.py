"""Channel groups: units that must be removed together, merged with a union-find."""

from __future__ import annotations

import dataclasses
import math

__all__ = ["Blocker", "Group", "GroupSet"]


@dataclasses.dataclass(frozen=True)
class Blocker:
    """Why a group cannot be pruned: the node, its op and the rule that refused."""

    node: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} '{self.node}': {self.reason}"


@dataclasses.dataclass
class Group:
    """Units created by one producer (a Conv/Gemm/MatMul's output channels), plus what joined them.

    ``block`` is how many units must go together (whole conv groups, whole norm groups, attention
    heads); ``unit`` names such a block when it is one (``head``, ``KV group``).
    """

    id: int
    units: int
    producers: list[str]
    block: int = 1
    blockers: list[Blocker] = dataclasses.field(default_factory=list)
    unit: str = ""

    @property
    def prunable(self) -> bool:
        return not self.blockers

    def describe(self) -> str:
        """``12 heads × 32`` for named blocks, else the channel count."""
        if not self.unit or self.block <= 1:
            return str(self.units)
        return f"{self.units // self.block} {self.unit}s × {self.block}"


class GroupSet:
    """All groups of a graph; ``find`` resolves a group id to the group it was merged into."""

    def __init__(self) -> None:
        self._groups: dict[int, Group] = {}
        self._parent: dict[int, int] = {}

    def new(self, units: int, producer: str) -> int:
        gid = len(self._parent)
        self._parent[gid] = gid
        self._groups[gid] = Group(gid, units, [producer])
        return gid

    def find(self, gid: int) -> int:
        root = gid
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[gid] != root:
            self._parent[gid], gid = root, self._parent[gid]
        return root

    def __getitem__(self, gid: int) -> Group:
        return self._groups[self.find(gid)]

    def roots(self) -> list[Group]:
        """The merged groups, in creation order."""
        return [g for gid, g in self._groups.items() if self._parent[gid] == gid]

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        ga, gb = self._groups[ra], self._groups[rb]
        if ra > rb:
            ra, rb, ga, gb = rb, ra, gb, ga
        self._parent[rb] = ra
        ga.producers += [p for p in gb.producers if p not in ga.producers]
        ga.blockers += gb.blockers
        ga.block = math.lcm(ga.block, gb.block)
        ga.unit = ga.unit or gb.unit
        if ga.units % ga.block:
            ga.blockers.append(Blocker(ga.producers[0], "", f"blocks of {ga.block} units do not divide {ga.units}"))
        return ra

    def absorb(self, source: int, target: int) -> None:
        """``source``'s units now live in ``target`` (a rebase rewrote them): it joins ``target``'s root."""
        rs, rt = self.find(source), self.find(target)
        gs, gt = self._groups[rs], self._groups[rt]
        self._parent[rs] = rt
        gt.producers += [p for p in gs.producers if p not in gt.producers]
        gt.blockers += [b for b in gs.blockers if b not in gt.blockers]
        if gs.unit == "head" or gt.unit == "head":
            gt.unit = "KV group"  # each block now removes one key/value head with its query heads

    def coarsen(self, gid: int, factor: int, blocker: Blocker, unit: str = "") -> None:
        """Make ``factor`` units one block named ``unit`` (or block the group if that does not divide it)."""
        group = self[gid]
        group.block = math.lcm(group.block, factor)
        group.unit = group.unit or unit
        if group.units % group.block:
            group.blockers.append(blocker)

    def block(self, gid: int, blocker: Blocker) -> None:
        group = self[gid]
        if blocker not in group.blockers:
            group.blockers.append(blocker)
