"""``validate --ep``: the CPU path, the one-line refusal of a missing provider, 2:4 weights and TensorRT's log.

The CUDA and TensorRT runs need onnxruntime-gpu and a GPU: they skip, saying so, where either is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxprune import _io, _providers
from onnxprune._providers import EP_CHOICES, ExecutionTarget, capture_native_stderr, resolve_ep
from onnxprune.calibration.sources import open_source
from onnxprune.cli import cli
from onnxprune.errors import OptionError
from onnxprune.sparse_kernels import parse_trt_sparsity, probe, sparse_kernel_report, two_four_weights
from tests.conftest import DIGITS, sha256

HAVE = ort.get_available_providers()
#: TensorRT's own sparsity lines (TensorRT developer guide, "Structured Sparsity"), as the EP logs them.
TRT_LOG = """\
2026-01-01 10:00:00.000 [I:onnxruntime:Default, tensorrt_execution_provider.h:88 log] [TRT] Building engine
[03/23/2021-00:14:05] [I] [TRT] (Sparsity) Layers eligible for sparse math: {eligible}
[03/23/2021-00:14:05] [I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: {picked}
"""


@pytest.fixture(scope="module")
def sparse24(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN pruned 2:4 (magnitude; the first conv, with one input channel, stays dense)."""
    out = tmp_path_factory.mktemp("ep") / "sparse24.onnx"
    args = ["--quiet", "prune", str(DIGITS / "digits_cnn.onnx"), "-o", str(out), "--pattern", "2:4"]
    result = CliRunner().invoke(cli, [*args, "--importance", "magnitude"])
    assert result.exit_code == 0, result.output
    return out


def _validate(*args: object) -> object:
    model = DIGITS / "digits_cnn.onnx"
    return CliRunner().invoke(cli, ["validate", str(model), *map(str, args), "--data", str(DIGITS / "digits_test.npz")])


def test_resolve_ep_gives_the_providers_with_cpu_as_fallback() -> None:
    assert EP_CHOICES == ("cpu", "cuda", "tensorrt")
    assert resolve_ep("cpu") == ExecutionTarget("cpu", ("CPUExecutionProvider",))
    with pytest.raises(OptionError, match="choose from cpu, cuda, tensorrt"):
        resolve_ep("npu")


@pytest.mark.skipif("CUDAExecutionProvider" in HAVE, reason="this onnxruntime has CUDA: nothing is missing")
@pytest.mark.parametrize("ep", ["cuda", "tensorrt"])
def test_a_missing_provider_is_one_line_exit_2_naming_the_available_ones(
    ep: str, tmp_path: Path, sparse24: Path
) -> None:
    report = tmp_path / "r.json"
    result = _validate(sparse24, "--ep", ep, "--report", report)
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.count("\n") == 0 and line.startswith(f"onnxprune: error: --ep {ep}: this onnxruntime has no ")
    assert "available: cpu (CPUExecutionProvider)" in line and "onnxruntime-gpu" in line
    assert not report.exists()


def test_a_provider_that_did_not_load_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu without CUDA libraries falls back to the CPU silently: that must not pass as a GPU run."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    target = resolve_ep("cuda")
    assert target.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    model = _io.load(DIGITS / "digits_cnn.onnx")
    feed = next(iter(open_source(str(DIGITS / "digits_test.npz"), model, samples=1).batches(1)))
    cpu_only = ExecutionTarget("cuda", ("CPUExecutionProvider",))  # what a failed CUDA load leaves
    with pytest.raises(Exception, match="CUDAExecutionProvider did not load for the reference model"):
        probe(model, cpu_only, feed, "reference model")


def test_cpu_path_reports_latency_fidelity_and_the_provider(tmp_path: Path, sparse24: Path) -> None:
    before = sha256(sparse24)
    report = tmp_path / "r.json"
    result = _validate(sparse24, "--ep", "cpu", "--report", report)
    assert result.exit_code == 0, result.output
    assert "execution provider: CPUExecutionProvider (--ep cpu)" in result.output
    data = json.loads(report.read_text())
    validation = data["validation"]
    assert validation["execution_provider"] == {"ep": "cpu", "provider": "CPUExecutionProvider"}
    assert validation["latency_ref_ms"] > 0 and validation["latency_cand_ms"] > 0
    assert 0.8 < validation["outputs"][0]["top1_agreement"] <= 1.0 and "sparse_kernels" not in validation
    same = _validate(DIGITS / "digits_cnn.onnx", "--ep", "cpu", "--report", report)
    assert same.exit_code == 0 and json.loads(report.read_text())["validation"]["outputs"][0]["max_abs_diff"] == 0
    assert sha256(sparse24) == before


def test_two_four_weights_are_found(sparse24: Path) -> None:
    found = {e["tensor"]: e for e in two_four_weights(_io.load(sparse24))}
    dense = {e["tensor"]: e for e in two_four_weights(_io.load(DIGITS / "digits_cnn.onnx"))}
    assert found.keys() == dense.keys()
    assert sum(e["two_four"] for e in found.values()) == len(found) - 1  # all but the 1-channel first conv
    first = next(e for e in found.values() if not e["two_four"])
    assert first["reason"] == "input dim 1 not a multiple of 4"
    assert not any(e["two_four"] for e in dense.values())
    assert all(0.0 <= e["groups_2_4"] < 1.0 for e in dense.values())


def test_trt_log_lines_are_parsed_and_mapped_to_nodes(sparse24: Path) -> None:
    model = _io.load(sparse24)
    layers = [e for e in two_four_weights(model) if e["two_four"]]
    a, b = layers[0]["nodes"][0], layers[1]["nodes"][0]
    log = TRT_LOG.format(eligible=f"{a} + relu_1, {b}", picked=f"{b}")
    assert parse_trt_sparsity(log) == {"eligible": [f"{a} + relu_1", b], "picked": [b]}
    report = sparse_kernel_report(model, log)
    by_node = {e["nodes"][0]: e for e in report["layers"]}
    assert by_node[a]["eligible"] and not by_node[a]["sparse_kernel"]
    assert by_node[b]["eligible"] and by_node[b]["sparse_kernel"]
    assert report["log"] == "parsed" and report["two_four"] == len(layers)
    assert parse_trt_sparsity("no sparsity lines here") is None
    blind = sparse_kernel_report(model, "")
    assert blind["log"] == "absent" and all(e["sparse_kernel"] is None for e in blind["layers"])


def test_native_stderr_is_captured() -> None:
    import os

    with capture_native_stderr() as captured:
        os.write(2, b"[TRT] (Sparsity) Layers eligible for sparse math: conv1\n")
    assert "eligible for sparse math: conv1" in captured[0]


def test_tensorrt_path_reports_sparse_kernels(tmp_path: Path, sparse24: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring of ``--ep tensorrt`` with onnxruntime's TensorRT EP stood in for by the CPU and a canned log."""
    model = _io.load(sparse24)
    node = next(e for e in two_four_weights(model) if e["two_four"])["nodes"][0]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [*HAVE, "TensorrtExecutionProvider"])
    options: list[dict] = []
    real_resolve = resolve_ep

    def resolve(name: str, given: dict | None = None) -> ExecutionTarget:
        target = real_resolve(name, given)
        if given:
            options.append(dict(given))
        return ExecutionTarget(target.ep, ("CPUExecutionProvider",))

    def canned_probe(model: object, target: ExecutionTarget, feed: object, what: str, threads: object = None) -> str:
        return TRT_LOG.format(eligible=node, picked=node)

    monkeypatch.setattr("onnxprune._cli_validate.resolve_ep", resolve)
    monkeypatch.setattr("onnxprune._cli_validate.probe", canned_probe)
    monkeypatch.setattr(_providers, "check_session", lambda *a: None)
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        ["validate", str(DIGITS / "digits_cnn.onnx"), str(sparse24), "--ep", "tensorrt", "--report", str(report)],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert options[0]["trt_sparsity_enable"] == "True" and options[0]["trt_engine_cache_path"]
    assert "2:4 weights and TensorRT sparse kernels" in result.output
    kernels = json.loads(report.read_text())["validation"]["sparse_kernels"]
    picked = [e for e in kernels["layers"] if e["sparse_kernel"]]
    assert [e["nodes"][0] for e in picked] == [node]


requires_gpu = pytest.mark.skipif(
    "CUDAExecutionProvider" not in HAVE, reason="needs onnxruntime-gpu with the CUDA execution provider and a GPU"
)


@requires_gpu
def test_cuda_run(tmp_path: Path, sparse24: Path) -> None:
    report = tmp_path / "r.json"
    result = _validate(sparse24, "--ep", "cuda", "--report", report)
    assert result.exit_code == 0, result.output
    validation = json.loads(report.read_text())["validation"]
    assert validation["execution_provider"]["provider"] == "CUDAExecutionProvider"
    assert validation["outputs"][0]["cosine"] > 0.9


@pytest.mark.skipif("TensorrtExecutionProvider" not in HAVE, reason="needs onnxruntime-gpu with TensorRT and a GPU")
def test_tensorrt_run(tmp_path: Path, sparse24: Path) -> None:
    report = tmp_path / "r.json"
    result = _validate(sparse24, "--ep", "tensorrt", "--report", report)
    assert result.exit_code == 0, result.output
    kernels = json.loads(report.read_text())["validation"]["sparse_kernels"]
    assert kernels["two_four"] >= 1 and all(isinstance(e["two_four"], bool) for e in kernels["layers"])
    if kernels["log"] == "parsed":  # the eligible layers are the 2:4 ones
        assert {e["tensor"] for e in kernels["layers"] if e["eligible"]} <= {
            e["tensor"] for e in kernels["layers"] if e["two_four"]
        }
    assert np.isfinite(json.loads(report.read_text())["validation"]["latency_cand_ms"])
