"""2:4 SparseGPT / Wanda, block-sequential, on a small Llama-like decoder with external data, through the CLI.

The decoder comes from the builder of the scale benchmark (``bench/_decoder.py``, ~4 MB here): the
same command the benchmark runs on a 1.2 GB model must give a model that runs in onnxruntime, with
the 2:4 pattern holding on every projection and on the LM head.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxprune.cli import cli
from tests.conftest import REPO, data_files_of, sha256


@pytest.fixture(scope="module")
def decoder() -> ModuleType:
    """``bench/_decoder.py``, imported from ``bench/``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO / "bench"))
        return importlib.import_module("_decoder")


@pytest.fixture(scope="module")
def small(decoder: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    """A ~4 MB decoder (GQA: 4 query heads over 2 key/value heads) and 8 calibration samples."""
    config = decoder.DecoderConfig(hidden=128, layers=2, heads=4, kv_heads=2, ffn=256, vocab=3000, seq=16)
    folder = tmp_path_factory.mktemp("decoder")
    model = decoder.build_decoder(config, folder / "decoder.onnx")
    calib = folder / "calib.npz"
    np.savez(calib, **decoder.calibration_ids(config, samples=8))
    return config, model, calib


def test_builder_writes_every_weight_to_external_data_and_is_causal(
    decoder: ModuleType, small: tuple[object, Path, Path]
) -> None:
    config, model, calib = small
    data = model.with_name(model.name + ".data")
    assert data.stat().st_size == decoder.weight_bytes(config)
    assert 3_500_000 < data.stat().st_size < 5_000_000
    assert model.stat().st_size < 100_000  # the graph holds only the RoPE tables, mask and shapes
    ids = np.load(calib)["input_ids"]
    sess = ort.InferenceSession(str(model))
    logits = sess.run(None, {"input_ids": ids})[0]
    assert logits.shape == (8, 16, 3000) and np.isfinite(logits).all()
    changed = ids.copy()
    changed[:, -1] = (changed[:, -1] + 1) % 3000
    after = sess.run(None, {"input_ids": changed})[0]
    np.testing.assert_array_equal(after[:, :-1], logits[:, :-1])  # the causal mask: earlier positions unchanged
    assert not np.allclose(after[:, -1], logits[:, -1])


@pytest.mark.parametrize("importance", ["sparsegpt", "wanda"])
def test_cli_prunes_the_decoder_2_4_sequentially(
    decoder: ModuleType, small: tuple[object, Path, Path], importance: str, tmp_path: Path
) -> None:
    config, model, calib = small
    before = sha256(model.with_name(model.name + ".data"))
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    args = ["-q", "prune", str(model), "-o", str(out), "--pattern", "2:4", "--importance", importance]
    args += ["--sequential", "--calib", str(calib), "--report", str(report)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sha256(model.with_name(model.name + ".data")) == before
    assert data_files_of(out), "the result keeps its weights in external data"

    names = decoder.projection_names(config)
    changed = {e["tensor"] for p in json.loads(report.read_text())["passes"] for e in p["changed"]}
    assert changed == set(names)
    pruned = ir.load(out)
    weights = {name: pruned.graph.initializers[name].const_value.numpy() for name in names}
    assert decoder.nm_violations(weights, 2, 4) == {}
    for name, w in weights.items():
        assert np.count_nonzero(w) == w.size // 2, name  # exactly 2 of every 4 (random weights: no zeros before)

    ids = np.load(calib)["input_ids"]
    logits = ort.InferenceSession(str(out)).run(None, {"input_ids": ids})[0]
    assert logits.shape == (8, 16, 3000) and np.isfinite(logits).all()
    dense = ort.InferenceSession(str(model)).run(None, {"input_ids": ids})[0]
    assert not np.allclose(logits, dense)
