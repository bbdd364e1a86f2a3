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

from onnxprune.calibration.collect import TOKEN_MASK
from onnxprune.passes._schedules import cubic_sparsity, cycle_of, learning_rate
from onnxprune.passes._sparse_methods import MethodRun, StepState
from onnxprune.torchview import TorchView

__all__ = [
    "Masks",
    "TrainData",
    "TrainSettings",
    "all_finite",
    "heldout_loss",
    "probe_lr",
    "pruning_done_at",
    "train",
]

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

    def subset(self, index: np.ndarray) -> TrainData:
        """The samples at ``index`` (inputs, teacher outputs and labels alike)."""
        return TrainData(
            {k: v[index] for k, v in self.inputs.items()},
            {k: v[index] for k, v in self.teacher.items()},
            None if self.labels is None else self.labels[index],
        )


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
    eval_every: int
    patience: int | None


class Masks:
    """Which weights of the prunable tensors stay; re-applied after every optimizer step.

    ``out_axes`` gives each tensor's output-neuron axis (Conv/Gemm 0, MatMul the last; default 0),
    for methods that work per output feature.
    """

    def __init__(self, view: TorchView, names: Sequence[str], out_axes: Mapping[str, int] | None = None) -> None:
        self.params = {name: view.parameter(name) for name in names}
        self.keep = {name: (p.detach() != 0) for name, p in self.params.items()}
        self.out_axes = {name: (out_axes or {}).get(name, 0) for name in names}

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


def all_finite(view: TorchView) -> bool:
    """Whether every tensor of the view is finite (no NaN/inf weight to write back)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in view.named_tensors().values())


def _distill_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float, tokens: torch.Tensor | None = None
) -> torch.Tensor:
    if kind == "kl" and student.dim() == 2:
        t = temperature
        log_p = torch.log_softmax(student / t, dim=-1)
        q = torch.softmax(teacher / t, dim=-1)
        return torch.nn.functional.kl_div(log_p, q, reduction="batchmean") * t * t
    if tokens is not None and student.dim() >= 3 and tuple(student.shape[:2]) == tuple(tokens.shape):
        keep = tokens != 0  # padding positions: hidden states no output reads
        student, teacher = student[keep], teacher[keep]
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


def pruning_done_at(settings: TrainSettings, initial: float) -> int:
    """The first step count after which no further pruning is scheduled (0: the run never prunes)."""
    if settings.final_sparsity is None or settings.final_sparsity <= initial:
        return 0
    if settings.cycles > 1:
        done = (settings.cycles - 1) * cycle_of(0, settings.steps, settings.cycles)[2] + 1
    else:
        done = int(settings.prune_end * settings.steps) + 1
    return min(done, settings.steps)


def _loss(
    view: TorchView, data: TrainData, index: np.ndarray, settings: TrainSettings, features: Sequence[str]
) -> torch.Tensor:
    """The training objective on the samples at ``index``: distillation (plus cross-entropy with labels)."""
    return _objective(view, data, index, settings, features)[0]


def _objective(
    view: TorchView,
    data: TrainData,
    index: np.ndarray,
    settings: TrainSettings,
    features: Sequence[str],
    extra: Sequence[str] = (),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`_loss` and the forward's values: outputs, ``features`` and ``extra`` (graph inputs included)."""
    feeds = {k: torch.from_numpy(np.ascontiguousarray(v[index])) for k, v in data.inputs.items()}
    wanted = tuple(dict.fromkeys(n for n in (*features, *extra) if n not in feeds))
    result = view(**feeds, _extra=wanted)
    names = [name for name in (*view.output_names, *features) if name in data.teacher]
    tokens = feeds.get(TOKEN_MASK)
    terms = [
        _distill_loss(
            settings.distill, result[n], torch.from_numpy(data.teacher[n][index]), settings.temperature, tokens
        )
        for n in names
    ]
    loss = sum(terms) / max(len(terms), 1)
    if data.labels is not None:
        logits = result[view.output_names[0]]
        ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(data.labels[index]).long())
        loss = ce + settings.distill_weight * loss
    return loss, {**feeds, **result}


def heldout_loss(view: TorchView, data: TrainData, settings: TrainSettings, features: Sequence[str] = ()) -> float:
    """The training objective over all of ``data`` (no gradients), averaged over samples."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, data.n, settings.batch_size):
            index = np.arange(start, min(start + settings.batch_size, data.n))
            total += float(_loss(view, data, index, settings, features)) * len(index)
    return total / max(data.n, 1)


class _Best:
    """The trainable tensors (and masks) at the lowest held-out loss seen so far, kept in memory."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], masks: Masks) -> None:
        self.params, self.masks = params, masks
        self.loss, self.step = float("inf"), -1
        self.values: dict[str, torch.Tensor] = {}
        self.keep: dict[str, torch.Tensor] = {}

    def offer(self, step: int, loss: float) -> bool:
        """Snapshot if ``loss`` is the lowest so far; True if it was."""
        if not loss < self.loss:
            return False
        self.loss, self.step = loss, step
        self.values = {name: p.detach().clone() for name, p in self.params.items()}
        self.keep = {name: k.clone() for name, k in self.masks.keep.items()}
        return True

    def restore(self) -> None:
        """Copy the snapshot back into the parameters and masks."""
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.values[name])
        self.masks.keep = {name: k.clone() for name, k in self.keep.items()}


