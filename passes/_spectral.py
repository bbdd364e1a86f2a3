"""K-FAC spectral-radius regularizer inside fine-tuning (M25; Ebrahimi & Klabjan): ``finetune --method spectral``.

Ebrahimi & Klabjan train and prune at once while steering to flat minima: the spectral radius of each
layer's Hessian block, approximated by K-FAC as ``ρ(H_ℓ) ≈ λ_max(A_ℓ)·λ_max(G_ℓ)`` (``A = E[x xᵀ]`` of
the rows the weight multiplies, ``G = E[δ δᵀ]`` of the loss gradient at its output), is kept small.
This method adds ``μ·Σ_ℓ ρ_ℓ`` to the loss of every ``every``-th step:

* each ``λ_max`` is the Rayleigh quotient ``vᵀ A v`` with ``v`` from a warm-started power iteration on
  the detached factor (``power_iters`` products per step; the quotient's gradient at the top
  eigenvector is the eigenvalue's gradient);
* ``A`` comes from the layer's input on the batch (a Conv's im2col patches), ``G`` from the per-sample
  gradients of the loss at its output, taken with ``create_graph`` so that ``ρ`` is differentiated
  through both factors (double backward);
* ``A`` carries no bias column (the ``kfac`` importance appends one; the top eigenvalues differ little).

Neurons are then removed by their K-FAC OBD saliency (the ``kfac`` channel importance, M25's
scorer) and the survivors fine-tuned again, as in the ``kfac-neuron`` preset. The radius of every
layer at the first and last regularized steps, and the mean summed radius over the last quarter of
them, are reported (``monitor``: measured without the penalty, for a baseline). The per-batch radius
is heavy-tailed (a few misfit samples dominate ``G``): with Adam's per-weight step normalization the
penalty moves it little, with SGD it lowers it several-fold at a small ``mu``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onnxprune.errors import RecipeError
from onnxprune.passes._kfac import torch_rows
from onnxprune.passes._layouts import layouts
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod, StepState

if TYPE_CHECKING:
    import onnx_ir as ir
    import torch

    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["SpectralOptions", "SpectralRun", "rayleigh"]

_OPS = ("Conv", "Gemm", "MatMul")


@dataclasses.dataclass(frozen=True)
class SpectralOptions(MethodOptions):
    """The spectral-radius regularizer's options.

    Attributes:
        mu: Weight of ``Σ_ℓ ρ(H_ℓ)`` in the loss.
        every: Regularize every this many steps (1: every step; each costs a double backward).
        power_iters: Power-iteration products per regularized step (the vectors are warm-started).
        monitor: With ``mu`` 0, still measure (and report) the radii every ``every`` steps.
    """

    mu: float = 1e-3
    every: int = 1
    power_iters: int = 2
    monitor: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mu >= 0 or self.every < 1 or self.power_iters < 1:
            raise RecipeError(
                f"method options mu must be >= 0, every and power_iters >= 1; got {self.mu}, {self.every},"
                f" {self.power_iters}"
            )


def rayleigh(rows: torch.Tensor, vector: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``λ_max`` of ``rowsᵀ rows / len(rows)`` as a differentiable Rayleigh quotient, and the updated vector.

    ``vector`` (a unit vector, e.g. the last call's) is refined by ``iterations`` power-iteration
    products with the detached factor (never formed: ``rowsᵀ (rows v)``).
    """
    import torch

    fixed = rows.detach()
    v = vector
    for _ in range(iterations):
        w = fixed.T @ (fixed @ v)
        norm = torch.linalg.vector_norm(w)
        if norm == 0:
            break
        v = w / norm
    return (rows @ v).pow(2).mean(), v


