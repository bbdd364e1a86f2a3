"""A trained model on real data: PP-OCRv4 recognition keeps its character accuracy under SparseGPT 50%.

Uses the harness of the real-model benchmark (``bench/_real_models.py``): the recognizer shipped in the
``rapidocr_onnxruntime`` wheel, 16 rendered calibration lines and 32 other evaluation lines.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from onnxprune.cli import cli
from tests.conftest import REPO


@pytest.mark.slow
def test_ocr_rec_sparsegpt_keeps_char_accuracy(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from _real_models import evaluate, prepare_ocr_rec

    case = prepare_ocr_rec(calib=16, evaluate=32, root=tmp_path)
    dense = evaluate(case.model, case)
    assert dense >= 0.9, f"dense char accuracy {dense:.3f}: the rendering or preprocessing is off"

    out = tmp_path / "rec_sparsegpt50.onnx"
    args = ["prune", str(case.model), "-o", str(out), "--importance", "sparsegpt", "--sparsity", "0.5"]
    result = CliRunner().invoke(cli, ["--quiet", *args, "--calib", str(case.calib)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pruned = evaluate(out, case)
    assert pruned >= 0.9, f"char accuracy {dense:.3f} -> {pruned:.3f} after SparseGPT 50%"
