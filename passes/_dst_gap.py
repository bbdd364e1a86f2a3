"""GaP (sequential) inside fine-tuning: grow one part of the tensors to dense, train, prune it back.

The prunable tensors are split into K parts (cyclic or seeded-random assignment). Phase p starts by
making every weight of part p mod K active (a grown weight starts at 0) and ends, ``steps_per_phase``
steps later, by magnitude-pruning that part back to each tensor's target count. After the last phase
(or at the last step of the run, whichever comes first) every tensor is at its target: the model
is fully sparse and the remaining steps fine-tune it so. Gradients of masked weights are hidden
from the optimizer, so a grown weight starts with a clean optimizer state.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from onnxprune.passes._dst import hide_masked_gradients, prune_tensors_to, uniform_keep_counts
from onnxprune.passes._dst_methods import GaPOptions
from onnxprune.passes._sparse_methods import MethodRun, StepState
from onnxprune.passes._train import Masks, TrainSettings

__all__ = ["GaPRun", "partition_tensors", "phase_length"]

logger = logging.getLogger(__name__)


def partition_tensors(names: list[str], parts: int, how: str, seed: int) -> list[list[str]]:
    """``names`` in ``min(parts, len(names))`` non-empty parts: tensor i to part i mod K.

    ``random`` shuffles the names first (seeded).
    """
    order = list(names)
    if how == "random":
        generator = torch.Generator().manual_seed(seed)
        order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
    count = max(1, min(parts, len(order)))
    return [order[k::count] for k in range(count)]


def phase_length(options: GaPOptions, parts: int, steps: int) -> int:
    """Steps per phase: ``steps_per_phase``, or the run split into cycles·K + 1 equal phases (at least 1)."""
    if options.steps_per_phase is not None:
        return options.steps_per_phase
    return max(1, steps // (options.cycles * parts + 1))


class GaPRun(MethodRun):
    """One GaP run; ``summary()`` lists each phase's part, steps and sparsity after pruning back."""

    def __init__(self, options: GaPOptions, settings: TrainSettings, masks: Masks) -> None:
        self.options, self.masks, self.steps = options, masks, settings.steps
        self.parts = partition_tensors(list(masks.params), options.partitions, options.partition, settings.seed)
        if len(self.parts) < options.partitions:
            logger.info(
                "gap: %d tensors, so %d parts instead of %d", len(masks.params), len(self.parts), options.partitions
            )
        self.length = phase_length(options, len(self.parts), settings.steps)
        self.phases = options.cycles * len(self.parts) if masks.params else 0
        self.targets: dict[str, int] = {}
        self.grown: int | None = None  # the phase whose part is dense now
        self.history: list[dict[str, Any]] = []

    def settled_at(self, steps: int) -> int:
        return min(self.phases * self.length, steps)

    def before_step(self, state: StepState) -> None:
        if not self.targets:
            self.targets = uniform_keep_counts(self.masks, self.options.sparsity)
            prune_tensors_to(self.masks, self.targets)
        phase, within = divmod(state.step, self.length)
        if within or phase >= self.phases:
            return
        self.grown = phase
        part = self.parts[phase % len(self.parts)]
        with torch.no_grad():
            for name in part:
                self.masks.keep[name] = torch.ones_like(self.masks.keep[name])  # grown weights are 0 already
        self.history.append(
            {"phase": phase, "part": phase % len(self.parts), "tensors": len(part), "start": state.step}
        )

    def after_backward(self, state: StepState) -> None:
        hide_masked_gradients(self.masks)

    def after_step(self, state: StepState) -> None:
        if self.grown is None:
            return
        ends = (self.grown + 1) * self.length - 1
        if state.step < ends and state.step < state.steps - 1:
            return
        part = self.parts[self.grown % len(self.parts)]
        prune_tensors_to(self.masks, {name: self.targets[name] for name in part})
        self.history[-1].update(end=state.step + 1, sparsity_after=self.masks.sparsity)
        self.grown = None

    def summary(self) -> dict[str, Any]:
        grown = sorted({h["part"] for h in self.history})
        return {
            "parts": [len(p) for p in self.parts],
            "steps_per_phase": self.length,
            "phases": self.history,
            "parts_grown": grown,
            "every_part_grown": grown == list(range(len(self.parts))),
        }