class SpectralRun(MethodRun):
    """The regularized layers, their warm-started eigenvectors and the radius at the first/last step."""

    def __init__(self, options: SpectralOptions, masks: Masks, view: TorchView) -> None:
        self.options = options
        found = layouts(view, list(masks.params))
        self.kernels = {name: tuple(p.shape[2:]) for name, p in masks.params.items()}
        self.layers: dict[str, ir.Node] = {
            name: layout.node
            for name, layout in found.items()
            if layout.node is not None
            and layout.node.op_type in _OPS
            and masks.params[name].dim() >= 2
            and (layout.node.op_type != "Conv" or layout.node.attributes.get_int("group", 1) == 1)
            and layout.node.inputs[0] is not None
            and layout.node.inputs[0].name
            and layout.node.outputs[0].name
        }
        if (options.mu > 0 or options.monitor) and not self.layers:
            raise RecipeError("method spectral: the model has no Conv/Gemm/MatMul weight to regularize")
        self.values = tuple(
            dict.fromkeys(v for node in self.layers.values() for v in (node.inputs[0].name, node.outputs[0].name))  # type: ignore[misc, union-attr]
        )
        self.vectors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.sums: list[float] = []
        self.generator = _generator()

    def penalty(self, state: StepState, loss: torch.Tensor, values: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        import torch

        if (self.options.mu == 0 and not self.options.monitor) or state.step % self.options.every:
            return None
        names = list(self.layers)
        outputs = [values[self.layers[n].outputs[0].name] for n in names]  # type: ignore[index]
        count = outputs[0].shape[0]
        penalize = self.options.mu > 0  # else only measured: no double backward
        grads = torch.autograd.grad(loss, outputs, create_graph=penalize, retain_graph=True, allow_unused=True)
        total = loss.new_zeros(())
        radius = {}
        for name, grad in zip(names, grads, strict=True):
            if grad is None:  # a layer the loss does not depend on has a zero G: no radius
                continue
            node = self.layers[name]
            x = values[node.inputs[0].name]  # type: ignore[index, union-attr]
            x_rows, d_rows = torch_rows(node, x, grad * count, bias=False, kernel=self.kernels[name])
            start = self.vectors.get(name) or (
                _unit(x_rows.shape[1], self.generator),
                _unit(d_rows.shape[1], self.generator),
            )
            lam_a, v = rayleigh(x_rows, start[0].to(x_rows.dtype), self.options.power_iters)
            lam_g, u = rayleigh(d_rows, start[1].to(d_rows.dtype), self.options.power_iters)
            self.vectors[name] = (v.detach(), u.detach())
            rho = lam_a * lam_g
            radius[name] = float(rho.detach())
            total = total + rho
        if not self.first:
            self.first = radius
        self.last = radius
        self.sums.append(sum(radius.values()))
        return (self.options.mu * total).to(loss.dtype) if penalize else None

    def summary(self) -> dict[str, Any]:
        tail = self.sums[-max(1, len(self.sums) // 4) :]
        return {
            "regularized_steps": len(self.sums) if self.options.mu > 0 else 0,
            "measured_steps": len(self.sums),
            "spectral_radius_first": self.first,
            "spectral_radius_last": self.last,
            "spectral_radius_sum_first": self.sums[0] if self.sums else None,
            "spectral_radius_sum_tail": float(sum(tail) / len(tail)) if self.sums else None,
        }


def _generator(seed: int = 0) -> torch.Generator:
    """The power iterations' own generator (the run's is left to the training loop)."""
    import torch

    return torch.Generator().manual_seed(seed)


def _unit(size: int, generator: torch.Generator) -> torch.Tensor:
    import torch

    v = torch.randn(size, generator=generator, dtype=torch.float64)
    return v / torch.linalg.vector_norm(v)


@dataclasses.dataclass(frozen=True)
class _Spectral(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        assert isinstance(options, SpectralOptions)
        return SpectralRun(options, masks, view)


SPARSE_METHODS.register(
    _Spectral(
        "spectral",
        "K-FAC spectral-radius regularizer: adds mu x sum of each layer's lambda_max(A) x lambda_max(G) to the loss",
        SpectralOptions,
        "Ebrahimi, Klabjan: Neuron-based Pruning of Deep Neural Networks with Better Generalization using"
        " Kronecker Factored Curvature Approximation (IJCNN 2021)",
    )
)
