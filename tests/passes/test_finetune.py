"""Fine-tuning through the torch view: only trainable tensors change, masks hold, write-back matches torch in
onnxruntime, accuracy recovers, the graph is otherwise unchanged, schedules and gradual pruning behave."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune import _io
from onnxprune.calibration.sources import ArraySource, input_specs, open_source
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, OnnxPruneError, RecipeError
from onnxprune.passes import (
    ChannelPruneConfig,
    ChannelPrunePass,
    FinetuneConfig,
    FinetunePass,
    NMPruneConfig,
    NMPrunePass,
    UnstructuredPruneConfig,
    UnstructuredPrunePass,
)
from onnxprune.passes._schedules import cubic_sparsity, learning_rate, silo_peak
from onnxprune.passes.finetune import MIN_HOLDOUT, require_torch, split_holdout
from onnxprune.pipeline import Pipeline
from tests.conftest import DIGITS, data_files_of, ort_run, sha256, to_ir
from tests.models.lowrank_models import conv_layer

torch = pytest.importorskip("torch")

DIGIT_WEIGHTS = ("features.0.weight", "features.2.weight", "features.5.weight", "classifier.1.weight")


def _digits(*passes, reference: bool = True) -> tuple[ir.Model, PassContext]:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    context = PassContext(
        calibration=open_source(DIGITS / "digits_calib.npz", model),
        reference=_io.load(DIGITS / "digits_cnn.onnx") if reference else None,
    )
    if passes:
        Pipeline(list(passes), context)(model)
    return model, context


def _accuracy(model: ir.Model) -> float:
    with np.load(DIGITS / "digits_test.npz") as test:
        logits = ort_run(model, {"input": test["input"]})["logits"]
        return float(np.mean(logits.argmax(1) == test["label"]))


def _structure(model: ir.Model) -> tuple:
    proto = ir.to_proto(model)
    nodes = [(n.name, n.op_type, n.domain, tuple(n.input), tuple(n.output)) for n in proto.graph.node]
    inits = [(t.name, t.data_type, tuple(t.dims)) for t in proto.graph.initializer]
    return nodes, inits, sorted((o.domain, o.version) for o in proto.opset_import), proto.ir_version


def _tensors(model: ir.Model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in ir.to_proto(model).graph.initializer}


def test_fine_tuning_recovers_accuracy_and_keeps_the_graph() -> None:
    model, context = _digits(ChannelPrunePass(ChannelPruneConfig(ratio=0.5, reconstruct=False)))
    before_acc, structure = _accuracy(model), _structure(model)
    result = FinetunePass(FinetuneConfig(steps=300), context)(model)
    assert _structure(model) == structure
    assert before_acc < 0.7 and _accuracy(model) >= 0.95  # measured 0.500 -> 0.978
    summary = result.report.summary
    assert summary["loss_last"] < 0.1 * summary["loss_first"]


def test_one_step_changes_only_trainable_tensors() -> None:
    proto = conv_layer(batchnorm=True, pads=[1, 1, 1, 1])
    teacher = to_ir(proto)
    student = to_ir(proto)
    weight = student.graph.initializers["W"]
    weight.const_value = ir.Tensor(weight.const_value.numpy() * 0.5, name="W")
    x = np.random.default_rng(0).standard_normal((16, 12, 9, 9)).astype(np.float32)
    context = PassContext(calibration=ArraySource({"x": x}, input_specs(student), "calib"), reference=teacher)
    before = _tensors(student)
    structure = _structure(student)
    FinetunePass(FinetuneConfig(steps=1, batch_size=8, lr=1e-3, holdout=0), context)(student)
    after = _tensors(student)
    assert _structure(student) == structure
    for name in ("mean", "var"):  # BatchNorm statistics are not trained
        assert np.array_equal(before[name], after[name]), name
    for name in ("W", "bias", "gamma", "beta"):
        assert not np.array_equal(before[name], after[name]), name


def test_masks_hold_after_training() -> None:
    model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.8, scope="global")))
    zeros = {name: w == 0 for name, w in _tensors(model).items() if name in DIGIT_WEIGHTS}
    FinetunePass(FinetuneConfig(steps=50), context)(model)
    after = _tensors(model)
    for name, mask in zeros.items():
        assert np.all(after[name][mask] == 0), name
    model, context = _digits(NMPrunePass(NMPruneConfig(n=2, m=4)))
    FinetunePass(FinetuneConfig(steps=30), context)(model)
    for name in DIGIT_WEIGHTS[1:]:
        w = _tensors(model)[name]
        rows = np.moveaxis(w, 1, -1).reshape(-1, 4)
        assert (np.count_nonzero(rows, axis=1) <= 2).all(), name


def test_write_back_reproduces_the_torch_outputs_in_onnxruntime() -> None:
    from onnxprune.torchview import TorchView, write_back

    model = _io.load(DIGITS / "digits_cnn.onnx")
    view = TorchView(model)
    with torch.no_grad():
        for p in view.parameters():
            p.add_(0.01 * torch.randn_like(p))
    with np.load(DIGITS / "digits_test.npz") as test:
        feeds = {"input": test["input"][:32]}
    expected = view.run_numpy(feeds)["logits"]
    written = write_back(view, model)
    assert set(written) == set(view.named_tensors())
    got = ort_run(model, feeds)["logits"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_seed_makes_it_deterministic() -> None:
    results = []
    for _ in range(2):
        model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5)))
        FinetunePass(FinetuneConfig(steps=20, seed=3, final_sparsity=0.7, drop_out=0.5, drop_in=0.05), context)(model)
        results.append(_tensors(model))
    for name in results[0]:
        assert np.array_equal(results[0][name], results[1][name]), name


def test_labels_add_cross_entropy(tmp_path: Path) -> None:
    with np.load(DIGITS / "digits_calib.npz") as calib:
        n = calib["input"].shape[0]
    with np.load(DIGITS / "digits_test.npz") as test:
        labels = test["label"][:n]  # any aligned integers will do for the loss path
    np.savez(tmp_path / "labels.npz", labels=labels.astype(np.int64))
    model, context = _digits()
    result = FinetunePass(FinetuneConfig(steps=5, labels=str(tmp_path / "labels.npz")), context)(model)
    assert result.report.summary["labels"] is True
    np.savez(tmp_path / "bad.npz", a=labels, b=labels)
    with pytest.raises(OnnxPruneError, match="one array"):
        FinetunePass(FinetuneConfig(steps=1, labels=str(tmp_path / "bad.npz")), context)(model)


@pytest.mark.parametrize(
    "config, sparsity",
    [
        ({"final_sparsity": 0.8}, 0.8),
        ({"final_sparsity": 0.8, "cycles": 3, "rewind": True, "schedule": "slr"}, 0.8),
        ({"final_sparsity": 0.8, "cycles": 3, "schedule": "silo", "optimizer": "sgd", "lr": 0.01}, 0.8),
        ({"final_sparsity": 0.8, "drop_out": 0.7, "drop_in": 0.02}, 0.8),
    ],
    ids=["cubic", "imp_rewind_slr", "imp_silo", "drop_pruning"],
)
def test_gradual_pruning_reaches_the_final_sparsity(config: dict, sparsity: float) -> None:
    model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5)))
    result = FinetunePass(FinetuneConfig(steps=60, **config), context)(model)
    assert result.report.summary["sparsity_after"] == pytest.approx(sparsity, abs=0.01)
    tensors = _tensors(model)
    zeros = sum(int(np.sum(tensors[n] == 0)) for n in DIGIT_WEIGHTS + ("classifier.3.weight",))
    total = sum(tensors[n].size for n in DIGIT_WEIGHTS + ("classifier.3.weight",))
    assert zeros / total == pytest.approx(sparsity, abs=0.01)


def test_schedules() -> None:
    assert learning_rate("constant", 0.1, 50, 100) == 0.1
    assert learning_rate("cosine", 0.1, 0, 100) == pytest.approx(0.1)
    assert learning_rate("cosine", 0.1, 100, 100) == pytest.approx(0.0, abs=1e-12)
    # SLR restarts every cycle: warm-up from ~0, then down
    assert learning_rate("slr", 0.1, 0, 90, cycles=3) < learning_rate("slr", 0.1, 3, 90, cycles=3)
    assert learning_rate("slr", 0.1, 30, 90, cycles=3) == learning_rate("slr", 0.1, 0, 90, cycles=3)
    assert silo_peak(0.03, 0.2, 0.04, 5) < silo_peak(0.03, 0.8, 0.04, 5) < 0.03 + 0.04
    assert learning_rate("silo", 0.03, 9, 100, sparsity=0.5) == pytest.approx(silo_peak(0.03, 0.5, 0.04, 5))
    assert learning_rate("silo", 0.03, 70, 100, sparsity=0.5) == pytest.approx(silo_peak(0.03, 0.5, 0.04, 5) / 100)
    assert cubic_sparsity(0, 10, 0.5, 0.9) == 0.5 and cubic_sparsity(10, 10, 0.5, 0.9) == 0.9
    assert 0.5 < cubic_sparsity(5, 10, 0.5, 0.9) < 0.9


def test_missing_teacher_torch_and_bad_configs_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model, context = _digits(reference=False)
    with pytest.raises(RecipeError, match="needs a teacher"):
        FinetunePass(FinetuneConfig(steps=1), context)(model)
    for bad in (
        {"schedule": "step"},
        {"optimizer": "lbfgs"},
        {"final_sparsity": 1.0},
        {"drop_out": 2.0},
        {"holdout": 1.0},
        {"train": "x"},
    ):
        with pytest.raises(RecipeError):
            FinetuneConfig(**bad)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(OnnxPruneError, match=r"pip install onnxprune\[torch\]"):
        require_torch()


def test_cli_finetune_and_prune_then_finetune(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    runner = CliRunner()
    pruned = tmp_path / "pruned.onnx"
    result = runner.invoke(
        cli,
        [
            "-q",
            "prune",
            str(digits_model),
            "-o",
            str(pruned),
            "--channels",
            "0.5",
            "--no-reconstruct",
            "--calib",
            str(digits_calib),
        ],
    )
    assert result.exit_code == 0, result.output
    digest = sha256(pruned)
    out, report = tmp_path / "tuned.onnx", tmp_path / "r.json"
    args = ["-q", "finetune", str(pruned), "-o", str(out), "--teacher", str(digits_model), "--calib", str(digits_calib)]
    result = runner.invoke(
        cli, [*args, "--steps", "200", "--lr", "0.001", "--schedule", "cosine", "--report", str(report)]
    )
    assert result.exit_code == 0, result.output
    assert sha256(pruned) == digest
    assert _structure(_io.load(out)) == _structure(_io.load(pruned))
    assert _accuracy(_io.load(out)) >= 0.95
    both = tmp_path / "both.onnx"
    result = runner.invoke(
        cli,
        ["-q", "prune", str(digits_model), "-o", str(both), "--sparsity", "0.9", "--scope", "global",
         "--importance", "magnitude", "--calib", str(digits_calib), "--finetune-steps", "200", "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert [p["name"] for p in data["passes"]] == ["unstructured", "finetune", "cleanup"]
    assert data["passes"][1]["details"]["curve"][0]["step"] == 0
    assert _accuracy(_io.load(both)) >= 0.93  # measured 0.964 (one-shot: 0.442)
    missing = runner.invoke(
        cli, ["finetune", str(pruned), "-o", str(tmp_path / "x.onnx"), "--teacher", str(digits_model)]
    )
    assert missing.exit_code == 2 and "--calib" in missing.output


def test_external_data_layout_is_kept(tmp_path: Path, digits_calib: Path) -> None:
    source = tmp_path / "ext" / "model.onnx"
    source.parent.mkdir()
    proto = onnx.load(DIGITS / "digits_cnn.onnx")
    onnx.save(
        proto, source, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=256
    )
    out = tmp_path / "out" / "tuned.onnx"
    args = ["-q", "finetune", str(source), "-o", str(out), "--teacher", str(DIGITS / "digits_cnn.onnx")]
    result = CliRunner().invoke(cli, [*args, "--calib", str(digits_calib), "--steps", "5"])
    assert result.exit_code == 0, result.output
    layout = [(t.name, t.data_location) for t in onnx.load(source, load_external_data=False).graph.initializer]
    assert [(t.name, t.data_location) for t in onnx.load(out, load_external_data=False).graph.initializer] == layout
    assert len(data_files_of(out)) == 1


def test_feature_distillation_uses_intermediate_values() -> None:
    model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.8, scope="global")))
    relu = next(n for n in model.graph if n.op_type == "Relu")
    feature = relu.outputs[0].name
    result = FinetunePass(FinetuneConfig(steps=20, features=(feature,)), context)(model)
    assert result.report.summary["loss_last"] < result.report.summary["loss_first"]


def test_holdout_split_is_deterministic_disjoint_and_refuses_too_few() -> None:
    train, held = split_holdout(128, 0.2, seed=0)
    again = split_holdout(128, 0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(held, again[1])
    assert len(held) == 26 and not set(train) & set(held) and sorted({*train, *held}) == list(range(128))
    assert not np.array_equal(held, split_holdout(128, 0.2, seed=1)[1])
    assert len(split_holdout(10, 0.1, seed=0)[1]) == MIN_HOLDOUT
    assert len(split_holdout(10, 0.0, seed=0)[1]) == 0
    with pytest.raises(CalibrationError, match="holdout 0"):
        split_holdout(7, 0.2, seed=0)


def test_training_that_only_hurts_keeps_the_one_shot_weights_bit_identical() -> None:
    model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, scope="global")))
    before = _tensors(model)
    result = FinetunePass(FinetuneConfig(steps=10, lr=10.0, schedule="constant", eval_every=5), context)(model)
    after = _tensors(model)
    for name, value in before.items():
        assert after[name].tobytes() == value.tobytes(), name
    summary, curve = result.report.summary, result.report.details["curve"]
    assert summary["kept_step"] == 0 and summary["heldout_kept"] == summary["heldout_start"]
    assert [c["step"] for c in curve] == [0, 5, 10] and all(c["heldout"] > curve[0]["heldout"] for c in curve[1:])
    assert "kept the one-shot weights" in summary["note"]


def test_training_that_helps_keeps_a_later_step_with_masks_and_curve() -> None:
    model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.8, scope="global")))
    zeros = {name: w == 0 for name, w in _tensors(model).items() if name in DIGIT_WEIGHTS}
    result = FinetunePass(FinetuneConfig(steps=40, eval_every=10), context)(model)
    summary, details = result.report.summary, result.report.details
    assert summary["kept_step"] > 0 and summary["heldout_kept"] < 0.5 * summary["heldout_start"]
    assert summary["samples"] + summary["heldout_samples"] == 128 and summary["heldout_samples"] == 26
    curve = details["curve"]
    assert curve[0] == {"step": 0, "train": None, "heldout": summary["heldout_start"]}
    assert {c["step"] for c in curve[1:]} <= {10, 20, 30, 40} and all(c["train"] > 0 for c in curve[1:])
    assert summary["kept_step"] in {c["step"] for c in curve}
    assert min(c["heldout"] for c in curve) == summary["heldout_kept"]
    probe = details["lr_probe"]  # the learning rate was chosen by the held-out probe
    assert len(probe) == 7 and summary["lr"] == min(probe, key=lambda r: r["heldout"])["lr"]
    after = _tensors(model)
    for name, mask in zeros.items():
        assert np.all(after[name][mask] == 0), name


def test_the_lr_probe_of_a_pruning_run_measures_the_pruned_model() -> None:
    """From a dense start the distillation loss is ~0 at any rate; the probe must see the final sparsity."""
    model, context = _digits()
    dense = _tensors(model)
    result = FinetunePass(FinetuneConfig(steps=40, final_sparsity=0.9, probe_steps=5), context)(model)
    probe = result.report.details["lr_probe"]
    assert all(r["heldout"] > 1e-3 for r in probe)  # measured on the 90%-sparse model, not the dense one
    assert len({round(r["heldout"], 6) for r in probe}) > 1
    assert result.report.summary["sparsity_after"] == pytest.approx(0.9, abs=0.01)
    after = _tensors(model)
    assert any(not np.array_equal(after[n], dense[n]) for n in DIGIT_WEIGHTS)


def test_gradual_pruning_keeps_only_weights_at_the_final_sparsity() -> None:
    model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5)))
    config = FinetuneConfig(steps=40, lr=1e-3, final_sparsity=0.9, prune_end=0.5, eval_every=5)
    result = FinetunePass(config, context)(model)
    summary = result.report.summary
    assert summary["kept_step"] > 20 and summary["sparsity_after"] == pytest.approx(0.9, abs=0.01)


def test_train_selects_the_tensors_that_train() -> None:
    model, context = _digits(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.8, scope="global")))
    before = _tensors(model)
    result = FinetunePass(FinetuneConfig(steps=20, lr=1e-3, holdout=0, train="norms+bias"), context)(model)
    after = _tensors(model)
    written = {c["tensor"] for c in result.report.changed}
    assert written and all(before[name].ndim <= 1 for name in written)
    assert all(np.array_equal(before[n], after[n]) for n in before if n not in written)
    with pytest.raises(RecipeError, match="held-out"):
        FinetunePass(FinetuneConfig(steps=1, holdout=0), context)(model)


def test_distillation_ignores_padding_positions() -> None:
    """Token outputs [B, S, H] at attention_mask == 0 carry nothing a model's user reads: no loss there."""
    import torch

    from onnxprune.passes._train import _distill_loss

    teacher = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 4, 3)))
    tokens = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    student = teacher.clone()
    student[0, 2:] += 5.0
    student[1, 3] -= 7.0
    assert float(_distill_loss("mse", student, teacher, 1.0, tokens)) == 0.0
    assert float(_distill_loss("mse", student, teacher, 1.0)) > 1.0
    student[0, 0] += 1.0  # a real token still counts
    assert float(_distill_loss("mse", student, teacher, 1.0, tokens)) > 0.0
