"""SCL inside fine-tuning: binary masks learned with the weights through a straight-through estimator.

The run keeps, per prunable tensor, the latent weights θ and the mask logits m; the view's parameter
holds θ ⊙ 1[m > 0] for every forward pass (so the held-out evaluations and the written model are the
masked weights). After the backward pass, with g the gradient of the masked weight:

* θ gets g ⊙ 1[m > 0] and the loop's optimizer steps on it (the parameter holds θ during the step);
* m gets the identity-STE gradient g ⊙ θ, normalised per output feature (``normalize``), plus λ for
  the connection count, and steps by ``mask_lr``;
* λ is annealed as the multiplier of the connection count: at every step the smallest λ >= 0 that
  brings the density after the step down to a cubic schedule (from the start density to
  ``target_density`` at ``end``), over all tensors at once -- so layers lose connections where the
  normalised task gradients least hold them, with no per-layer setting.

At ``end`` the masks are fixed at exactly ``target_density`` (the largest logits over all tensors);
θ then trains under the fixed masks.
"""

from __future__ import annotations

from typing import Any

import torch

from onnxprune.passes._dst import largest
from onnxprune.passes._dst_methods import SCLOptions
from onnxprune.passes._schedules import cubic_sparsity
from onnxprune.passes._sparse_methods import MethodRun, StepState
from onnxprune.passes._train import Masks, TrainSettings

__all__ = ["SCLRun", "per_feature_normalized"]

#: Added to each output feature's gradient norm before dividing.
EPS = 1e-12


def per_feature_normalized(grad: torch.Tensor, out_axis: int) -> torch.Tensor:
    """``grad`` with every slice along ``out_axis`` (one output feature's weights) scaled to unit L2 norm."""
    moved = grad.movedim(out_axis, 0)
    norms = moved.reshape(moved.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (moved.dim() - 1)))
    return (moved / (norms + EPS)).movedim(0, out_axis)


class SCLRun(MethodRun):
    """One SCL run; ``theta`` and ``logits`` by tensor name; ``summary()`` has the λ and density trace."""

    def __init__(self, options: SCLOptions, settings: TrainSettings, masks: Masks) -> None:
        self.options, self.masks = options, masks
        self.end_step = int(options.end * settings.steps)
        self.theta = {name: p.detach().clone() for name, p in masks.params.items()}
        self.logits = {
            name: torch.where(keep, options.mask_init, -options.mask_init).to(self.theta[name].dtype)
            for name, keep in masks.keep.items()
        }
        self.start_density = 1 - masks.sparsity
        self.lam = 0.0
        self.frozen = False
        self.trace: list[dict[str, float]] = []
        self.learned_density: float | None = None

    @property
    def density(self) -> float:
        """Fraction of the prunable weights whose mask is on."""
        total = sum(m.numel() for m in self.logits.values())
        return sum(int((m > 0).sum()) for m in self.logits.values()) / max(total, 1)

    def settled_at(self, steps: int) -> int:
        return max(1, min(self.end_step, steps)) if self.logits else 0

    def _show_masked(self) -> None:
        """Parameters ← θ ⊙ 1[m > 0]; the loop's masks ← 1[m > 0]."""
        with torch.no_grad():
            for name, param in self.masks.params.items():
                keep = self.logits[name] > 0
                param.copy_(self.theta[name] * keep)
                self.masks.keep[name] = keep

    def before_step(self, state: StepState) -> None:
        self._show_masked()

    def after_backward(self, state: StepState) -> None:
        with torch.no_grad():
            for name, param in self.masks.params.items():
                if param.grad is None:
                    continue  # not trained: its mask stays
                keep = self.logits[name] > 0
                grad = param.grad.clone()
                if not self.frozen:
                    mask_grad = grad * self.theta[name]  # identity STE: ∂L/∂m := ∂L/∂m_b
                    if self.options.normalize == "per_feature":
                        mask_grad = per_feature_normalized(mask_grad, self.masks.out_axes[name])
                    self.logits[name] -= self.options.mask_lr * mask_grad
                param.grad.mul_(keep)  # ∂L/∂θ = g ⊙ m_b
                param.copy_(self.theta[name])  # the optimizer steps on θ
                self.masks.keep[name] = torch.ones_like(keep)  # the loop's apply() must not cut θ
            if not self.frozen:
                self._penalize(state.step + 1)

    def _scheduled(self, step: int) -> float:
        """The density the schedule asks for after ``step`` steps."""
        start, final = 1 - self.start_density, 1 - self.options.target_density
        return 1 - cubic_sparsity(step, self.end_step, start, final)

    def _penalize(self, step: int) -> None:
        """λ ← the smallest penalty (>= 0) leaving at most the scheduled count of logits > 0; logits -= lr·λ."""
        flat = torch.cat([m.reshape(-1) for m in self.logits.values()])
        count = round(self._scheduled(step) * flat.numel())
        if count >= flat.numel():
            self.lam = 0.0
            return
        threshold = float(torch.topk(flat, count + 1).values[-1])
        self.lam = max(0.0, threshold) / self.options.mask_lr
        for name in self.logits:
            self.logits[name] -= self.options.mask_lr * self.lam

    def after_step(self, state: StepState) -> None:
        with torch.no_grad():
            for name, param in self.masks.params.items():
                self.theta[name].copy_(param)
        if not self.frozen:
            if state.step % max(1, self.end_step // 20) == 0:
                self.trace.append({"step": state.step + 1, "density": self.density, "lambda": self.lam})
            if state.step + 1 >= self.end_step or state.step == state.steps - 1:
                self._freeze()
        self._show_masked()

    def _freeze(self) -> None:
        """Fix the masks at exactly ``target_density``: the largest logits over all tensors stay on."""
        self.learned_density = self.density
        names = list(self.logits)
        flat = torch.cat([self.logits[n].reshape(-1) for n in names])
        keep = largest(flat, round(self.options.target_density * flat.numel()))
        offset = 0
        for name in names:
            size = self.logits[name].numel()
            on = keep[offset : offset + size].reshape(self.logits[name].shape)
            self.logits[name] = torch.where(
                on, self.logits[name].abs().clamp_min(EPS), -self.logits[name].abs().clamp_min(EPS)
            )
            offset += size
        self.frozen = True

    def summary(self) -> dict[str, Any]:
        return {
            "target_density": self.options.target_density,
            "density": self.density,
            "learned_density": self.learned_density,
            "lambda": self.lam,
            "trace": self.trace,
        }
