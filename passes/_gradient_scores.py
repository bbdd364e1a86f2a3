"""Gradient weight importances through the torch view: SNIP, GraSP and DRIVE.

All three take the loss ``L`` = cross-entropy of the model's first output (logits ``[N, C]``, divided by
the importance's ``temperature``) against labels, averaged over the scoring samples; ``g = ∇L`` over
the pruned weights, ``Hg`` the Hessian-gradient product by double backprop (``∇(g_detached · ∇L)``).
Scores are returned non-negative, "prune the lowest":

* ``snip`` (Lee et al., 2019; M18): ``|θ ⊙ g|`` (connection sensitivity).
* ``grasp`` (Wang et al., 2020; M18): the paper scores ``S = −θ ⊙ Hg`` and removes the *largest*
  (the weights whose removal reduces the gradient flow least); returned as ``max(S) − S`` over all
  scored weights, so removing the lowest is the paper's rule (globally and per tensor). Temperature
  200 as in the official code.
* ``drive`` (M8; the score is reconstructed, METHODS.md marks it unverified): ``|θ| ⊙ (|g| + |∇‖g‖²|/2)``
  = ``|θ| ⊙ (|g| + |Hg|)`` since ``∇‖g‖² = 2Hg``: magnitude × (connection sensitivity + sensitivity
  of the gradient norm, the "convergence sensitivity").

Labels are needed: distilling the model against itself has zero gradient. torch is imported inside
the functions, so ``import onnxprune.passes`` works without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from onnxprune.passes._scores import WEIGHT_IMPORTANCES, WeightImportance

__all__ = ["GradientImportance", "gradient_scores"]


@dataclasses.dataclass(frozen=True)
class GradientImportance(WeightImportance):
    """A gradient importance scored through the torch view (the ``gradient`` pass implements it).

    Attributes:
        hessian: Needs the Hessian-gradient product ``Hg`` (double backprop).
        temperature: Default softmax temperature of the loss (GraSP: 200).
        remove_largest: The paper removes the largest scores (GraSP); they are returned as
            ``max − S`` over all scored tensors, so that the lowest are removed.
    """

    name: str = "snip"
    description: str = "|w·g|, connection sensitivity (SNIP); needs torch, calibration data and labels"
    needs_data: bool = True
    method: str = "gradient"
    hessian: bool = False
    temperature: float = 1.0
    remove_largest: bool = False

    def combine(self, theta: Any, grad: Any, hg: Any) -> Any:
        """The score from the weights ``θ``, the gradient ``g`` and ``Hg`` (torch tensors; ``hg`` may be None)."""
        return (theta * grad).abs()


@dataclasses.dataclass(frozen=True)
class GraSP(GradientImportance):
    """GraSP: −θ⊙Hg, the largest removed (returned as max − S, the lowest removed)."""

    name: str = "grasp"
    description: str = "-w·Hg, gradient-signal preservation (GraSP, T=200); needs torch, calibration data and labels"
    hessian: bool = True
    temperature: float = 200.0
    remove_largest: bool = True

    def combine(self, theta: Any, grad: Any, hg: Any) -> Any:
        return -theta * hg


@dataclasses.dataclass(frozen=True)
class Drive(GradientImportance):
    """DRIVE's dual-gradient score |θ|·(|g| + |∇‖g‖²|/2) = |θ|·(|g| + |Hg|)."""

    name: str = "drive"
    description: str = "|w|·(|g| + |Hg|), dual gradient (DRIVE); needs torch, calibration data and labels"
    hessian: bool = True

    def combine(self, theta: Any, grad: Any, hg: Any) -> Any:
        return theta.abs() * (grad.abs() + hg.abs())


WEIGHT_IMPORTANCES.register(GradientImportance())
WEIGHT_IMPORTANCES.register(GraSP())
WEIGHT_IMPORTANCES.register(Drive())


def _loss(view: Any, feed: Mapping[str, Any], labels: Any, temperature: float, total: int) -> Any:
    import torch

    logits = next(iter(view(**feed).values()))
    return torch.nn.functional.cross_entropy(logits / temperature, labels, reduction="sum") / total


def gradient_scores(
    view: Any,
    names: Sequence[str],
    batches: Sequence[tuple[Mapping[str, np.ndarray], np.ndarray]],
    importance: GradientImportance,
    temperature: float | None = None,
) -> dict[str, np.ndarray]:
    """Scores of the view's tensors ``names`` on ``batches`` of (inputs, labels), by ``importance``.

    The view's current values are scored (pruned weights already zero). Every tensor of the view
    other than ``names`` is held constant.
    """
    import torch

    t = importance.temperature if temperature is None else temperature
    total = sum(len(labels) for _, labels in batches)
    params = [view.parameter(name) for name in names]
    for param in view.named_tensors().values():
        param.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    feeds = [({k: torch.from_numpy(np.asarray(v)) for k, v in x.items()}, torch.from_numpy(y)) for x, y in batches]
    grads = [torch.zeros_like(p) for p in params]
    for feed, labels in feeds:
        for acc, part in zip(grads, torch.autograd.grad(_loss(view, feed, labels, t, total), params), strict=True):
            acc += part
    hg = None
    if importance.hessian:
        hg = [torch.zeros_like(p) for p in params]
        for feed, labels in feeds:
            first = torch.autograd.grad(_loss(view, feed, labels, t, total), params, create_graph=True)
            z = sum((g.detach() * f).sum() for g, f in zip(grads, first, strict=True))
            for acc, part in zip(hg, torch.autograd.grad(z, params), strict=True):
                acc += part
    products = hg if hg is not None else [None] * len(params)
    with torch.no_grad():
        scores = [
            importance.combine(p.detach(), g, h).double().numpy()
            for p, g, h in zip(params, grads, products, strict=True)
        ]
    for param in params:
        param.requires_grad_(False)
    if importance.remove_largest:
        top = max((float(s.max()) for s in scores if s.size), default=0.0)
        scores = [top - s for s in scores]
    return {name: s.astype(np.float32) for name, s in zip(names, scores, strict=True)}
