"""Run an onnxprune pass on an onnx-graphsurgeon graph.

Loads the bundled digits CNN with onnx, imports it into onnx-graphsurgeon, applies 2:4 sparsity
through ``onnxprune.graphsurgeon``, exports the result and checks it in onnxruntime.

Usage: python examples/03_graphsurgeon/prune_gs.py [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnxprune.graphsurgeon import run_on_graphsurgeon_with_result
from onnxprune.passes import NMPruneConfig, NMPrunePass

DATA = Path(__file__).resolve().parents[1] / "data"
logger = logging.getLogger("prune_gs_example")


def accuracy(model: onnx.ModelProto, test: dict[str, np.ndarray]) -> float:
    """Top-1 accuracy of ``model`` on the held-out digits."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": test["input"]})[0]
    return float(np.mean(logits.argmax(axis=1) == test["label"]))


def main(argv: Sequence[str] | None = None) -> None:
    """Prune with 2:4 sparsity on a graphsurgeon graph and write ``digits_cnn_2of4_gs.onnx``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out", help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    graph = gs.import_onnx(onnx.load(DATA / "digits_cnn.onnx"))
    pruned, result = run_on_graphsurgeon_with_result(NMPrunePass(NMPruneConfig(n=2, m=4)), graph)
    logger.info("2:4: %s", result.report.summary)
    for skip in result.report.skipped:
        logger.info("skipped %s (%s): %s", skip["tensor"], skip["op"], skip["reason"])

    # The result is an ordinary graphsurgeon graph: same node names, opset and IR version.
    if [node.name for node in pruned.nodes] != [node.name for node in graph.nodes]:
        raise RuntimeError("node names changed in the round trip")
    model = gs.export_onnx(pruned)
    onnx.checker.check_model(model)

    with np.load(DATA / "digits_test.npz") as archive:
        test = {key: archive[key] for key in archive.files}
    logger.info("accuracy: dense %.4f, 2:4 %.4f", accuracy(gs.export_onnx(graph), test), accuracy(model, test))

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "digits_cnn_2of4_gs.onnx"
    onnx.save(model, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
