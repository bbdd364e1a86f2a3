"""The fine-tuning loop: distillation (and optionally cross-entropy) on a torch view, masks held.

Everything here imports torch lazily through the caller (``finetune.py`` imports this module inside
the pass), so ``import onnxprune.passes`` works without torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from onnxprune.passes._schedules import cubic_sparsity, cycle_of, learning_rate
from onnxprune.torchview import TorchView

__all__ = ["Masks", "TrainData", "TrainSettings", "train"]

logger = logging.getLogger(__name__)

#: Called after each step with (step done, total steps, loss).
StepFn = Callable[[int, int, float], None]


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Samples stacked along axis 0, the teacher's outputs (and features) for them, optional labels."""

    inputs: Mapping[str, np.ndarray]
    teacher: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(next(iter(self.inputs.values())))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What the loop needs from the pass config (see :class:`~onnxprune.passes.FinetuneConfig`)."""

    steps: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str
    distill: str
    temperature: float
    distill_weight: float
    seed: int
    final_sparsity: float | None
    prune_every: int
    prune_end: float
    cycles: int
    rewind: bool
    drop_out: float
    drop_in: float
    prune_scope: str
    silo_alpha: float
    silo_beta: float


class Masks:
    """Which weights of the prunable tensors stay; re-applied after every optimizer step."""

    def __init__(self, view: TorchView, names: Sequence[str]) -> None:
        self.params = {name: view.parameter(name) for name in names}
        self.keep = {name: (p.detach() != 0) for name, p in self.params.items()}

    def apply(self) -> None:
        """Zero every masked-out weight."""
        with torch.no_grad():
            for name, param in self.params.items():
                param.mul_(self.keep[name])

    @property
    def sparsity(self) -> float:
        """Fraction of masked-out weights over all prunable tensors."""
        total = sum(k.numel() for k in self.keep.values())
        return 1 - sum(int(k.sum()) for k in self.keep.values()) / max(total, 1)

    def prune_to(
        self,
        sparsity: float,
        generator: torch.Generator,
        drop_out: float = 0.0,
        drop_in: float = 0.0,
        scope: str = "global",
    ) -> None:
        """Magnitude-prune to ``sparsity``, per tensor or with one threshold over all (``scope``).

        Pruned weights stay pruned, except by Drop Pruning's drop-in: with ``drop_in`` > 0 each
        pruned weight is first restored (at 0) with that probability. With ``drop_out`` > 0 the
        candidates are the twice-as-many smallest surviving weights, each removed with probability
        ``drop_out`` until the count is met.
        """
        if drop_in > 0:
            for name, keep in self.keep.items():
                self.keep[name] = keep | ((~keep) & (torch.rand(keep.shape, generator=generator) < drop_in))
        names = list(self.params)
        groups = [names] if scope == "global" else [[name] for name in names]
        for group in groups:
            keep = torch.cat([self.keep[n].reshape(-1) for n in group])
            scores = torch.cat([self.params[n].detach().abs().reshape(-1) for n in group])
            scores = scores.masked_fill(~keep, float("inf"))
            to_prune = int(round(sparsity * keep.numel())) - int((~keep).sum())
            if to_prune <= 0:
                continue
            order = torch.argsort(scores)
            if drop_out > 0:
                candidates = order[: min(2 * to_prune, int(keep.sum()))]
                coin = torch.rand(candidates.numel(), generator=generator) < drop_out
                chosen = torch.cat([candidates[coin], candidates[~coin]])[:to_prune]
            else:
                chosen = order[:to_prune]
            keep[chosen] = False
            offset = 0
            for n in group:
                size = self.keep[n].numel()
                self.keep[n] = keep[offset : offset + size].reshape(self.keep[n].shape)
                offset += size
        self.apply()


def _distill_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    if kind == "kl" and student.dim() == 2:
        t = temperature
        log_p = torch.log_softmax(student / t, dim=-1)
        q = torch.softmax(teacher / t, dim=-1)
        return torch.nn.functional.kl_div(log_p, q, reduction="batchmean") * t * t
    scale = teacher.pow(2).mean().clamp_min(1e-12)
    return (student - teacher).pow(2).mean() / scale


def _optimizer(settings: TrainSettings, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def _sparsity_at(settings: TrainSettings, step: int, initial: float) -> float | None:
    """The sparsity to prune to before ``step`` (``None``: no pruning at this step)."""
    final = settings.final_sparsity
    if final is None:
        return None
    if settings.cycles > 1:  # IMP: a geometric share of the remaining weights at each cycle's start
        cycle, within, _ = cycle_of(step, settings.steps, settings.cycles)
        if within:
            return None
        return 1 - (1 - initial) * ((1 - final) / (1 - initial)) ** ((cycle + 1) / settings.cycles)
    end = int(settings.prune_end * settings.steps)
    if step % settings.prune_every and step != end:
        return None
    return cubic_sparsity(step, end, initial, final) if step <= end else None


def train(
    view: TorchView,
    data: TrainData,
    settings: TrainSettings,
    masks: Masks,
    *,
    features: Sequence[str] = (),
    on_step: StepFn | None = None,
) -> dict[str, Any]:
    """Train ``view`` in place; return the loss history and the sparsity reached."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    params = [p for p in view.parameters() if p.requires_grad]
    optimizer = _optimizer(settings, params)
    start_values = {name: p.detach().clone() for name, p in masks.params.items()} if settings.rewind else {}
    initial = masks.sparsity
    outputs = [name for name in view.output_names if name in data.teacher]
    order = rng.permutation(data.n)
    cursor = 0
    losses: list[float] = []
    masks.apply()
    for step in range(settings.steps):
        target = _sparsity_at(settings, step, initial)
        if target is not None and target > masks.sparsity - 1e-9:
            masks.prune_to(target, generator, settings.drop_out, settings.drop_in, settings.prune_scope)
            if settings.rewind and step > 0:
                with torch.no_grad():
                    for name, param in masks.params.items():
                        param.copy_(start_values[name] * masks.keep[name])
        if cursor + settings.batch_size > data.n:
            order, cursor = rng.permutation(data.n), 0
        index = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size
        feeds = {k: torch.from_numpy(np.ascontiguousarray(v[index])) for k, v in data.inputs.items()}
        lr = learning_rate(
            settings.schedule,
            settings.lr,
            step,
            settings.steps,
            cycles=settings.cycles,
            sparsity=masks.sparsity,
            silo_alpha=settings.silo_alpha,
            silo_beta=settings.silo_beta,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        result = view(**feeds, _extra=tuple(features))
        targets = {name: torch.from_numpy(data.teacher[name][index]) for name in (*outputs, *features)}
        terms = [_distill_loss(settings.distill, result[n], t, settings.temperature) for n, t in targets.items()]
        loss = sum(terms) / max(len(terms), 1)
        if data.labels is not None:
            logits = result[view.output_names[0]]
            ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(data.labels[index]).long())
            loss = ce + settings.distill_weight * loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        masks.apply()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, settings.steps, losses[-1])
    return {"losses": losses, "sparsity": masks.sparsity, "initial_sparsity": initial}
