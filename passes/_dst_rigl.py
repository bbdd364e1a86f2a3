"""RigL / SET inside fine-tuning: drop the smallest active weights, regrow as many, counts fixed per tensor.

Every ``update_every`` steps before ``end`` of the run (never at step 0), each tensor drops
⌊f(t)·active⌋ of its active weights by magnitude and grows as many of the others by |dense gradient|
(RigL) or at random (SET); a newly grown weight starts at 0. The optimizer takes no step at an
update (as in ``rigl/sparse_optimizers.py``); at the other steps the gradients of masked weights are
hidden from it (the gradient of w ⊙ mask), so a grown weight starts with a clean optimizer state.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from onnxprune.passes._dst import (
    drop_and_grow,
    erk_keep_counts,
    hide_masked_gradients,
    prune_tensors_to,
    skip_optimizer_step,
)
from onnxprune.passes._dst_methods import RigLOptions
from onnxprune.passes._sparse_methods import MethodRun, StepState
from onnxprune.passes._train import Masks, TrainSettings

__all__ = ["RigLRun", "drop_fraction_at", "update_steps"]


def drop_fraction_at(options: RigLOptions, step: int, end_step: int) -> float:
    """f(t): ``drop_fraction`` (``constant``) or its cosine decay to 0 at ``end_step``."""
    if options.decay == "constant":
        return options.drop_fraction
    return options.drop_fraction * 0.5 * (1 + math.cos(math.pi * min(step, end_step) / max(end_step, 1)))


def update_steps(options: RigLOptions, steps: int) -> list[int]:
    """The steps at which the masks are updated: multiples of ``update_every`` in (0, end·steps)."""
    end_step = int(options.end * steps)
    return list(range(options.update_every, end_step, options.update_every))


class RigLRun(MethodRun):
    """One RigL/SET run; ``summary()`` lists each update's regrown connections and mask change."""

    def __init__(self, options: RigLOptions, settings: TrainSettings, masks: Masks) -> None:
        self.options, self.masks = options, masks
        self.end_step = int(options.end * settings.steps)
        self.updates = set(update_steps(options, settings.steps))
        self.history: list[dict[str, Any]] = []
        self.erk: dict[str, int] = {}
        self.pending = options.sparsity is not None

    def settled_at(self, steps: int) -> int:
        last = max(self.updates, default=-1) + 1
        return max(last, 1 if self.pending else 0)

    def before_step(self, state: StepState) -> None:
        if self.pending:
            self.erk = erk_keep_counts(self.masks, self.options.sparsity or 0.0, self.options.erk_power)
            prune_tensors_to(self.masks, self.erk)
            self.pending = False

    def after_backward(self, state: StepState) -> None:
        if state.step not in self.updates:
            hide_masked_gradients(self.masks)
            return
        fraction = drop_fraction_at(self.options, state.step, self.end_step)
        regrown = active = 0
        with torch.no_grad():
            for name, param in self.masks.params.items():
                keep = self.masks.keep[name]
                count = int(fraction * int(keep.sum()))
                if self.options.grow == "gradient":
                    if param.grad is None:
                        continue  # a tensor that does not train keeps its mask
                    score = param.grad.abs()
                else:
                    score = torch.rand(keep.shape, generator=state.generator)
                new = drop_and_grow(param, score, keep, count)
                grown = new & ~keep
                param.masked_fill_(grown, 0.0)  # init: zeros
                self.masks.keep[name] = new
                regrown += int(grown.sum())
                active += int(keep.sum())
        self.masks.apply()
        skip_optimizer_step(state.view)
        self.history.append(
            {
                "step": state.step,
                "drop_fraction": round(fraction, 6),
                "regrown": regrown,
                "mask_change": regrown / max(active, 1),
            }
        )

    def summary(self) -> dict[str, Any]:
        return {
            "updates": len(self.history),
            "regrown": sum(h["regrown"] for h in self.history),
            "mask_change_mean": (sum(h["mask_change"] for h in self.history) / len(self.history))
            if self.history
            else 0.0,
            "per_update": self.history,
            "erk_keep": self.erk,
        }
