"""Depth pruning on trained all-MiniLM-L6-v2 (TorchScript export) and a random-init residual CNN.

MiniLM: drop 1, 2, 3 of the 12 sublayers and 1, 2 of the 6 layers, chosen by each criterion
(output error on minilm_calib64.npz, or angular distance), then report parameters, batch-1
latency speedup (interleaved with the dense model in one process, onnxruntime 1 thread) and the
Spearman correlation of pairwise cosine similarities of mean-pooled sentence embeddings on
minilm_eval.npz against the dense model (``_real_metrics.similarity_spearman``). Greedy selection
without ``iterative`` is a prefix of one ranking, so each criterion is measured once per unit and
the first k units of its order are dropped.

CNN: ``ResNet18Like`` from the test models, random weights: correctness and speed only (no metric).

    python bench/bench_depth.py   # writes bench/results/depth.md and depth.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import _real_metrics
import numpy as np
import onnx
from _common import ROOT, environment, setup_logging, write_json

from onnxprune import _io, _ort
from onnxprune.analysis.blocks import bypass, find_blocks, group_units
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.calibration.sources import open_source
from onnxprune.context import PassContext
from onnxprune.passes import DepthPruneConfig, DepthPrunePass
from onnxprune.verify import run_model, validate

RESULTS = ROOT / "bench" / "results"
THREADS = 1
LATENCY_RUNS = 200


def _order(model_path: Path, calib: str, criterion: str, unit: str, most: int) -> tuple[list[str], float]:
    """The units the pass drops first (its greedy order) and the seconds its measurement took."""
    model = _io.load(model_path)
    context = PassContext(calibration=open_source(calib, model), batch_size=16, threads=2)
    start = time.perf_counter()
    result = DepthPrunePass(DepthPruneConfig(blocks=most, criterion=criterion, unit=unit), context)(model)
    return list(result.report.summary["dropped"]), time.perf_counter() - start


def _drop(model_path: Path, unit: str, labels: list[str]) -> Any:
    model = _io.load(model_path)
    units = {u.label: u for u in group_units(find_blocks(model, complete_shapes(model)), unit)}
    bypass(model, [b for label in labels for b in units[label].blocks])
    return model


def _spearman(model: Any, data: str) -> float:
    session = _ort.session(model, threads=2)
    batches = [run_model(session, b) for b in open_source(data, model).batches(32)]
    outputs = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    return _real_metrics.similarity_spearman(outputs, data)


def _row(reference: Any, candidate: Any, data: str, **fields: Any) -> dict[str, Any]:
    source = open_source(data, reference)
    result = validate(reference, candidate, source, latency_runs=LATENCY_RUNS, threads=THREADS).as_dict()
    dense = count_model(reference, complete_shapes(reference))
    pruned = count_model(candidate, complete_shapes(candidate))
    return {
        **fields,
        "params": pruned.params,
        "macs_kept": pruned.macs / dense.macs,
        "latency_ms": result["latency_cand_ms"],
        "dense_latency_ms": result["latency_ref_ms"],
        "speedup": result["latency_ref_ms"] / result["latency_cand_ms"],
        "spearman": _spearman(candidate, data) if "minilm" in data else None,
        "mean_cosine": result["outputs"][0]["mean_cosine"],
    }


def minilm() -> list[dict[str, Any]]:
    """The MiniLM rows: dense, then each criterion x unit x count."""
    from _real_models import prepare_minilm

    real = prepare_minilm(dynamo=False)
    path, calib, data = real.model, str(real.calib), str(real.data)
    reference = _io.load(path)
    rows = [_row(reference, _io.load(path), data, model="minilm", criterion="-", unit="-", dropped=[])]
    for criterion in ("output_error", "angular"):
        for unit, counts in (("block", (1, 2, 3)), ("layer", (1, 2))):
            order, seconds = _order(path, calib, criterion, unit, max(counts))
            for k in counts:
                row = _row(reference, _drop(path, unit, order[:k]), data, model="minilm", criterion=criterion)
                rows.append({**row, "unit": unit, "dropped": order[:k], "select_s": round(seconds, 1)})
                print(rows[-1], flush=True)
    return rows


def cnn(tmp: Path) -> list[dict[str, Any]]:
    """Random-init ResNet18Like: drops 1 and 2 identity blocks by output error on random images (no metric)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from tests.models import ResNet18Like
    from tests.models.export import torch_export

    torch.manual_seed(0)
    module = ResNet18Like().eval()
    x = torch.randn(8, 3, 64, 64)
    path, data = tmp / "resnet18_like.onnx", tmp / "resnet_x.npz"
    onnx.save(torch_export(module, (x[:2],), dynamo=False), path)
    np.savez(data, x=x.numpy())
    reference = _io.load(path)
    rows = [_row(reference, _io.load(path), str(data), model="resnet18_like", criterion="-", unit="-", dropped=[])]
    order, seconds = _order(path, str(data), "output_error", "block", 2)
    for k in (1, 2):
        row = _row(reference, _drop(path, "block", order[:k]), str(data), model="resnet18_like")
        rows.append({**row, "criterion": "output_error", "unit": "block", "dropped": order[:k], "select_s": seconds})
    return rows


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Depth pruning (drop residual blocks)",
        "",
        "`python bench/bench_depth.py`. MiniLM = trained all-MiniLM-L6-v2 (TorchScript export), calibration "
        "minilm_calib64.npz (64 sentences), evaluation minilm_eval.npz (100 sentences): Spearman of pairwise "
        "cosine similarities of mean-pooled embeddings against the dense model (dense = 1.0). "
        f"Latency: batch 1, onnxruntime {THREADS} thread, {LATENCY_RUNS} runs interleaved with the dense model in "
        "one process, on a 2-core machine shared with other jobs (the dense row measures the noise). MACs at "
        "batch 1 (MiniLM: seq 32; ResNet: 64x64). "
        "resnet18_like: RANDOM weights, speed and correctness only (no accuracy claim).",
        "",
        "| model | criterion | unit | dropped | params | MACs kept | speedup | Spearman | mean cos |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        spearman = "-" if r["spearman"] is None else f"{r['spearman']:.4f}"
        dropped = ", ".join(r["dropped"]) or "(dense)"
        lines.append(
            f"| {r['model']} | {r['criterion']} | {r['unit']} | {dropped} | {r['params']:,} | {r['macs_kept']:.3f} | "
            f"{r['speedup']:.2f}x | {spearman} | {r['mean_cosine']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run both parts and write the results."""
    import tempfile

    setup_logging("bench_depth")
    with tempfile.TemporaryDirectory() as tmp:
        rows = minilm() + cnn(Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json({"environment": environment(), "rows": rows}, RESULTS / "depth.json")
    (RESULTS / "depth.md").write_text(_markdown(rows))
    print(_markdown(rows))


if __name__ == "__main__":
    main()
