"""Prune the bundled digits CNN with the onnxprune Python API.

Two ways to run passes:

1. An onnxprune ``Pipeline``: 50% unstructured Wanda pruning with calibration data, validated in
   onnxruntime against the original before saving.
2. An ``onnx_ir.passes.PassManager`` mixing an onnxprune pass (2:4 sparsity) with an onnx-ir common
   pass (``RemoveUnusedNodesPass``); onnxprune passes are ordinary onnx-ir in-place passes.
3. A ``Pipeline`` that removes channels and then factorizes what remains (activation-aware SVD).

Usage: python examples/02_python_api/prune.py [--out DIR] [--sparsity 0.5]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from onnx_ir.passes.common import RemoveUnusedNodesPass

import onnxprune
from onnxprune.analysis.flops import count_params
from onnxprune.calibration import ArraySource, input_specs, open_source
from onnxprune.passes import (
    ChannelPruneConfig,
    ChannelPrunePass,
    CleanupPass,
    LowRankConfig,
    LowRankPass,
    NMPruneConfig,
    NMPrunePass,
    UnstructuredPruneConfig,
    UnstructuredPrunePass,
)
from onnxprune.verify import validate

DATA = Path(__file__).resolve().parents[1] / "data"
logger = logging.getLogger("prune_example")


def accuracy(model: ir.Model, test: dict[str, np.ndarray]) -> float:
    """Top-1 accuracy of ``model`` on the held-out digits."""
    sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": test["input"]})[0]
    return float(np.mean(logits.argmax(axis=1) == test["label"]))


def prune_with_pipeline(test: dict[str, np.ndarray], sparsity: float, out: Path) -> Path:
    """Wanda pruning in an onnxprune Pipeline, validated against the original, then saved."""
    model = onnxprune.load(DATA / "digits_cnn.onnx")
    reference = onnxprune.load(DATA / "digits_cnn.onnx")  # an untouched copy to validate against
    # Data-driven passes read calibration statistics from the context the pipeline shares.
    context = onnxprune.PassContext(calibration=open_source(DATA / "digits_calib.npz", model))
    config = UnstructuredPruneConfig(sparsity=sparsity, importance="wanda", keep_first=True)
    result = onnxprune.Pipeline([UnstructuredPrunePass(config)], context)(model)
    for report in result.reports:
        logger.info("%s: %s (%d skipped)", report.name, report.summary, len(report.skipped))

    # Validation inputs can be any in-memory arrays; `label` is not a model input, so leave it out.
    data = ArraySource({"input": test["input"]}, input_specs(reference), "digits_test")
    validation = validate(reference, model, data, latency_runs=10)
    fidelity = validation.outputs[0]
    logger.info(
        "validation: cosine %.4f, top-1 agreement %.4f, latency %.3f -> %.3f ms",
        fidelity.mean_cosine,
        fidelity.top1_agreement,
        validation.latency_ref_ms,
        validation.latency_cand_ms,
    )
    logger.info(
        "accuracy: dense %.4f, wanda %.0f%% %.4f", accuracy(reference, test), 100 * sparsity, accuracy(model, test)
    )
    return onnxprune.save(model, out / f"digits_cnn_wanda{round(100 * sparsity)}.onnx")


def prune_with_pass_manager(test: dict[str, np.ndarray], out: Path) -> Path:
    """2:4 sparsity composed with an onnx-ir common pass in an ``onnx_ir`` PassManager."""
    model = onnxprune.load(DATA / "digits_cnn.onnx")
    manager = ir.passes.PassManager([NMPrunePass(NMPruneConfig(n=2, m=4)), RemoveUnusedNodesPass()])
    result = manager(model)
    logger.info("pass manager: modified=%s, accuracy 2:4 %.4f", result.modified, accuracy(result.model, test))
    return onnxprune.save(result.model, out / "digits_cnn_2of4.onnx")


def prune_then_factorize(test: dict[str, np.ndarray], out: Path) -> Path:
    """25% of the channels removed, then activation-aware low-rank factorization at 95% energy."""
    model = onnxprune.load(DATA / "digits_cnn.onnx")
    dense_params = count_params(model)[0]
    context = onnxprune.PassContext(calibration=open_source(DATA / "digits_calib.npz", model))
    passes = [
        ChannelPrunePass(ChannelPruneConfig(ratio=0.25, importance="wanda")),
        LowRankPass(LowRankConfig(energy=0.95, activation_aware=True)),
        CleanupPass(),
    ]
    result = onnxprune.Pipeline(passes, context)(model)
    for report in result.reports[:2]:
        logger.info("%s: %s", report.name, report.summary)
    params = count_params(model)[0]
    logger.info("params %d -> %d, accuracy %.4f", dense_params, params, accuracy(model, test))
    return onnxprune.save(model, out / "digits_cnn_channels25_lowrank.onnx")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, prune twice and write both models into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out", help="output folder")
    parser.add_argument("--sparsity", type=float, default=0.5, help="unstructured sparsity for the Wanda pipeline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with np.load(DATA / "digits_test.npz") as archive:
        test = {key: archive[key] for key in archive.files}
    wanda = prune_with_pipeline(test, args.sparsity, args.out)
    nm = prune_with_pass_manager(test, args.out)
    both = prune_then_factorize(test, args.out)
    print(f"wrote {wanda}, {nm} and {both}")


if __name__ == "__main__":
    main()
