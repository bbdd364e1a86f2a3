"""The registry of seed-method reproductions run by ``bench/bench_seeds.py``.

Each reproduction lives in a ``bench/_seeds_<family>.py`` module and registers itself with
:func:`claim`: a key (``M23-rigl``), the METHODS.md id, the method's name, the paper's claim in one
sentence, and a function returning a :class:`Outcome` -- what we measured, a verdict, the table rows
and the command that reproduces it. ``bench_seeds.py`` stores each outcome as
``bench/results/seeds/<key>.json`` and renders every stored outcome into ``bench/results/seeds.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["CLAIMS", "VERDICTS", "Claim", "Outcome", "claim"]

#: ``reproduced``: the paper's direction/magnitude holds at small scale; ``partly``: some of it;
#: ``not reproduced``: it does not, with the numbers; ``n/a``: a metric or tool with no claim to test.
VERDICTS = ("reproduced", "partly", "not reproduced", "n/a")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one reproduction measured.

    Attributes:
        measured: One or two sentences with the figures, beside the paper's claim.
        verdict: One of :data:`VERDICTS`.
        rows: Table rows (same keys in every row), e.g. one per method or sparsity.
        notes: Setting and caveats (model, data split, steps, what differs from the paper).
    """

    measured: str
    verdict: str
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A registered reproduction: ``run(quick)`` returns its :class:`Outcome` (``quick``: a smoke-sized run)."""

    key: str
    method: str
    name: str
    paper_claim: str
    run: Callable[[bool], Outcome]

    @property
    def command(self) -> str:
        return f"python bench/bench_seeds.py --only {self.key}"


CLAIMS: dict[str, Claim] = {}


RunFn = Callable[[bool], Outcome]


def claim(key: str, method: str, name: str, paper_claim: str) -> Callable[[RunFn], RunFn]:
    """Register the decorated ``run(quick: bool) -> Outcome`` under ``key``."""

    def register(run: RunFn) -> RunFn:
        if key in CLAIMS:
            raise ValueError(f"claim {key} is registered twice")
        CLAIMS[key] = Claim(key, method, name, paper_claim, run)
        return run

    return register
