"""Benchmark low-rank factorization: size, MACs and latency ratios against output fidelity.

Models (``--models``):

* ``minilm``: a BERT-like encoder at MiniLM-L6-H384 size (vocab 30522, hidden 384, 6 layers, 12 heads,
  FFN 1536, sequence 128), plain torch, TorchScript export at opset 13; random initialization.
  Fidelity: relative L2 error and mean cosine of the final hidden states on held-out random tokens.
* ``resnet18``: the ResNet-18-like CNN at 224x224 (untrained); fidelity on held-out random images
  (relative L2 error and top-1 agreement of the logits).
* ``digits``: the trained ``examples/data/digits_cnn.onnx``; top-1 accuracy on its labelled test set.

For each model, two sweeps (``LowRankPass``, ``round_to`` 8, BN rectification on, energy transfer off):

1. ``energy``: energies 0.99/0.95/0.9/0.8/0.6, plain SVD and activation-aware (whitened with the
   calibration Gram; its energy is that of the layer's output on the data, not of the weight);
2. ``equal params``: ``target_params`` set so that the factorizable layers keep 75/50/35% of their
   parameters, plain vs activation-aware at the same budget.

Every row: parameters and MACs kept, batch-1 onnxruntime CPU latency ratio (dense/factorized, both
sessions in this process, runs interleaved, 1 and 2 intra-op threads) and fidelity.

Usage: python bench/bench_lowrank.py --out bench/results [--models minilm,resnet18,digits] [--quick]
Writes ``lowrank.json`` and ``lowrank.md`` into ``--out`` (the README quotes the tables).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import CACHE, ROOT, environment, logger, rel, setup_logging, write_json
from _lowrank_report import markdown
from _structured_common import array_source, batch1_shapes, counts, deserialize, fidelity, latency, random_inputs

MODELS = ("minilm", "resnet18", "digits")
ENERGIES = (0.99, 0.95, 0.9, 0.8, 0.6)
LAYER_FRACTIONS = (0.75, 0.5, 0.35)
THREADS = (1, 2)
MINILM = {"vocab": 30522, "hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536, "seq": 128}
DIGITS = ROOT / "examples" / "data"


def _export(name: str) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests import models

    if name == "minilm":
        return models.bert_like_onnx(dynamo=False, opset=13, **MINILM)
    return models.resnet18_like_onnx(dynamo=False, opset=13, image=224)


def _proto(name: str) -> Any:
    """The model, exported once and cached in ``bench/_models``."""
    import onnx

    if name == "digits":
        return onnx.load(str(DIGITS / "digits_cnn.onnx"))
    path = CACHE / f"lowrank_{name}_ts_op13.onnx"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        onnx.save(_export(name), str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        logger.info("%s: exported in %.1f s to %s", name, time.perf_counter() - started, rel(path))
    return onnx.load(str(path))


def _data(name: str, ref: Any, args: argparse.Namespace) -> tuple[dict, dict, Any]:
    """Calibration arrays, held-out evaluation arrays, and labels (digits only)."""
    import numpy as np

    if name == "digits":
        with (
            np.load(DIGITS / "digits_calib.npz", allow_pickle=False) as calib,
            np.load(DIGITS / "digits_test.npz", allow_pickle=False) as test,
        ):
            return {"input": calib["input"]}, {"input": test["input"]}, test["label"]
    if name == "minilm":
        rng = np.random.default_rng(0)
        shape = (MINILM["seq"],)
        calib = {"input_ids": rng.integers(0, MINILM["vocab"], (args.calib_samples, *shape), dtype=np.int64)}
        held = {"input_ids": rng.integers(0, MINILM["vocab"], (args.eval_samples, *shape), dtype=np.int64)}
        return calib, held, None
    return random_inputs(ref, args.calib_samples // 2, 0), random_inputs(ref, args.eval_samples, 1), None


def _factorizable_params(proto: Any) -> int:
    from onnxprune.analysis.weights import find_weights
    from onnxprune.passes.lowrank import unsupported

    return sum(w.size for w in find_weights(deserialize(proto)) if unsupported(w) is None)


def _run(proto: Any, config: dict[str, Any], calib: Any) -> tuple[Any, dict[str, Any], float]:
    from onnxprune.context import PassContext
    from onnxprune.passes import LowRankConfig, LowRankPass

    model = deserialize(proto)
    started = time.perf_counter()
    result = LowRankPass(LowRankConfig(**config), PassContext(calibration=calib, threads=2))(model)
    return result.model, result.report.summary, time.perf_counter() - started


def _accuracy(model: Any, held: dict, labels: Any) -> float:

    from onnxprune import _ort

    sess = _ort.session(model, threads=2)
    logits = sess.run(None, held)[0]
    return float((logits.argmax(1) == labels).mean())


def _row(name: str, proto: Any, ref: Any, config: dict, data: tuple, args: argparse.Namespace) -> dict[str, Any]:
    calib_arrays, held, labels = data
    shapes = batch1_shapes(ref)
    dense = counts(ref, shapes)
    model, summary, seconds = _run(proto, config, array_source(ref, calib_arrays, "calib"))
    after = counts(model, shapes)
    row: dict[str, Any] = {
        "config": config,
        "seconds": seconds,
        "factorized_layers": summary["factorized_layers"],
        "mean_energy_kept": summary["mean_energy_kept"],
        "params_ratio": after["params"] / dense["params"],
        "macs_ratio": after["macs"] / dense["macs"],
        "fidelity": fidelity(ref, model, held),
    }
    if labels is not None:
        row["accuracy"] = _accuracy(model, held, labels)
    feed = {k: v[:1] for k, v in held.items()}
    row["latency"] = {
        str(t): latency(ref, model, feed, t, args.latency_runs, args.rounds) for t in THREADS if name != "digits"
    }
    speed = ", ".join(f"{t} thr {v['speedup']:.2f}x" for t, v in row["latency"].items())
    logger.info(
        "%s %s: params %.3f, MACs %.3f, rel err %.4f, %s",
        name,
        config,
        row["params_ratio"],
        row["macs_ratio"],
        row["fidelity"]["rel_l2"],
        speed,
    )
    return row


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both sweeps for one model."""
    proto = _proto(name)
    ref = deserialize(proto)
    data = _data(name, ref, args)
    shapes = batch1_shapes(ref)
    dense = counts(ref, shapes)
    layer_params = _factorizable_params(proto)
    result: dict[str, Any] = {
        "dense": dense,
        "factorizable_params": layer_params,
        "energy": [],
        "equal_params": [],
    }
    if data[2] is not None:
        result["dense_accuracy"] = _accuracy(ref, data[1], data[2])
    for aware in (False, True):
        for energy in args.energies:
            config = {"energy": energy, "activation_aware": aware}
            result["energy"].append(_row(name, proto, ref, config, data, args))
    for fraction in LAYER_FRACTIONS:
        target = (dense["params"] - layer_params * (1 - fraction)) / dense["params"]
        for aware in (False, True):
            config = {"target_params": round(target, 6), "activation_aware": aware}
            row = _row(name, proto, ref, config, data, args)
            row["layer_fraction"] = fraction
            result["equal_params"].append(row)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="Fewer energies, samples and latency runs.")
    args = parser.parse_args(argv)
    setup_logging("lowrank")
    args.energies = (0.95, 0.8) if args.quick else ENERGIES
    args.calib_samples, args.eval_samples = (16, 8) if args.quick else (64, 32)
    args.latency_runs, args.rounds = (10, 1) if args.quick else (60, 3)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "quick": args.quick,
        "settings": {
            "energies": list(args.energies),
            "layer_fractions": list(LAYER_FRACTIONS),
            "calibration_samples": args.calib_samples,
            "evaluation_samples": args.eval_samples,
            "latency_runs": args.latency_runs,
            "rounds": args.rounds,
            "minilm": MINILM,
        },
        "models": {},
    }
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"unknown model {name!r} (known: {', '.join(MODELS)})")
        results["models"][name] = run_model(name, args)
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(results, args.out / "lowrank.json")
    text = markdown(results)
    (args.out / "lowrank.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
