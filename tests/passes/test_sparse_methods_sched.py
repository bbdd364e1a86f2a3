"""In-loop schedule methods: PLATON's moving averages and cubic schedule, Campfire's whole kernels and
frozen mask, Early-Bird's stop when the channel mask stabilizes; the written models run in onnxruntime,
bad options are one line and exit 2, and the presets' recipes run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from click.testing import CliRunner
from onnx import helper, numpy_helper

from onnxprune import _io
from onnxprune.calibration.sources import open_source
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import FinetuneConfig, FinetunePass
from onnxprune.passes._schedules import cubic_sparsity
from onnxprune.passes._sparse_methods import SPARSE_METHODS, method_options
from onnxprune.presets import PRESETS
from tests.conftest import DIGITS, ort_run, to_ir
from tests.models.lowrank_models import gemm_layer

torch = pytest.importorskip("torch")

from onnxprune.passes._early_bird import MaskWindow, mask_distance  # noqa: E402
from onnxprune.passes._layouts import layouts  # noqa: E402
from onnxprune.passes._train import Masks, TrainData, TrainSettings, train  # noqa: E402
from onnxprune.torchview import TorchView  # noqa: E402

CONVS = ("features.0.weight", "features.2.weight", "features.5.weight")


def _settings(**overrides: object) -> TrainSettings:
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    known = {k: v for k, v in dataclasses.asdict(FinetuneConfig()).items() if k in fields}
    return TrainSettings(**{**known, "lr": 1e-3, "eval_every": 10, **overrides})


def _digits_pass(method: str, steps: int, patience: int | None = 5, **options: object) -> tuple[onnx.ModelProto, dict]:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    context = PassContext(
        calibration=open_source(DIGITS / "digits_calib.npz", model), reference=_io.load(DIGITS / "digits_cnn.onnx")
    )
    config = FinetuneConfig(steps=steps, lr=1e-3, patience=patience, method=method, method_options=options)
    result = FinetunePass(config, context)(model)
    return onnx_proto(model), result.report.details["method"]


def onnx_proto(model: object) -> onnx.ModelProto:
    import onnx_ir as ir

    return ir.to_proto(model)


def _tensors(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_platon_moving_averages_match_a_hand_computation() -> None:
    model = to_ir(gemm_layer(6, 4, seed=0))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.standard_normal((8, 4)).astype(np.float32)
    view = TorchView(model)
    masks = Masks(view, ["W"])
    settings = _settings(steps=3, batch_size=8, lr=0.05, optimizer="sgd", momentum=0.0, schedule="constant")
    options = method_options("platon", {"sparsity": 0.5, "every": 1, "initial_warmup": 0.9, "final_warmup": 0.0})
    run = SPARSE_METHODS["platon"].start(options, settings, masks, view)
    w = numpy_helper.to_array(next(t for t in gemm_layer(6, 4, seed=0).graph.initializer if t.name == "W"))
    c = numpy_helper.to_array(next(t for t in gemm_layer(6, 4, seed=0).graph.initializer if t.name == "c"))
    w, c = w.astype(np.float64), c.astype(np.float64)
    train(view, TrainData({"x": x}, {"y": y}), settings, masks, method=run)

    # by hand: loss = mean((x Wᵀ + c − y)²) / mean(y²), plain SGD, I = |W ⊙ ∂L/∂W|, then the two averages
    scale = float(np.mean(y.astype(np.float64) ** 2))
    ema, unc = np.zeros_like(w), np.zeros_like(w)
    for _ in range(3):
        residual = x @ w.T + c - y
        grad_w = 2 * residual.T @ x / (residual.size * scale)
        grad_c = 2 * residual.sum(0) / (residual.size * scale)
        importance = np.abs(w * grad_w)
        ema = 0.85 * ema + 0.15 * importance
        unc = 0.95 * unc + 0.05 * np.abs(importance - ema)
        w, c = w - 0.05 * grad_w, c - 0.05 * grad_c
    np.testing.assert_allclose(run.ema["W"].numpy(), ema, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(run.uncertainty["W"].numpy(), unc, rtol=1e-4, atol=1e-9)
    # the one masking step (the end of the schedule) keeps the half with the highest Ī·Ū
    score = (ema * unc).reshape(-1)
    expected = np.ones(score.size, bool)
    expected[np.argsort(score, kind="stable")[: score.size // 2]] = False
    assert np.array_equal(masks.keep["W"].numpy().reshape(-1), expected)


def test_platon_follows_the_cubic_schedule_to_the_target_and_writes_a_model_onnxruntime_runs() -> None:
    proto, details = _digits_pass("platon", 60, sparsity=0.7, every=5, initial_warmup=0.1, final_warmup=0.2)
    first, last = details["warmup_until"], details["final_from"]
    assert (first, last) == (6, 48)
    rows = details["schedule"]
    assert [r["step"] for r in rows] == [10, 15, 20, 25, 30, 35, 40, 45, 48]
    for row in rows:
        assert row["target"] == pytest.approx(cubic_sparsity(row["step"] - first, last - first, 0.0, 0.7))
        assert row["sparsity"] == pytest.approx(row["target"], abs=1e-3)
    assert rows[-1]["sparsity"] == pytest.approx(0.7, abs=1e-3)
    tensors = _tensors(proto)
    names = (*CONVS, "classifier.1.weight", "classifier.3.weight")
    zeros = sum(int(np.sum(tensors[n] == 0)) for n in names) / sum(tensors[n].size for n in names)
    assert zeros == pytest.approx(0.7, abs=1e-3)
    with np.load(DIGITS / "digits_test.npz") as test:
        logits = ort_run(proto, {"input": test["input"][:16]})["logits"]
    assert logits.shape == (16, 10) and np.isfinite(logits).all()


def test_campfire_zeroes_whole_kernels_only_and_keeps_linear_layers_dense() -> None:
    proto, details = _digits_pass("campfire", 40, sparsity=0.6, every=5, end=0.5, linear="keep")
    tensors = _tensors(proto)
    for name in CONVS:
        kernels = tensors[name].reshape(-1, 9)
        zeros = (kernels == 0).sum(1)
        assert set(zeros.tolist()) <= {0, 9}, name  # a kernel is all zero or untouched
        assert np.mean(zeros == 9) == pytest.approx(round(0.6 * len(kernels)) / len(kernels))
    assert np.count_nonzero(tensors["classifier.1.weight"]) == tensors["classifier.1.weight"].size
    assert details["schedule"][-1]["block_sparsity"] == pytest.approx(0.6, abs=0.01)
    with np.load(DIGITS / "digits_test.npz") as test:
        assert np.isfinite(ort_run(proto, {"input": test["input"][:8]})["logits"]).all()


def test_campfire_filters_and_rows() -> None:
    proto, _ = _digits_pass("campfire", 20, sparsity=0.5, every=2, block="filter", linear="rows")
    tensors = _tensors(proto)
    for name in (*CONVS, "classifier.1.weight"):
        rows = tensors[name].reshape(tensors[name].shape[0], -1)
        dead = np.all(rows == 0, axis=1)
        assert np.all(dead | np.all(rows != 0, axis=1)), name
        assert dead.mean() == pytest.approx(0.5, abs=0.07)


def test_campfire_mask_is_constant_after_freeze_after() -> None:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    view = TorchView(model)
    masks = Masks(view, [*CONVS, "classifier.1.weight"])
    with np.load(DIGITS / "digits_calib.npz") as calib:
        x = calib["input"]
    teacher = ort_run(model, {"input": x})
    settings = _settings(steps=40, batch_size=16)
    options = method_options("campfire", {"sparsity": 0.8, "every": 4, "end": 0.75, "freeze_after": 0.4})
    run = SPARSE_METHODS["campfire"].start(options, settings, masks, view)
    seen: list[dict[str, torch.Tensor]] = []
    train(
        view,
        TrainData({"input": x}, teacher),
        settings,
        masks,
        method=run,
        on_step=lambda *_: seen.append({n: k.clone() for n, k in masks.keep.items()}),
    )
    assert run.settled_at(40) == 17  # frozen after 0.4 × 40 steps
    assert [r["step"] for r in run.schedule] == [4, 8, 12, 16]
    for keep in seen[16:]:
        assert all(torch.equal(keep[n], seen[16][n]) for n in keep)
    assert 0 < masks.sparsity < 0.8  # frozen short of the target


def _separated(path: Path) -> Path:
    """The digits CNN with the output channels of every hidden layer split into strong and weak halves."""
    proto = onnx.load(str(DIGITS / "digits_cnn.onnx"))
    for init in proto.graph.initializer:
        if init.name in (*CONVS, "classifier.1.weight"):
            array = numpy_helper.to_array(init).copy()
            array[: len(array) // 2] *= 10
            array[len(array) // 2 :] *= 0.1
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(proto, str(path))
    return path


def _cli(*args: object) -> object:
    return CliRunner().invoke(cli, ["-q", *map(str, args)])


def test_early_bird_stops_at_the_first_window_when_the_mask_is_stable(tmp_path: Path) -> None:
    model = _separated(tmp_path / "sep.onnx")
    out, report = tmp_path / "eb.onnx", tmp_path / "r.json"
    result = _cli(
        "finetune", model, "-o", out, "--teacher", model, "--calib", DIGITS / "digits_calib.npz", "--steps", 200,
        "--lr", 1e-5, "--method", "early_bird", "--method-option", "every=2", "--method-option", "window=5",
        "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    finetune = json.loads(report.read_text())["passes"][0]
    details = finetune["details"]["method"]
    assert details["found_at"] == 10 and finetune["summary"]["steps"] == 10
    assert [r["step"] for r in details["curve"]] == [2, 4, 6, 8, 10]
    assert details["curve"][-1]["distance"] == 0.0 and details["curve"][0]["distance"] is None
    assert details["watched"] == sorted((*CONVS, "classifier.1.weight"))  # not the logits layer
    with np.load(DIGITS / "digits_test.npz") as test:
        assert np.isfinite(ort_run(_io.load(out), {"input": test["input"][:8]})["logits"]).all()


def test_early_bird_never_stops_while_the_masks_keep_changing() -> None:
    window = MaskWindow(3)
    a, b = torch.tensor([True, True, False, False]), torch.tensor([False, False, True, True])
    distances = [window.push(m) for m in (a, b, a, b, a, b)]
    assert distances == [None, None, 1.0, 1.0, 1.0, 1.0]
    assert mask_distance(a, torch.tensor([True, False, False, False])) == 0.25
    proto, details = _digits_pass("early_bird", 30, patience=None, every=3, window=3, eps=0.0)
    assert details["found_at"] is None and len(details["curve"]) == 10


def _conv_bn_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(np.exp(rng.uniform(-3, 3, 8)).astype(np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(8, np.float32), "beta"),
        numpy_helper.from_array(np.zeros(8, np.float32), "mean"),
        numpy_helper.from_array(np.ones(8, np.float32), "var"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"]),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Conv", ["r", "W2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_early_bird_reads_the_batchnorm_scale_and_refuses_bn_without_one() -> None:
    view = TorchView(to_ir(_conv_bn_model()))
    found = layouts(view, ["W1", "W2"])
    assert found["W1"].bn_scale == "gamma" and not found["W1"].feeds_output
    assert found["W2"].feeds_output and found["W2"].out_axis == 0
    masks = Masks(view, ["W1", "W2"])
    run = SPARSE_METHODS["early_bird"].start(method_options("early_bird", {}), _settings(), masks, view)
    gamma = view.parameter("gamma").detach()
    assert torch.equal(run.scores()["W1"], gamma.abs())
    assert int(run.channel_mask().sum()) == 4 and torch.equal(run.channel_mask(), gamma > gamma.median())
    digits = TorchView(_io.load(DIGITS / "digits_cnn.onnx"))
    with pytest.raises(RecipeError, match="no BatchNormalization"):
        SPARSE_METHODS["early_bird"].start(
            method_options("early_bird", {"importance": "bn"}), _settings(), Masks(digits, list(CONVS)), digits
        )


@pytest.mark.parametrize("name", ["platon", "campfire", "early-bird"])
def test_presets_recipes_run(tmp_path: Path, name: str) -> None:
    preset = PRESETS[name]
    short = {"steps": 20, "lr": 1e-3}  # no learning-rate probe
    passes = [dict(p, config={**p["config"], **short}) if p["name"] == "finetune" else p for p in preset.passes]
    for spec in passes:
        if spec["name"] == "finetune" and "method" in spec["config"]:
            spec["config"]["method_options"] = {**spec["config"]["method_options"], "every": 2}
    out = tmp_path / "out.onnx"
    recipe = {
        "model": str(DIGITS / "digits_cnn.onnx"),
        "output": str(out),
        "calibration": {"path": str(DIGITS / "digits_calib.npz")},
        "passes": passes,
        "validate": False,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = _cli("run", path)
    assert result.exit_code == 0, result.output
    with np.load(DIGITS / "digits_test.npz") as test:
        logits = ort_run(_io.load(out), {"input": test["input"][:8]})["logits"]
    assert logits.shape == (8, 10) and np.isfinite(logits).all()
