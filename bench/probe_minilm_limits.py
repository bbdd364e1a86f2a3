"""Where the fidelity of a pruned all-MiniLM-L6-v2 goes, and what more data and steps buy back.

A probe beside ``bench_transformers.py`` (same model, same evaluation sentences and Spearman), run once to
see why the issue's fidelity goals are missed, not a benchmark of a configuration:

- **parts**: Wanda at 30% on the heads only, on the FFN only, on both, and with the hidden size, one-shot;
- **LayerNorm refit**: a per-channel affine refit of every LayerNorm over the pruned hidden axis (its
  normalized output fitted, on the dense model's calibration activations, to the dense LayerNorm's output
  on the kept channels): how much of the ``--hidden`` loss is the norms' statistics;
- **distillation data**: ``onnxprune finetune`` for 200 steps on the 64 calibration sentences against 512
  (the 64 and 448 English sentences of the Python standard library's docstrings, so other text than the
  evaluation sentences).

Run: ``nice -n 10 python bench/probe_minilm_limits.py`` (about 15 minutes on 2 cores); results in
``bench/results/transformers_limits.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from _common import ROOT, environment, loadavg, rel, setup_logging, write_results
from _transformers_cases import WORK, shell

RESULTS = ROOT / "bench" / "results"
FFN = ("--exclude", "*intermediate*", "--exclude", "/bert/encoder/layer.?/output/dense*")
PARTS = {
    "heads": ("--channels", "0.3", "--importance", "wanda", *FFN),
    "ffn": ("--channels", "0.3", "--importance", "wanda", "--exclude", "*attention*"),
    "heads+ffn": ("--channels", "0.3", "--importance", "wanda"),
    "heads+ffn+hidden": ("--channels", "0.3", "--importance", "wanda", "--hidden"),
    "heads+ffn+hidden, no refit": ("--channels", "0.3", "--importance", "wanda", "--hidden", "--no-reconstruct"),
}


def docstring_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` plain English sentences (6-24 words) from the docstrings of the standard library, seeded."""
    found: set[str] = set()
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtledemo", "typing"}
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in skip:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a module that does not import here has no docstrings to give
                continue
        docs = [module.__doc__] + [
            obj.__doc__
            for obj in list(vars(module).values())
            if getattr(obj, "__module__", None) == name and (inspect.isfunction(obj) or inspect.isclass(obj))
        ]
        for doc in docs:
            if not isinstance(doc, str):
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", doc)):
                words = sentence.split()
                if 6 <= len(words) <= 24 and sentence[0].isupper() and sentence.endswith("."):
                    if re.fullmatch(r"[A-Za-z ,.'\-]+", sentence):
                        found.add(sentence)
    return random.Random(seed).sample(sorted(found), count)


def calibration_512(path: Path) -> Path:
    """The 64 calibration sentences and 448 docstring sentences, tokenized as the benchmark does."""
    if not path.is_file():
        import numpy as np
        from _real_minilm import tokenize
        from _real_sentences import CALIBRATION

        arrays = tokenize((*CALIBRATION, *docstring_sentences(448)))
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return path


