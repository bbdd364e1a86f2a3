"""The transformer zoo through both exporters: export cost, fidelity, torch view, and the channel analysis.

For each of ``bert``, ``vit``, ``llama``, ``llama_kv`` (``tests/models/transformer_zoo.py``, dynamic
batch/sequence axes) and each exporter (TorchScript at opset 17, dynamo at its default): export seconds,
node count, Reshapes whose target is computed (not a constant), the largest |onnxruntime - torch| and
|torch view - onnxruntime| at batch 3 / sequence 11 / past 2 (the export ran at 2 / 8 / 5), and what
:func:`analyze_channels` finds: groups, prunable groups (exact; with ``allow_inexact``), the share of
group channels that are prunable, and how many of the heads/KV/FFN/hidden targets of
``tests/analysis/test_transformer_groups.py`` are met.  Random-init weights: correctness and coverage
only, no accuracy.

Usage: python bench/bench_transformer_zoo.py --out bench/results.  Writes ``transformer_zoo.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import ROOT, environment, loadavg, setup_logging, write_json

sys.path.insert(0, str(ROOT))

SHAPE = {"batch": 3, "seq": 11, "past": 2}


def _row(name: str, dynamo: bool) -> dict[str, Any]:
    from onnxprune.analysis.channels import analyze_channels
    from onnxprune.torchview import TorchView
    from tests.analysis.test_transformer_groups import EXPECTED, _check, torch_names
    from tests.analysis.test_transformer_zoo_exports import max_diff, numpy_feeds, torch_outputs
    from tests.conftest import ort_run, to_ir
    from tests.models.transformer_zoo import CONFIG, build_transformer, transformer_inputs, transformer_onnx

    start = time.perf_counter()
    proto = transformer_onnx(name, dynamo=dynamo)
    seconds = time.perf_counter() - start
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}
    consts = {i.name for i in proto.graph.initializer}
    computed = sum(
        n.op_type == "Reshape" and n.input[1] not in consts and producers.get(n.input[1]) != "Constant"
        for n in proto.graph.node
    )
    feeds = transformer_inputs(name, seed=5, **SHAPE)
    ort = ort_run(proto, numpy_feeds(feeds))
    view = TorchView(to_ir(proto)).run_numpy(numpy_feeds(feeds))
    exact = analyze_channels(to_ir(proto))
    inexact = analyze_channels(to_ir(proto), allow_inexact=True)
    names = torch_names(to_ir(proto), build_transformer(name))
    expects = [e for i in range(CONFIG.layers) for e in EXPECTED[name](i)]
    met = sum(not _check(e, exact, inexact, names) for e in expects)
    channels = sum(g.units for g in exact.groups.roots())
    return {
        "model": name,
        "exporter": "dynamo" if dynamo else "torchscript17",
        "export_s": round(seconds, 2),
        "nodes": len(proto.graph.node),
        "computed_reshapes": int(computed),
        "ort_vs_torch": max_diff(ort, torch_outputs(name, feeds)),
        "view_vs_ort": max_diff(view, ort),
        "groups": len(exact.groups.roots()),
        "prunable": len(exact.prunable()),
        "prunable_inexact": len(inexact.prunable()),
        "prunable_channel_share": round(sum(g.units for g in exact.prunable()) / max(1, channels), 3),
        "targets_met": met,
        "targets": len(expects),
    }


def markdown(rows: list[dict[str, Any]], command: str, load: list[float] | None) -> str:
    lines = [
        "# Transformer zoo: exports, torch view, channel analysis",
        "",
        f"`{command}` (machine load average {load}). Random-init weights: this shows correctness and what the "
        f"analysis reaches, not accuracy. Diffs at batch {SHAPE['batch']}, sequence {SHAPE['seq']}, past "
        f"{SHAPE['past']}; targets: `tests/analysis/test_transformer_groups.py` (heads / KV groups / FFN / hidden "
        "per layer).",
        "",
        "| model | exporter | export s | nodes | computed Reshapes | ORT vs torch | view vs ORT | groups | prunable "
        "| prunable (inexact) | prunable channel share | targets met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['exporter']} | {r['export_s']:.1f} | {r['nodes']} | {r['computed_reshapes']} "
            f"| {r['ort_vs_torch']:.1e} | {r['view_vs_ort']:.1e} | {r['groups']} | {r['prunable']} "
            f"| {r['prunable_inexact']} | {r['prunable_channel_share']:.3f} | {r['targets_met']} / {r['targets']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    setup_logging("transformer_zoo")
    from tests.models.transformer_zoo import TRANSFORMERS

    rows = [_row(name, dynamo) for name in TRANSFORMERS for dynamo in (False, True)]
    out = Path(args.out)
    command = "python bench/bench_transformer_zoo.py --out " + str(args.out)
    write_json(
        {"command": command, "environment": environment(), "load": loadavg(), "rows": rows},
        out / "transformer_zoo.json",
    )
    (out / "transformer_zoo.md").write_text(markdown(rows, command, loadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
