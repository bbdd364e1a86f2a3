"""Fine-tuning schedules as plain functions of the step: learning rates and sparsity targets.

* ``constant``; ``cosine`` (from ``lr`` to 0 over the run); ``warmup_cosine`` (linear warm-up over the first
  10% of the run, then cosine to 0: ``slr`` with one cycle);
* ``slr`` (IMP+SLR, Zimmer et al.): every prune-retrain cycle restarts the schedule — 10% linear
  warm-up from 0 to ``lr``, then cosine to 0 within the cycle;
* ``silo`` (Liu et al.): each cycle's peak is ``lr + α / (1 + (P/(1−P))^(−β))`` with ``P`` the sparsity
  reached at the cycle's start; linear warm-up over 10% of the cycle, then ÷10 from 50% and ÷100
  from 64% of the cycle (the released code's epochs 25 and 32 of 50).
* Sparsity (Zhu & Gupta, Campfire): ``s_t = s_f + (s_i − s_f)(1 − t/t_end)³`` up to ``t_end``, then ``s_f``.
"""

from __future__ import annotations

import math

__all__ = ["LR_SCHEDULES", "cubic_sparsity", "cycle_of", "learning_rate", "silo_peak"]

LR_SCHEDULES = ("constant", "cosine", "warmup_cosine", "slr", "silo")


def cycle_of(step: int, total: int, cycles: int) -> tuple[int, int, int]:
    """(cycle index, step within the cycle, cycle length) for ``cycles`` equal cycles over ``total`` steps."""
    length = max(1, math.ceil(total / cycles))
    return min(step // length, cycles - 1), step - min(step // length, cycles - 1) * length, length


def silo_peak(lr: float, sparsity: float, alpha: float, beta: float) -> float:
    """SILO's S-shaped peak learning rate at pruned fraction ``sparsity``."""
    if sparsity <= 0:
        return lr
    if sparsity >= 1:
        return lr + alpha
    return lr + alpha / (1 + (sparsity / (1 - sparsity)) ** (-beta))


def learning_rate(
    schedule: str,
    lr: float,
    step: int,
    total: int,
    *,
    cycles: int = 1,
    sparsity: float = 0.0,
    silo_alpha: float = 0.04,
    silo_beta: float = 5.0,
) -> float:
    """Learning rate at ``step`` of ``total``."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    if schedule == "warmup_cosine":
        schedule, cycles = "slr", 1
    _, within, length = cycle_of(step, total, cycles)
    warm = max(1, int(0.1 * length))
    if schedule == "slr":
        if within < warm:
            return lr * (within + 1) / warm
        return lr * 0.5 * (1 + math.cos(math.pi * (within - warm) / max(length - warm, 1)))
    if schedule == "silo":
        peak = silo_peak(lr, sparsity, silo_alpha, silo_beta)
        if within < warm:
            return peak * (within + 1) / warm
        fraction = within / length
        return peak / 100 if fraction >= 0.64 else peak / 10 if fraction >= 0.5 else peak
    raise ValueError(f"unknown schedule {schedule!r}")


def cubic_sparsity(step: int, end: int, initial: float, final: float) -> float:
    """Zhu & Gupta's gradual sparsity at ``step`` (reaches ``final`` at ``end``)."""
    if end <= 0 or step >= end:
        return final
    return final + (initial - final) * (1 - step / end) ** 3
