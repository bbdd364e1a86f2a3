"""Plain functions shared by the ticket methods (Sup-tickets, FreeTickets): mask exploration and averaging.

* :func:`prune_and_regrow`: per tensor, drop a fraction of the active weights (smallest magnitude) and
  regrow as many inactive ones (largest gradient magnitude, RigL's growth; random without a gradient),
  at zero -- each tensor keeps its density.
* :func:`caa` / :func:`cima`: Sup-tickets' cumulative average and exponential moving average of tickets.
* :func:`snapshot` / :func:`triangular_lr` / :func:`explore_lr`: a ticket's values, and the learning rates.

Imported by the method modules only when a run starts (it imports torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from onnxprune.passes._schedules import learning_rate
from onnxprune.passes._train import Masks, TrainSettings
from onnxprune.torchview import TorchView

__all__ = ["caa", "cima", "explore_lr", "keep_largest", "prune_and_regrow", "snapshot", "triangular_lr"]

Values = dict[str, torch.Tensor]


def prune_and_regrow(masks: Masks, fraction: float, generator: torch.Generator) -> int:
    """Move ``fraction`` of each tensor's active weights to inactive positions; return how many moved.

    Dropped: the smallest-magnitude active weights (zeroed). Grown: the inactive weights (before the
    drop) with the largest gradient magnitude (``param.grad``; random when there is none), starting at 0.
    """
    moved = 0
    with torch.no_grad():
        for name, param in masks.params.items():
            keep = masks.keep[name].reshape(-1).clone()
            active = int(keep.sum())
            count = min(int(fraction * active), keep.numel() - active)
            if count <= 0:
                continue
            magnitude = param.detach().abs().reshape(-1).masked_fill(~keep, math.inf)
            drop = torch.topk(magnitude, count, largest=False).indices
            grad = param.grad
            score = (
                grad.detach().abs().reshape(-1).clone()
                if grad is not None
                else torch.rand(keep.numel(), generator=generator)
            )
            grow = torch.topk(score.masked_fill(keep, -math.inf), count).indices
            keep[drop] = False
            keep[grow] = True
            masks.keep[name] = keep.reshape(param.shape)
            param.view(-1)[grow] = 0.0
            moved += count
    masks.apply()
    return moved


def keep_largest(masks: Masks, counts: Mapping[str, int]) -> None:
    """Per tensor, keep only the ``counts[name]`` largest-magnitude weights (the others pruned, zeroed)."""
    for name, param in masks.params.items():
        scores = param.detach().abs().reshape(-1).masked_fill(~masks.keep[name].reshape(-1), -1.0)
        keep = torch.zeros(scores.numel(), dtype=torch.bool)
        keep[torch.topk(scores, min(counts[name], scores.numel())).indices] = True
        masks.keep[name] = keep.reshape(param.shape) & masks.keep[name]
    masks.apply()


def snapshot(view: TorchView, masks: Masks) -> Values:
    """A ticket: copies of the trainable tensors and the masked weights."""
    tensors = {name: p for name, p in view.named_tensors().items() if p.requires_grad}
    return {name: p.detach().clone() for name, p in {**tensors, **masks.params}.items()}


def caa(average: Mapping[str, torch.Tensor] | None, ticket: Mapping[str, torch.Tensor], count: int) -> Values:
    """Cumulative average after ``count`` earlier tickets: ``avg + (ticket - avg) / (count + 1)``."""
    if average is None or count == 0:
        return {name: value.clone() for name, value in ticket.items()}
    return {name: average[name] + (value - average[name]) / (count + 1) for name, value in ticket.items()}


def cima(average: Mapping[str, torch.Tensor] | None, ticket: Mapping[str, torch.Tensor], factor: float) -> Values:
    """Exponential moving average: ``(1 - factor) * avg + factor * ticket`` (the first ticket as it is)."""
    if average is None:
        return {name: value.clone() for name, value in ticket.items()}
    return {name: (1 - factor) * average[name] + factor * value for name, value in ticket.items()}


def triangular_lr(low: float, high: float, within: int, length: int) -> float:
    """Sup-tickets' cyclic rate: ``low`` at a cycle's start and end, ``high`` at its middle (linear)."""
    t = within / max(length, 1)
    return low * (1 - 2 * t) + high * 2 * t if t < 0.5 else low * (2 * t - 1) + high * (2 - 2 * t)


def explore_lr(settings: TrainSettings, step: int, length: int) -> float:
    """The run's own schedule squeezed into the first ``length`` steps (the part before the tickets)."""
    return learning_rate(
        settings.schedule,
        settings.lr,
        step,
        max(length, 1),
        sparsity=0.0,
        silo_alpha=settings.silo_alpha,
        silo_beta=settings.silo_beta,
    )
