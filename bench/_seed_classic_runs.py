"""Shared helpers of the classic seed reproductions (``bench/_seeds_classic.py``): the kit's models, a
calibration pool with labels, side-by-side ``onnxprune finetune`` runs and held-out measurements."""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _seed_kit as kit

from onnxprune import _io
from onnxprune.analysis.shrinkbench import shrinkbench_counts

OUT = kit.SEEDS_CACHE / "classic"
EPOCHS = {"lenet5": 8, "lenet300": 3, "cnn": 3}
LR = 1e-3
SHAPES = {"input": (1, 1, 28, 28)}


def calibration(count: int, labels: bool = False) -> Path:
    """The first ``count`` training digits as a calibration file, written once (atomically): claims may run in
    parallel processes that read it while another starts."""
    path = OUT / f"calib_{count}{'_labels' if labels else ''}.npz"
    if not path.is_file():
        data = kit.digits()
        arrays = {"input": data["x_train"][:count], **({"labels": data["y_train"][:count]} if labels else {})}
        kit.write_npz(path.with_suffix(f".{os.getpid()}.npz"), **arrays).replace(path)
    return path


def accuracy(path: Path) -> float:
    """Held-out top-1 with one onnxruntime thread (a loaded machine makes more threads slower)."""
    return kit.accuracy(path, threads=1)


def base(name: str) -> Path:
    """The trained dense model (cached)."""
    return kit.trained(name, EPOCHS[name])


@dataclasses.dataclass(frozen=True)
class Tune:
    """One ``onnxprune finetune`` run: fixed lr, every training digit (with labels) trained, last weights kept."""

    model: Path
    tag: str
    steps: int
    flags: tuple[Any, ...] = ()
    teacher: Path | None = None
    seed: int = 0

    @property
    def out(self) -> Path:
        return OUT / f"{self.tag}.onnx"

    def args(self) -> list[str]:
        lr = ["--lr", LR] if "--lr" not in self.flags else []
        return [
            str(a)
            for a in (
                "--quiet", "finetune", self.model, "-o", self.out, "--teacher", self.teacher or self.model,
                "--calib", calibration(4000, labels=True), "--steps", self.steps, "--holdout", 0, "--patience", 0,
                "--threads", 1, "--seed", self.seed, *lr, *self.flags,
            )
        ]  # fmt: skip


def finetune_all(tunes: Sequence[Tune]) -> list[Path]:
    """Run the fine-tunings side by side, one process and one thread each; their outputs in order."""
    OUT.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).parent / "onnxprune"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = [
        subprocess.Popen([str(cli), *tune.args()], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for tune in tunes
    ]
    for tune, process in zip(tunes, running, strict=True):
        output, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"finetune {tune.tag} exited {process.returncode}: {output[-2000:]}")
    return [tune.out for tune in tunes]


def finetune(model: Path, tag: str, steps: int, *flags: Any, teacher: Path | None = None, seed: int = 0) -> Path:
    """One :class:`Tune`, run now."""
    return finetune_all([Tune(model, tag, steps, flags, teacher, seed)])[0]


def measure(path: Path, **row: Any) -> dict[str, Any]:
    """``row`` plus held-out accuracy and ShrinkBench's figures of the model at ``path``."""
    counts = shrinkbench_counts(_io.load(str(path)), SHAPES)
    return {
        **row,
        "accuracy": round(accuracy(path), 4),
        "compression": round(counts.prunable_compression, 2),
        "speedup": round(counts.speedup, 2),
    }


def mean(rows: Sequence[dict[str, Any]], key: str = "accuracy") -> float:
    return statistics.fmean(r[key] for r in rows)