def train(
    view: TorchView,
    data: TrainData,
    settings: TrainSettings,
    masks: Masks,
    *,
    heldout: TrainData | None = None,
    features: Sequence[str] = (),
    on_step: StepFn | None = None,
    method: MethodRun | None = None,
) -> dict[str, Any]:
    """Train ``view`` in place; return the loss history, the held-out curve and the sparsity reached.

    With ``heldout`` samples the objective on them is measured before training and every
    ``eval_every`` steps (and after the last); the trainable tensors at the lowest held-out loss are
    kept in memory and restored at the end (the starting weights when training never beat them).
    Only evaluations after the last scheduled pruning step compete. Training stops early after
    ``patience`` evaluations without improvement, and at the first NaN/inf loss (``diverged_at``: the
    steps done then; the kept weights are restored when there are any, else the caller must refuse
    the weights, see :func:`all_finite`). ``method`` (a sparse-training method's run) gets its hooks
    called at every step and may stop the run early.
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    trainable = {name: p for name, p in view.named_tensors().items() if p.requires_grad}
    optimizer = _optimizer(settings, list(trainable.values()))
    start_values = {name: p.detach().clone() for name, p in masks.params.items()} if settings.rewind else {}
    initial = masks.sparsity
    method = method or MethodRun()
    eligible_from = max(pruning_done_at(settings, initial), min(method.settled_at(settings.steps), settings.steps))
    best = _Best({**masks.params, **trainable}, masks)  # pruning also changes frozen weights
    curve: list[dict[str, float | None]] = []
    stale = 0
    order = rng.permutation(data.n)
    cursor = 0
    losses: list[float] = []
    masks.apply()

    def evaluate(done: int) -> bool:
        """Record the held-out loss after ``done`` steps; False when patience ran out."""
        nonlocal stale
        loss = heldout_loss(view, heldout, settings, features)
        since = losses[len(losses) - (done - int(curve[-1]["step"])) :] if curve else []
        curve.append({"step": done, "train": float(np.mean(since)) if since else None, "heldout": loss})
        if done < eligible_from:
            return True
        stale = 0 if best.offer(done, loss) else stale + 1
        return settings.patience is None or stale < settings.patience

    if heldout is not None:
        evaluate(0)
    step = 0
    diverged: int | None = None
    for step in range(settings.steps):
        target = _sparsity_at(settings, step, initial)
        if target is not None and target > masks.sparsity - 1e-9:
            method.prune_to(masks, target, generator, settings)
            if settings.rewind and step > 0:
                with torch.no_grad():
                    for name, param in masks.params.items():
                        param.copy_(start_values[name] * masks.keep[name])
        if cursor + settings.batch_size > data.n:
            order, cursor = rng.permutation(data.n), 0
        index = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size
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
        lr = method.learning_rate(step, settings.steps, lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        state = StepState(step, settings.steps, lr, masks, view, generator, settings)
        method.before_step(state)
        loss, values = _objective(view, data, index, settings, features, method.values)
        penalty = method.penalty(state, loss, values)
        objective = loss if penalty is None else loss + penalty
        if not torch.isfinite(objective.detach()):
            diverged = step  # the weights after this many steps give NaN/inf: stop, never step on them
            break
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        method.after_backward(state)
        optimizer.step()
        masks.apply()
        method.after_step(state)
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, settings.steps, losses[-1])
        done = step + 1
        if heldout is not None and (done % settings.eval_every == 0 or done == settings.steps):
            if not evaluate(done):
                break
        if method.stop:
            if heldout is not None and done % settings.eval_every and done != settings.steps:
                evaluate(done)
            break
    if heldout is not None and best.step >= 0 and (diverged is not None or best.step != curve[-1]["step"]):
        best.restore()
    method.finish(masks, view)
    return {
        "diverged_at": diverged,
        "losses": losses,
        "sparsity": masks.sparsity,
        "initial_sparsity": initial,
        "curve": curve,
        "kept_step": best.step if heldout is not None else len(losses),
        "heldout_best": best.loss if best.step >= 0 else None,
        "method": method.summary(),
    }


def probe_lr(
    view: TorchView,
    data: TrainData,
    heldout: TrainData,
    settings: TrainSettings,
    masks: Masks,
    candidates: Sequence[float],
    steps: int,
    *,
    features: Sequence[str] = (),
) -> tuple[float, list[dict[str, float]]]:
    """The candidate learning rate with the lowest held-out loss after ``steps`` constant-rate steps.

    Every candidate starts from the same weights (restored afterwards) with a fresh optimizer. When
    the run prunes further (``final_sparsity`` above the current sparsity), each candidate first
    prunes to it by magnitude, so the rate is chosen for recovering the pruned model -- the dense
    start's distillation loss is about 0, and any rate looks best there. Returns the chosen rate and
    one row per candidate (``lr``, ``heldout``).
    """
    start = _Best({**masks.params, **{n: p for n, p in view.named_tensors().items() if p.requires_grad}}, masks)
    start.offer(0, 0.0)
    probe = dataclasses.replace(
        settings, steps=steps, schedule="constant", final_sparsity=None, eval_every=steps, patience=None
    )
    final = settings.final_sparsity
    rows = []
    for lr in candidates:
        if final is not None and final > masks.sparsity + 1e-9:
            generator = torch.Generator().manual_seed(settings.seed)
            masks.prune_to(final, generator, settings.drop_out, settings.drop_in, settings.prune_scope)
        history = train(view, data, dataclasses.replace(probe, lr=lr), masks, heldout=heldout, features=features)
        diverged = history["diverged_at"] is not None
        rows.append({"lr": lr, "heldout": float("nan") if diverged else history["curve"][-1]["heldout"]})
        start.restore()
    finite = [r for r in rows if np.isfinite(r["heldout"])] or rows[-1:]
    return min(finite, key=lambda r: r["heldout"])["lr"], rows
