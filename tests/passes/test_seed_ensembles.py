"""Sup-tickets (M31), FreeTickets (M12) and Rethinking's scratch baselines (M3): ticket averaging and
re-pruning, member files and the ensemble model in onnxruntime, re-initialisation and Scratch-B's budget,
bad options, the presets as recipes, inputs never modified."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune import _io
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.calibration.sources import open_source
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.ensemble import build_ensemble, check_ensemble
from onnxprune.errors import OnnxPruneError
from onnxprune.passes import FinetuneConfig, FinetunePass, UnstructuredPruneConfig, UnstructuredPrunePass
from onnxprune.passes.scratch import ScratchConfig, ScratchPass, scratch_steps
from onnxprune.pipeline import Pipeline
from onnxprune.presets import PRESETS
from onnxprune.recipe import PassSpec, Recipe, run_recipe
from tests.conftest import DIGITS, ort_run, sha256

torch = pytest.importorskip("torch")

from onnxprune.passes._ticket_runs import phases  # noqa: E402  (needs torch)
from onnxprune.passes._tickets import caa, cima, prune_and_regrow, triangular_lr  # noqa: E402

WEIGHTS = ("features.0.weight", "features.2.weight", "features.5.weight", "classifier.1.weight", "classifier.3.weight")
FLOAT_TENSORS = (*WEIGHTS, *(name.replace("weight", "bias") for name in WEIGHTS))


def _tensors(path_or_model: Path | object) -> dict[str, np.ndarray]:
    proto = onnx.load(str(path_or_model)) if isinstance(path_or_model, Path) else _io.ir.to_proto(path_or_model)
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def _pruned(sparsity: float = 0.9) -> tuple[object, PassContext]:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    context = PassContext(
        calibration=open_source(DIGITS / "digits_calib.npz", model), reference=_io.load(DIGITS / "digits_cnn.onnx")
    )
    Pipeline([UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=sparsity, scope="global"))], context)(model)
    return model, context


def _zeros(model: object) -> dict[str, int]:
    return {name: int((value == 0).sum()) for name, value in _tensors(model).items() if name in WEIGHTS}


def test_caa_of_k_tickets_is_the_arithmetic_mean_and_cima_the_ema() -> None:
    tickets = [
        {"w": torch.tensor([1.0, 0.0, 4.0])},
        {"w": torch.tensor([3.0, 6.0, 0.0])},
        {"w": torch.tensor([2.0, 3.0, 5.0])},
    ]
    average = None
    for count, ticket in enumerate(tickets):
        average = caa(average, ticket, count)
    assert torch.allclose(average["w"], torch.tensor([2.0, 3.0, 3.0]))  # (1+3+2)/3, (0+6+3)/3, (4+0+5)/3
    ema = None
    for ticket in tickets:
        ema = cima(ema, ticket, 0.5)
    assert torch.allclose(ema["w"], torch.tensor([2.0, 3.0, 3.5]))  # ((1+3)/2 + 2)/2, ((0+6)/2 + 3)/2, ...


def test_triangular_rate_and_phases() -> None:
    assert [triangular_lr(0.2, 1.0, k, 4) for k in range(4)] == pytest.approx([0.2, 0.6, 1.0, 0.6])
    assert phases(100, 70, 3) == [(70, 80), (80, 90), (90, 100)]
    assert phases(100, 71, 3) == [(73, 82), (82, 91), (91, 100)]  # equal cycles ending at the last step


def test_prune_and_regrow_keeps_each_tensors_density_and_grows_by_gradient() -> None:
    from onnxprune.passes._train import Masks
    from onnxprune.torchview import TorchView

    model, _ = _pruned(0.5)
    view = TorchView(model)
    masks = Masks(view, list(WEIGHTS))
    before = {n: int(k.sum()) for n, k in masks.keep.items()}
    param = masks.params["classifier.1.weight"]
    param.grad = torch.zeros_like(param)
    inactive = (~masks.keep["classifier.1.weight"]).nonzero()[:3]
    for row, col in inactive.tolist():
        param.grad[row, col] = 10.0
    prune_and_regrow(masks, 0.01, torch.Generator().manual_seed(0))
    assert {n: int(k.sum()) for n, k in masks.keep.items()} == before
    for row, col in inactive.tolist():
        assert masks.keep["classifier.1.weight"][row, col] and param[row, col] == 0  # regrown at 0


@pytest.mark.parametrize("reprune", ["global", "layer"])
def test_sup_tickets_reprunes_the_average_to_the_target_sparsity_exactly(reprune: str) -> None:
    model, context = _pruned(0.9)
    zeros, before = _zeros(model), _tensors(model)
    total = sum(before[n].size for n in WEIGHTS)
    options = {"cycles": 3, "cycle_rate": 0.5, "reprune": reprune}
    config = FinetuneConfig(steps=30, lr=1e-3, holdout=0.2, method="sup-tickets", method_options=options)
    result = FinetunePass(config, context)(model)
    after = _zeros(model)
    if reprune == "layer":
        assert after == zeros  # every tensor back to its own count
    assert sum(after.values()) == sum(zeros.values())
    assert sum(after.values()) == round(result.report.details["method"]["target_sparsity"] * total)
    details = result.report.details["method"]
    assert details["tickets"] == 3 and details["average_sparsity"] < 0.9  # the union is denser than one ticket
    assert details["sparsity"] == pytest.approx(sum(zeros.values()) / total)
    assert "nothing to recompute" in details["bn_statistics"]  # BN folded by the exporter
    assert any(not np.array_equal(before[n], v) for n, v in _tensors(model).items())


def _calib_with_labels(tmp_path: Path) -> Path:
    with np.load(DIGITS / "digits_test.npz") as test:
        path = tmp_path / "calib_labels.npz"
        np.savez(path, input=test["input"][:96], labels=test["label"][:96].astype(np.int64))
    return path


def test_free_tickets_members_and_ensemble_in_onnxruntime(tmp_path: Path) -> None:
    pruned, _ = _pruned(0.8)
    source = tmp_path / "in" / "pruned.onnx"
    source.parent.mkdir()
    _io.save(pruned, source)
    digests = {p: sha256(p) for p in (source, DIGITS / "digits_cnn.onnx", DIGITS / "digits_calib.npz")}
    out, report = tmp_path / "out" / "ft.onnx", tmp_path / "r.json"
    out.parent.mkdir()
    args = ["-q", "finetune", str(source), "-o", str(out), "--teacher", str(DIGITS / "digits_cnn.onnx"),
            "--calib", str(DIGITS / "digits_calib.npz"), "--steps", "60", "--lr", "0.001", "--report", str(report),
            "--method", "free-tickets", "--method-option", "members=3", "--method-option", "update_every=10",
            "--method-option", "ensemble=mean_softmax"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert {p: sha256(p) for p in digests} == digests
    members = [out.with_name(f"ft_member{i}.onnx") for i in range(3)]
    ensemble = out.with_name("ft_ensemble.onnx")
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, ensemble.name, *(m.name for m in members)])
    data = json.loads(report.read_text())
    assert data["extra_outputs"] == [str(p) for p in (*members, ensemble)]
    listed = data["passes"][0]["details"]["method"]["members"]
    with np.load(DIGITS / "digits_test.npz") as test:
        x = test["input"][:64]
    outputs = []
    for member, row in zip(members, listed, strict=True):
        tensors = _tensors(member)
        sparsity = 1 - sum(np.count_nonzero(tensors[n]) for n in WEIGHTS) / sum(tensors[n].size for n in WEIGHTS)
        assert row["sparsity"] == pytest.approx(sparsity, abs=1e-6) and sparsity > 0.79
        outputs.append(ort_run(_io.load(member), {"input": x})["logits"])
    assert not np.allclose(outputs[0], outputs[2])  # different members
    np.testing.assert_array_equal(_tensors(out)["classifier.1.weight"], _tensors(members[2])["classifier.1.weight"])
    got = ort_run(_io.load(ensemble), {"input": x})["logits"]
    probabilities = [
        np.exp(o - o.max(1, keepdims=True)) / np.exp(o - o.max(1, keepdims=True)).sum(1, keepdims=True) for o in outputs
    ]
    np.testing.assert_allclose(got, np.mean(probabilities, axis=0), atol=1e-5)


def test_ensemble_of_logits_and_a_mismatch_refused() -> None:
    members = [_io.load(DIGITS / "digits_cnn.onnx"), _pruned(0.5)[0]]
    x = {"input": np.load(DIGITS / "digits_calib.npz")["input"][:4]}
    ensemble = build_ensemble(members, "mean_logits")
    assert check_ensemble(ensemble, members, x, "mean_logits") <= 1e-5
    with pytest.raises(OnnxPruneError, match="differs"):
        check_ensemble(ensemble, members, x, "mean_softmax")
    assert len(list(members[0].graph)) == 11  # members untouched


def test_scratch_reinitialises_every_weight_keeps_the_graph_and_scales_steps_by_flops(tmp_path: Path) -> None:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    context = PassContext(
        calibration=open_source(_calib_with_labels(tmp_path), model), reference=_io.load(DIGITS / "digits_cnn.onnx")
    )
    from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass

    Pipeline([ChannelPrunePass(ChannelPruneConfig(ratio=0.5, reconstruct=False))], context)(model)
    before = _tensors(model)
    shapes = {n: v.shape for n, v in before.items()}
    from onnxprune.passes._reinit import reinitialize

    copy = model.clone()
    counts = reinitialize(copy, seed=3)
    redrawn = _tensors(copy)
    assert counts == {"weights": 5, "biases": 5, "norm_tensors": 0}
    for name in FLOAT_TENSORS:  # every entry changes, shapes stay
        assert redrawn[name].shape == shapes[name] and np.all(redrawn[name] != before[name]), name
    bound = 1 / math.sqrt(before["features.0.weight"][0].size)
    assert np.abs(redrawn["features.0.weight"]).max() <= bound
    teacher = context.reference
    full = count_model(teacher, complete_shapes(teacher)).flops
    small = count_model(model, complete_shapes(model)).flops
    nodes = [(n.op_type, tuple(v.name for v in n.inputs if v is not None)) for n in model.graph]
    result = ScratchPass(ScratchConfig(budget="B", steps=3, lr=1e-3, holdout=0, distill_weight=0.0), context)(model)
    summary = result.report.summary
    assert summary["steps"] == scratch_steps(3, full, small) == math.floor(3 * full / small) > 3
    assert summary["flops_ratio"] == pytest.approx(full / small) and summary["objective"] == "labels"
    assert [(n.op_type, tuple(v.name for v in n.inputs if v is not None)) for n in model.graph] == nodes
    assert {n: v.shape for n, v in _tensors(model).items()} == shapes


def test_bad_options_get_one_line_and_exit_2(tmp_path: Path) -> None:
    base = ["finetune", str(DIGITS / "digits_cnn.onnx"), "-o", str(tmp_path / "o.onnx"),
            "--teacher", str(DIGITS / "digits_cnn.onnx"), "--calib", str(DIGITS / "digits_calib.npz")]  # fmt: skip
    for method, option in (
        ("free-tickets", "members=0"),
        ("free-tickets", "ensemble=median"),
        ("free-tickets", "explore=1.5"),
        ("sup-tickets", "combine=max"),
        ("sup-tickets", "cycles=0"),
        ("sup-tickets", "reprune=block"),
        ("sup-tickets", "bogus=1"),
    ):
        result = CliRunner().invoke(cli, [*base, "--method", method, "--method-option", option])
        assert result.exit_code == 2, (option, result.output)
        assert result.output.count("\n") == 1 and option.split("=")[0] in result.output, result.output
    assert CliRunner().invoke(cli, [*base, "--scratch", "C"]).exit_code == 2
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("name", ["sup-tickets", "free-tickets", "scratch-e", "scratch-b"])
def test_presets_run_as_recipes(tmp_path: Path, name: str) -> None:
    preset = PRESETS[name]
    assert preset.method in ("M3", "M12", "M31") and preset.paper
    specs = []
    for entry in preset.passes:  # the preset's passes, brief
        config = dict(entry["config"])
        if "steps" in config:
            config.update(steps=20, lr=1e-3)
        specs.append(PassSpec(entry["name"], config))
    out = tmp_path / "o.onnx"
    calib = _calib_with_labels(tmp_path) if "labels" in preset.needs else DIGITS / "digits_calib.npz"
    recipe = Recipe.from_dict(
        {
            "model": str(DIGITS / "digits_cnn.onnx"),
            "output": str(out),
            "calibration": {"path": str(calib)},
            "passes": [{"name": s.name, "config": s.config} for s in specs],
        }  # fmt: skip
    )
    result = run_recipe(recipe)
    assert out.exists()
    if name == "free-tickets":
        assert [Path(p).name for p in result.report["extra_outputs"]] == [
            "o_member0.onnx", "o_member1.onnx", "o_member2.onnx", "o_ensemble.onnx"
        ]  # fmt: skip
