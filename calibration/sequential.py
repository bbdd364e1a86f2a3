"""Layer-sequential calibration: the statistics of block k come from the model with blocks < k changed.

Passes that fit weights to calibration data (Wanda, SparseGPT, the channel refit, activation-aware
low-rank) describe their work as :class:`Step` objects: the nodes whose weights a step changes and the
statistics it needs. :func:`plan_blocks` orders the steps topologically and groups consecutive ones
into blocks whose inputs do not depend on each other (Q/K/V projections reading one input, a residual
block's main and shortcut convs), within a memory budget for the block's statistics.
:func:`run_blocks` then collects each block's statistics on the model as it is now — earlier blocks
already pruned or refitted, as SparseGPT, Wanda and OBC do — hands them to the pass, and drops them
before the next block, so only one block's statistics are ever held.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune._memory import release_free_memory
from onnxprune.calibration.collect import ProgressFn, StatRequest, collect_stats
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.calibration.stats import ChannelStats

__all__ = ["BlockFn", "SequentialOptions", "Step", "each_step", "plan_blocks", "run_blocks"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SequentialOptions:
    """How statistics are collected for data-fitted passes.

    Attributes:
        sequential: Blocks in topological order, each calibrated on the model with the earlier blocks
            already changed; ``False`` (one-shot): every statistic from the unchanged model;
            ``None``: what each pass measured best (SparseGPT, the channel refit and low-rank:
            sequential; Wanda: one-shot).
        memory_mb: Budget for one block's statistics (Gram matrices) and one batch of activations.
    """

    sequential: bool | None = None
    memory_mb: int = 1024

    def resolve(self, preferred: bool) -> SequentialOptions:
        """These options with ``sequential`` decided (``preferred`` where it was left to the pass)."""
        return self if self.sequential is not None else dataclasses.replace(self, sequential=preferred)


@dataclasses.dataclass(frozen=True)
class Step:
    """One unit of sequential work.

    Attributes:
        key: A name for reports and logs (usually the weight's name).
        nodes: The nodes whose constants the step changes; values downstream of them change too.
        requests: The statistics the step needs.
        features: Gram width per request (0 for requests without a Gram), for the memory estimate.
    """

    key: str
    nodes: tuple[ir.Node, ...]
    requests: tuple[StatRequest, ...]
    features: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        """Estimated bytes of the step's statistics.

        8 bytes per Gram entry (float32 sums, plus the float64 copy a pass makes when it consumes
        them); one Gram, two when paired, three with the reference's own Gram.
        """
        total = 0
        for request, width in zip(self.requests, self.features, strict=False):
            total += width * width * 8 * (1 + request.paired + request.paired_gram)
        return total


#: Called with one block's steps and the statistics of their requests (keyed by request name). The
#: function owns the dict: it may pop entries once done with them (see :func:`each_step`), which frees
#: a block's large Grams before the next step's algebra needs the memory.
BlockFn = Callable[[Sequence[Step], dict[str, ChannelStats]], None]


def each_step(block: Sequence[Step], stats: dict[str, ChannelStats]) -> Iterator[tuple[Step, dict[str, ChannelStats]]]:
    """Each step of ``block`` with statistics it owns (it may change or free them).

    An entry is popped from ``stats`` for the last step that requests it; earlier steps sharing it
    get a copy of its arrays. Requests missing from ``stats`` are left out.
    """
    remaining = Counter(r.name for step in block for r in step.requests)
    for step in block:
        own: dict[str, ChannelStats] = {}
        for request in step.requests:
            remaining[request.name] -= 1
            if request.name not in stats:
                continue
            if remaining[request.name] == 0:
                own[request.name] = stats.pop(request.name)
            else:
                own[request.name] = _copied(stats[request.name])
        yield step, own


def _copied(entry: ChannelStats) -> ChannelStats:
    arrays = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
    return dataclasses.replace(
        entry,
        **{k: v.copy() for k, v in arrays.items() if isinstance(v, np.ndarray)},  # type: ignore[arg-type]
    )


def _downstream(nodes: Iterable[ir.Node]) -> set[str]:
    """Names of every value computed from the outputs of ``nodes`` (their outputs included)."""
    seen: set[str] = set()
    stack = [out for node in nodes for out in node.outputs]
    while stack:
        value = stack.pop()
        if value.name in seen:
            continue
        seen.add(value.name or "")
        for user, _ in value.uses():
            stack.extend(user.outputs)
    return seen


def plan_blocks(model: ir.Model, steps: Sequence[Step], options: SequentialOptions) -> list[list[Step]]:
    """Group ``steps`` into blocks, in topological order of the nodes they change.

    A step joins the current block unless a request of the same name but another kind is already
    in it, the block's statistics would exceed the memory budget (a block holds at least one step),
    or, in sequential mode, one of its inputs depends on a node the block changes.
    """
    if not steps:
        return []
    position = {id(node): i for i, node in enumerate(model.graph)}
    ordered = sorted(steps, key=lambda s: min((position.get(id(n), len(position)) for n in s.nodes), default=0))
    budget = (options.memory_mb << 20) * 3 // 4  # the rest is for one batch of activations
    blocks: list[list[Step]] = []
    block: list[Step] = []
    tainted: set[str] = set()
    requested: dict[str, StatRequest] = {}
    used = 0
    for step in ordered:
        depends = options.sequential and any(r.value in tainted for r in step.requests)
        conflicts = any(requested.get(r.name, r) != r for r in step.requests)
        if block and (depends or conflicts or used + step.nbytes > budget):
            blocks.append(block)
            block, tainted, requested, used = [], set(), {}, 0
        block.append(step)
        tainted |= _downstream(step.nodes)
        requested.update({r.name: r for r in step.requests})
        used += step.nbytes
    blocks.append(block)
    return blocks


def run_blocks(
    model: ir.Model,
    source: CalibrationSource,
    steps: Sequence[Step],
    process: BlockFn,
    *,
    options: SequentialOptions,
    batch_size: int = 32,
    threads: int | None = None,
    progress: ProgressFn | None = None,
    reference: ir.Model | None = None,
) -> int:
    """Collect each block's statistics and let ``process`` change ``model``.

    ``reference`` is the unchanged model (a clone sharing the tensors is enough: changed weights are
    replaced, never written in place). Sequential: statistics come from ``model`` as it is now, and
    ``paired`` requests also read ``reference``. One-shot: they come from ``reference``, so every block
    sees the unchanged model while only one block's statistics are held. Returns the number of blocks.
    """
    if not options.sequential and reference is None:
        raise ValueError("one-shot blocks need the unchanged model as reference")
    blocks = plan_blocks(model, steps, options)
    total = source.num_samples * len(blocks)
    for i, block in enumerate(blocks):

        def report(done: int, _total: int, offset: int = i * source.num_samples) -> None:
            if progress is not None:
                progress(offset + done, total)

        requests = [r for step in block for r in step.requests]
        stats = collect_stats(
            model if options.sequential else reference,  # type: ignore[arg-type]
            source,
            requests,
            batch_size=batch_size,
            threads=threads,
            progress=report,
            memory_mb=max(16, options.memory_mb // 4),
            reference=reference if options.sequential else None,
        )
        logger.debug("block %d/%d: %s", i + 1, len(blocks), ", ".join(s.key for s in block))
        release_free_memory()  # what the onnxruntime runs freed, before the block's algebra
        process(block, stats)
        del stats
        release_free_memory()
    if len(blocks) > 1:
        logger.info("calibrated %d steps in %d sequential blocks", len(steps), len(blocks))
    return len(blocks)
