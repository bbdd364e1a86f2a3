"""Reproductions of the ticket-ensemble family: Sup-tickets (M31), FreeTickets (M12), Rethinking (M3).

Every run goes through the CLI (``onnxprune prune`` / ``finetune``, in-process) on the seed kit's MNIST
split: training and fine-tuning on the 4,000 training digits (labels from the calibration file),
accuracy on the 1,000 held-out digits in onnxruntime. Each comparison gives both arms the same step
budget, learning rate (Adam 1e-3) and seeds; the rows are per seed and the verdict uses the means.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import _seed_kit as kit
from _seed_claims import Outcome, claim

SEEDS = (0, 1, 2)


def _finetune(model: Path, out: Path, teacher: Path, calib: Path, steps: int, seed: int, *extra: str) -> Path:
    """``onnxprune finetune`` on labels only (cross-entropy), fixed rate, the whole budget (no early stop)."""
    kit.onnxprune(
        ["finetune", model, "-o", out, "--teacher", teacher, "--calib", calib, "--steps", steps, "--lr", "1e-3",
         "--batch-size", "64", "--distill-weight", "0", "--patience", "0", "--seed", seed, "--threads", "2", *extra]
    )  # fmt: skip
    return out


def _prune(model: Path, out: Path, calib: Path, *args: str) -> Path:
    kit.onnxprune(["prune", model, "-o", out, "--calib", calib, "--threads", "2", *args])
    return out


def _mean(rows: list[dict[str, Any]], arm: str, key: str = "accuracy") -> float:
    return statistics.mean(r[key] for r in rows if r["arm"] == arm)


def _verdict(wins: bool, ties: bool) -> str:
    return "reproduced" if wins else "partly" if ties else "not reproduced"


@claim(
    "M31-sup-tickets",
    "M31",
    "Sup-tickets",
    "Superposing the cheap tickets of cyclic-LR cycles with mask re-exploration gives a better sparse network than "
    "the same training budget spent on one sparse network (consistent gains over GraNet/RigL/SET on CIFAR/ImageNet).",
)
def sup_tickets(quick: bool) -> Outcome:
    seeds = SEEDS[:1] if quick else SEEDS
    base = kit.trained("lenet300", 3)
    calib = kit.calibration(200 if quick else 4000, labels=True)
    steps = 30 if quick else 500
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for sparsity in (0.9,) if quick else (0.9, 0.95):
            pruned = _prune(base, folder / f"p{sparsity}.onnx", calib, "--sparsity", str(sparsity), "--scope",
                            "global", "--importance", "magnitude")  # fmt: skip
            one_shot = kit.accuracy(pruned)
            for seed in seeds:
                for arm, extra in (("sparse fine-tune", ()), ("sup-tickets", ("--method", "sup-tickets"))):
                    out = _finetune(pruned, folder / f"{arm[:3]}{seed}.onnx", base, calib, steps, seed, *extra)
                    stats = kit.weight_stats(out)
                    rows.append({"sparsity": sparsity, "arm": arm, "seed": seed, "accuracy": kit.accuracy(out),
                                 "one_shot": one_shot, "nonzero": stats["nonzero"]})  # fmt: skip
    dense = kit.accuracy(base)
    parts, wins, ties = [], True, True
    for sparsity in sorted({r["sparsity"] for r in rows}):
        sub = [r for r in rows if r["sparsity"] == sparsity]
        plain, sup = _mean(sub, "sparse fine-tune"), _mean(sub, "sup-tickets")
        parts.append(f"{sparsity:.0%} sparsity: sup-tickets {sup:.4f} vs sparse fine-tune {plain:.4f}")
        wins &= sup > plain
        ties &= sup >= plain - 0.002
    return Outcome(
        measured=f"LeNet-300-100 (dense {dense:.4f}), {steps} steps each, mean of {len(seeds)} seed(s): "
        + "; ".join(parts)
        + ".",
        verdict=_verdict(wins, ties),
        rows=rows,
        notes="One-shot global magnitude pruning of a 3-epoch LeNet-300-100, then `finetune` on the 4,000 training "
        "digits with labels (cross-entropy only), Adam lr 1e-3, batch 64, the same steps for both arms: "
        "plain sparse fine-tuning (warm-up + cosine, held-out best kept) vs `--method sup-tickets` (defaults: the "
        "last 30% as 3 triangular cycles 0.2-1.0 x lr, 50% of each layer's weights re-explored per cycle, CAA, global "
        "re-prune to the same sparsity). The paper superposes tickets at the end of a 250-epoch DST run from scratch "
        "on CIFAR; this is a brief fine-tuning version.",
    )


@claim(
    "M12-free-tickets",
    "M12",
    "FreeTickets (EDST)",
    "An ensemble of sparse members from one dynamic-sparse run beats the dense model (and a single sparse member) in "
    "accuracy with fewer parameters and training FLOPs than a dense model.",
)
def free_tickets(quick: bool) -> Outcome:
    seeds = SEEDS[:1] if quick else SEEDS
    base = kit.trained("lenet300", 3)
    calib = kit.calibration(200 if quick else 4000, labels=True)
    steps = 30 if quick else 600
    dense, dense_stats = kit.accuracy(base), kit.weight_stats(base)
    rows: list[dict[str, Any]] = [{"arm": "dense", "seed": None, "accuracy": dense, "nonzero": dense_stats["nonzero"]}]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pruned = _prune(base, folder / "p.onnx", calib, "--sparsity", "0.8", "--scope", "global", "--importance",
                        "magnitude")  # fmt: skip
        for seed in seeds:
            plain = _finetune(pruned, folder / f"plain{seed}.onnx", base, calib, steps, seed)
            rows.append({"arm": "single sparse (same steps)", "seed": seed, "accuracy": kit.accuracy(plain),
                         "nonzero": kit.weight_stats(plain)["nonzero"]})  # fmt: skip
            out = _finetune(pruned, folder / f"ft{seed}.onnx", base, calib, steps, seed, "--method", "free-tickets",
                            "--method-option", "members=3", "--method-option", "ensemble=mean_softmax")  # fmt: skip
            members = [folder / f"ft{seed}_member{i}.onnx" for i in range(3)]
            for i, member in enumerate(members):
                rows.append({"arm": f"member {i}", "seed": seed, "accuracy": kit.accuracy(member),
                             "nonzero": kit.weight_stats(member)["nonzero"]})  # fmt: skip
            ensemble_file = out.with_name(f"ft{seed}_ensemble.onnx")
            rows.append({"arm": "ensemble of 3", "seed": seed, "accuracy": kit.accuracy(ensemble_file),
                         "nonzero": sum(kit.weight_stats(m)["nonzero"] for m in members)})  # fmt: skip
    ensemble, single = _mean(rows, "ensemble of 3"), _mean(rows, "single sparse (same steps)")
    best_member = max(_mean(rows, f"member {i}") for i in range(3))
    params = _mean(rows, "ensemble of 3", "nonzero") / dense_stats["nonzero"]
    wins = ensemble > dense and ensemble > single
    return Outcome(
        measured=f"LeNet-300-100 at 80% sparsity, {steps} steps, mean of {len(seeds)} seed(s): "
        f"ensemble of 3 "
        f"{ensemble:.4f} vs dense {dense:.4f}, one sparse model fine-tuned the same steps {single:.4f}, best member "
        f"{best_member:.4f}; the ensemble holds {params:.2f}x the dense model's nonzero weights.",
        verdict=_verdict(wins, ensemble > single or ensemble > dense),
        rows=rows,
        notes="One-shot global magnitude pruning to 80% (the paper's density 0.2), then `finetune --method "
        "free-tickets` (40% exploration with gradient-regrowth DST every 50 steps, then 3 refinement phases each "
        "opened by an 80% prune-and-regrow and an LR reset, ÷10 at mid-phase) against plain sparse fine-tuning at "
        "the same steps; labels only, Adam 1e-3, batch 64. Ensemble = `OUT_ensemble.onnx` (mean of the members' "
        "softmax) run in onnxruntime. The paper trains WRN-28-10 for 450 epochs from scratch; training FLOPs here "
        "are equal by construction (one run).",
    )


@claim(
    "M3-rethinking",
    "M3",
    "Rethinking the Value of Network Pruning (Scratch-E / Scratch-B)",
    "For structured pruning, training the pruned architecture from scratch (Scratch-E: same epochs; Scratch-B: "
    "same FLOPs) matches or beats fine-tuning the inherited weights (e.g. L1-norm ResNet-34-A: 72.56 fine-tune, "
    "72.77 Scratch-E, 73.08 Scratch-B on ImageNet).",
)
def rethinking(quick: bool) -> Outcome:
    seeds = SEEDS[:1] if quick else SEEDS
    epochs = 1 if quick else 4
    base = kit.trained("lenet5", epochs)
    count = 200 if quick else 4000
    calib = kit.calibration(count, labels=True)
    steps = 10 if quick else epochs * count // 64  # the base model's training budget (Scratch-E)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pruned = _prune(base, folder / "ch.onnx", calib, "--channels", "0.5", "--importance", "l1",
                        "--no-reconstruct")  # fmt: skip
        one_shot = kit.accuracy(pruned)
        for seed in seeds:
            arms = (("fine-tune (inherited)", ()), ("Scratch-E", ("--scratch", "E")), ("Scratch-B", ("--scratch", "B")))
            for arm, extra in arms:
                out = _finetune(pruned, folder / f"{arm[-1]}{seed}.onnx", base, calib, steps, seed, *extra)
                rows.append({"arm": arm, "seed": seed, "accuracy": kit.accuracy(out), "one_shot": one_shot})
    dense = kit.accuracy(base)
    tune, scratch_e, scratch_b = (_mean(rows, a) for a in ("fine-tune (inherited)", "Scratch-E", "Scratch-B"))
    best = max(scratch_e, scratch_b)
    return Outcome(
        measured=f"LeNet-5 (dense {dense:.4f}) with 50% of its channels removed (one-shot {one_shot:.4f}), "
        f"mean of {len(seeds)} seed(s): fine-tuned {tune:.4f}, Scratch-E {scratch_e:.4f}, "
        f"Scratch-B {scratch_b:.4f} "
        f"({steps} steps; Scratch-B scaled by the FLOPs ratio).",
        verdict=_verdict(scratch_e >= tune and scratch_b >= tune, best >= tune - 0.002),
        rows=rows,
        notes=f"LeNet-5 trained {epochs} epochs on the 4,000 training digits ({steps} steps of 64), then `prune "
        "--channels 0.5 --importance l1` (Li et al.'s filter norm, every layer halved, no reconstruction). All arms "
        f"train with labels only (cross-entropy), Adam 1e-3, batch 64, warm-up + cosine: fine-tuning the inherited "
        f"weights for {steps} steps, Scratch-E (`finetune --scratch E`: torch-default re-initialisation, the same "
        "steps = the base model's training budget), Scratch-B (`--scratch B`: steps x FLOPs(full)/FLOPs(pruned)). "
        "The paper trains 160 CIFAR epochs with SGD.",
    )
