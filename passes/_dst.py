"""Mask helpers shared by the dynamic-sparse-training methods (RigL/SET, GaP, SCL).

Plain torch functions on boolean masks and weight tensors: keep the largest scores, drop-and-grow,
hide the gradients of masked weights from the optimizer, prune each tensor to a per-tensor density.
Imported only by the method modules, inside the fine-tuning pass (torch is there).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from onnxprune.passes._erk import erk_densities
from onnxprune.passes._train import Masks
from onnxprune.torchview import TorchView

__all__ = [
    "drop_and_grow",
    "erk_keep_counts",
    "hide_masked_gradients",
    "largest",
    "prune_tensors_to",
    "skip_optimizer_step",
    "uniform_keep_counts",
]


def largest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask (shape of ``scores``) of the ``count`` largest entries; ties go to the lower flat index."""
    flat = scores.reshape(-1)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    count = max(0, min(int(count), flat.numel()))
    if count:
        chosen[torch.argsort(flat, descending=True, stable=True)[:count]] = True
    return chosen.reshape(scores.shape)


def drop_and_grow(weight: torch.Tensor, grow_score: torch.Tensor, keep: torch.Tensor, count: int) -> torch.Tensor:
    """RigL's mask update of one tensor: the new mask, with as many active weights as ``keep``.

    Of the active weights the ``count`` smallest-magnitude ones are dropped; then the ``count``
    entries with the largest ``grow_score`` among all not kept (a weight just dropped included, as in
    ``rigl/sparse_optimizers.py``) are grown.
    """
    active = int(keep.sum())
    count = max(0, min(int(count), active))
    magnitude = weight.detach().abs().masked_fill(~keep, -float("inf"))
    kept = largest(magnitude, active - count)
    grown = largest(grow_score.masked_fill(kept, -float("inf")), count)
    return kept | grown


def hide_masked_gradients(masks: Masks) -> None:
    """Zero the gradient of every masked-out weight (the gradient of w ⊙ mask w.r.t. w).

    The optimizer state of a weight that is grown later then starts from nothing.
    """
    for name, param in masks.params.items():
        if param.grad is not None:
            param.grad.mul_(masks.keep[name])


def skip_optimizer_step(view: TorchView) -> None:
    """Drop every gradient: the optimizer skips this step (RigL applies no gradient at a mask update)."""
    for param in view.named_tensors().values():
        param.grad = None


def uniform_keep_counts(masks: Masks, sparsity: float | None) -> dict[str, int]:
    """Active weights per tensor: ``(1 - sparsity)`` of each (``None``: as many as it has now)."""
    if sparsity is None:
        return {name: int(keep.sum()) for name, keep in masks.keep.items()}
    return {name: round((1 - sparsity) * keep.numel()) for name, keep in masks.keep.items()}


def erk_keep_counts(masks: Masks, sparsity: float, power: float = 1.0) -> dict[str, int]:
    """Active weights per tensor under the ERK allocation of overall ``sparsity`` (at least one each)."""
    densities = erk_densities({name: tuple(k.shape) for name, k in masks.keep.items()}, sparsity, power)
    return {name: max(1, round(densities[name] * k.numel())) for name, k in masks.keep.items()}


def prune_tensors_to(masks: Masks, counts: Mapping[str, int]) -> None:
    """Magnitude-prune each tensor in ``counts`` to at most that many active weights (none regrown), then apply."""
    for name, count in counts.items():
        keep = masks.keep[name]
        if int(keep.sum()) > count:
            scores = masks.params[name].detach().abs().masked_fill(~keep, -float("inf"))
            masks.keep[name] = largest(scores, count)
    masks.apply()