def layernorm_refit(dense: Path, pruned: Path, calib: Path, out: Path) -> None:
    """Refit each LayerNorm of ``pruned`` that lost channels: per channel, γ·a and β + γ·b with (a, b) the
    least-squares map of its normalized kept channels onto the dense LayerNorm's normalized ones."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    ref, model = onnx.load(str(dense)), onnx.load(str(pruned))
    ref_inits = {i.name: numpy_helper.to_array(i) for i in ref.graph.initializer}
    inits = {i.name: i for i in model.graph.initializer}
    norms = [n for n in ref.graph.node if n.op_type == "LayerNormalization"]
    mine = {n.name: n for n in model.graph.node if n.op_type == "LayerNormalization"}
    probe = onnx.load(str(dense))
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None) for n in norms
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    with np.load(calib, allow_pickle=False) as data:
        feeds = {i.name: data[i.name] for i in session.get_inputs()}
    values = session.run([n.input[0] for n in norms], feeds)
    real = feeds["attention_mask"] != 0

    def normalized(x: np.ndarray) -> np.ndarray:
        return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-12)

    for node, x in zip(norms, values, strict=True):
        gamma, beta = ref_inits[node.input[1]], ref_inits[node.input[2]]
        pruned_node = mine[node.name]
        g, b = (numpy_helper.to_array(inits[pruned_node.input[k]]) for k in (1, 2))
        if len(g) == len(gamma):
            continue
        kept = np.array([np.flatnonzero((gamma == gi) & (beta == bi))[0] for gi, bi in zip(g, b, strict=True)])
        rows = x[real].astype(np.float64)
        source, target = normalized(rows[:, kept]), normalized(rows)[:, kept]
        ms, mt = source.mean(0), target.mean(0)
        a = ((source - ms) * (target - mt)).sum(0) / ((source - ms) ** 2).sum(0)
        shift = mt - a * ms
        inits[pruned_node.input[1]].CopyFrom(numpy_helper.from_array((g * a).astype(np.float32), pruned_node.input[1]))
        inits[pruned_node.input[2]].CopyFrom(
            numpy_helper.from_array((b + g * shift).astype(np.float32), pruned_node.input[2])
        )
    onnx.save(model, str(out))


def main(argv: list[str] | None = None) -> int:
    from _real_models import evaluate, prepare_minilm
    from bench_real import _run_cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args(argv)
    setup_logging("probe_minilm_limits")
    started = time.perf_counter()
    real = prepare_minilm(dynamo=False)
    work = WORK / "limits"
    work.mkdir(parents=True, exist_ok=True)
    calib512 = calibration_512(work / "minilm_calib512.npz")
    rows: list[dict[str, Any]] = []

    def prune(name: str, words: tuple[str, ...]) -> Path:
        out = work / (re.sub(r"\W+", "_", name) + ".onnx")
        command = ["prune", rel(real.model), "-o", rel(out), *words, "--calib", rel(real.calib), "--threads", "2"]
        result = _run_cli(command, out.with_suffix(".time"), args.timeout)
        if result["rc"] != 0:
            raise RuntimeError(f"{shell(command)}: {result.get('error')}")
        rows.append({"probe": "parts", "name": name, "spearman": evaluate(out, real), "command": shell(command)})
        return out

    pruned = {name: prune(name, words) for name, words in PARTS.items()}
    for name in ("heads+ffn+hidden", "heads+ffn+hidden, no refit"):
        out = pruned[name].with_name(pruned[name].stem + "_lnrefit.onnx")
        layernorm_refit(real.model, pruned[name], real.calib, out)
        rows.append({"probe": "layernorm refit", "name": name, "spearman": evaluate(out, real)})
    for name in ("heads+ffn", "heads+ffn+hidden"):
        for calib in (real.calib, calib512):
            out = pruned[name].with_name(f"{pruned[name].stem}_ft_{calib.stem}.onnx")
            command = ["finetune", rel(pruned[name]), "-o", rel(out), "--teacher", rel(real.model)]
            command += ["--calib", rel(calib), "--steps", str(args.steps), "--threads", "2"]
            result = _run_cli(command, out.with_suffix(".time"), args.timeout)
            spearman = evaluate(out, real) if result["rc"] == 0 else None
            rows.append(
                {"probe": "distillation data", "name": name, "sentences": 64 if calib == real.calib else 512,
                 "spearman": spearman, "seconds": result["wall_s"], "command": shell(command)}
            )  # fmt: skip
    lines = [
        "# Where the fidelity of a pruned all-MiniLM-L6-v2 goes",
        "",
        (__doc__ or "").split("\n\n", 1)[1].split("\n\nRun:")[0],
        "",
        "| probe | pruned | Spearman | note |",
        "|---|---|---:|---|",
    ]
    for row in rows:
        note = f"{row['sentences']} sentences, {args.steps} steps" if "sentences" in row else ""
        spearman = "failed" if row["spearman"] is None else f"{row['spearman']:.4f}"
        lines.append(f"| {row['probe']} | {row['name']} | {spearman} | {note} |")
    lines += ["", "Commands (from the repository root):", ""]
    lines += [f"- `onnxprune {row['command']}`" for row in rows if "command" in row]
    meta = {**environment(), "loadavg": loadavg(), "seconds": time.perf_counter() - started, "steps": args.steps}
    lines += ["", f"Measured in {meta['seconds'] / 60:.0f} min; load average at the end {meta['loadavg']}."]
    write_results(RESULTS, "transformers_limits", meta, rows, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
