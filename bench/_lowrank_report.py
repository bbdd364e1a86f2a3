"""Markdown tables of the low-rank benchmark (``lowrank.json`` → ``lowrank.md``)."""

from __future__ import annotations

from typing import Any

LABELS = {"minilm": "BERT-like, MiniLM-L6-H384 size", "resnet18": "ResNet-18-like, 224x224", "digits": "digits CNN"}


def _fidelity(model: str, row: dict[str, Any]) -> str:
    f = row["fidelity"]
    if model == "digits":
        return f"{100 * row['accuracy']:.1f}% | {f['rel_l2']:.3f}"
    if model == "resnet18":
        return f"{f['rel_l2']:.3f} | {100 * f['top1_agreement']:.0f}%"
    return f"{f['rel_l2']:.3f} | {f['mean_cosine']:.4f}"


def _speed(row: dict[str, Any]) -> str:
    return " | ".join(f"{v['speedup']:.2f}x" for v in row["latency"].values()) or "– | –"


def _head(model: str, first: str) -> list[str]:
    fid = {"digits": "top-1 | rel. error", "resnet18": "rel. error | top-1 agree"}.get(model, "rel. error | cosine")
    return [
        f"| {first} | mode | layers | params kept | MACs kept | speed 1 thr | speed 2 thr | {fid} | pass s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]


def _mode(row: dict[str, Any]) -> str:
    return "activation-aware" if row["config"]["activation_aware"] else "plain"


def _model(name: str, data: dict[str, Any]) -> list[str]:
    dense = data["dense"]
    lines = [
        f"### {LABELS.get(name, name)}",
        "",
        f"Dense: {dense['params'] / 1e6:.2f} M parameters ({data['factorizable_params'] / 1e6:.2f} M in "
        f"factorizable layers), {dense['macs'] / 1e6:.1f} M MACs at batch 1"
        + (f"; top-1 {100 * data['dense_accuracy']:.1f}%." if "dense_accuracy" in data else "."),
        "",
        "Energy sweep:",
        "",
        *_head(name, "energy"),
    ]
    for row in data["energy"]:
        lines.append(
            f"| {row['config']['energy']} | {_mode(row)} | {row['factorized_layers']} "
            f"| {100 * row['params_ratio']:.1f}% | {100 * row['macs_ratio']:.1f}% | {_speed(row)} "
            f"| {_fidelity(name, row)} | {row['seconds']:.1f} |"
        )
    lines += ["", "Plain vs activation-aware at equal parameters (`target_params`):", ""]
    lines += _head(name, "layer params kept")
    for row in data["equal_params"]:
        lines.append(
            f"| {100 * row['layer_fraction']:.0f}% | {_mode(row)} | {row['factorized_layers']} "
            f"| {100 * row['params_ratio']:.1f}% | {100 * row['macs_ratio']:.1f}% | {_speed(row)} "
            f"| {_fidelity(name, row)} | {row['seconds']:.1f} |"
        )
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    """The whole report."""
    env, settings = results["environment"], results["settings"]
    lines = [
        "# Low-rank benchmark",
        "",
        f"{env['cpu_count']} CPU cores ({env['machine']}), onnxruntime {env['onnxruntime']}, numpy {env['numpy']}; "
        f"{settings['calibration_samples']} calibration samples (random tokens/images; the digits CNN uses its "
        f"128 bundled samples), {settings['evaluation_samples']} held-out samples for fidelity. `LowRankPass` with "
        "`round_to` 8. Speed = dense latency / factorized latency at batch 1, both sessions in one process, "
        f"runs interleaved ({settings['latency_runs']} runs per model in {settings['rounds']} rounds). Params and "
        "MACs are whole-model fractions. Rel. error = ‖y − y_dense‖/‖y_dense‖ over the held-out outputs. "
        "*pass s*: the pass's wall time (statistics collection included).",
        "",
        "Reproduce: `python bench/bench_lowrank.py --out bench/results`"
        + (" (this run used `--quick`)." if results["quick"] else "."),
        "",
    ]
    for name, data in results["models"].items():
        lines += _model(name, data)
    lines.append(f"Total time {results['seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"
