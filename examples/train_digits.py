"""Train the bundled default demo model for onnxprune on scikit-learn's digits.

Loads the 1797 8x8 digit images shipped with scikit-learn, trains a small CNN
deterministically on CPU, exports it to ONNX (legacy TorchScript exporter,
opset 17, dynamic batch) and writes calibration / held-out test data next to it.

Usage: python examples/train_digits.py [--out-dir DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from torch import nn

LOG = logging.getLogger("train_digits")
SEED = 0
N_TRAIN = 1437
N_CALIB = 128
BATCH = 64


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, y_train, x_test, y_test); x is [N,1,8,8] float32 in [0,1]."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    perm = np.random.RandomState(SEED).permutation(len(x))
    train, test = perm[:N_TRAIN], perm[N_TRAIN:]
    return x[train], y[train], x[test], y[test]


class DigitsCNN(nn.Module):
    """Small CNN: two convs, max-pool, one conv, then a two-layer MLP head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """Train with Adam (lr 1e-3, batch 64) using a seeded shuffle per epoch."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(xt), generator=gen).split(BATCH):
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        LOG.debug("epoch %d loss %.4f", epoch + 1, total / len(xt))
    model.eval()


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export with the legacy exporter (stable initializer names), opset 17, dynamic batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter is deliberate
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def main(argv: list[str] | None = None) -> None:
    """Train, export, verify with onnxruntime and write all artifacts."""
    parser = argparse.ArgumentParser(description="Train the onnxprune digits demo CNN.")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    start = time.perf_counter()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = load_data()
    model = DigitsCNN()
    train(model, x_train, y_train, args.epochs)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    torch_acc = float((torch_logits.argmax(1) == y_test).mean())

    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "digits_cnn.onnx"
    export_onnx(model, onnx_path)
    calib = np.random.RandomState(SEED).choice(N_TRAIN, N_CALIB, replace=False)
    np.savez_compressed(out / "digits_calib.npz", input=x_train[np.sort(calib)])
    np.savez_compressed(out / "digits_test.npz", input=x_test, label=y_test)

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"input": x_test})[0]
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    ort_acc = float((ort_logits.argmax(1) == y_test).mean())
    if max_diff > 1e-4 or ort_acc != torch_acc:
        raise RuntimeError(f"ONNX mismatch: max|diff|={max_diff:.2e}, acc {ort_acc} vs {torch_acc}")

    meta = {"test_accuracy": round(ort_acc, 6), "train_samples": N_TRAIN, "test_samples": len(y_test), "seed": SEED}
    (out / "digits_cnn.json").write_text(json.dumps(meta, indent=2) + "\n")
    LOG.info(
        "test accuracy %.4f (torch %.4f, max|logit diff| %.2e) in %.1fs -> %s",
        ort_acc,
        torch_acc,
        max_diff,
        time.perf_counter() - start,
        out,
    )


if __name__ == "__main__":
    main()
