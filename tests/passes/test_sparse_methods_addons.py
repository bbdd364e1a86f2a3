"""In-loop add-ons: the K-FAC spectral-radius penalty (M25), LRPET's projection during training (M36) and
AP's choice of part of each pruning step (M19); the written models run in onnxruntime, bad options are
one line, and the presets' recipes run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest
import yaml
from click.testing import CliRunner

from onnxprune import _io
from onnxprune.calibration.sources import open_source
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import FinetuneConfig, FinetunePass, LowRankConfig, LowRankPass
from onnxprune.presets import PRESETS
from tests.conftest import DIGITS, ort_run

torch = pytest.importorskip("torch")

from onnxprune.passes._ap import APOptions, APRun, least_moved_negative  # noqa: E402
from onnxprune.passes._kfac import spectral_radius  # noqa: E402
from onnxprune.passes._lrpet import project, projected_rank  # noqa: E402
from onnxprune.passes._sparse_methods import StepState  # noqa: E402
from onnxprune.passes._spectral import SpectralOptions, SpectralRun, rayleigh  # noqa: E402
from onnxprune.passes._train import Masks, TrainData, TrainSettings, _objective  # noqa: E402
from onnxprune.torchview import TorchView  # noqa: E402

HIDDEN = ("features.0.weight", "features.2.weight", "features.5.weight", "classifier.1.weight")
LAST = "classifier.3.weight"


def _settings(**overrides: object) -> TrainSettings:
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    known = {k: v for k, v in dataclasses.asdict(FinetuneConfig()).items() if k in fields}
    return TrainSettings(**{**known, "lr": 1e-3, "eval_every": 10, **overrides})


def _labelled(tmp_path: Path) -> Path:
    """Calibration digits with their labels (the losses then include cross-entropy)."""
    with np.load(DIGITS / "digits_test.npz") as test:
        np.savez(tmp_path / "calib.npz", input=test["input"][:128], label=test["label"][:128].astype(np.int64))
    return tmp_path / "calib.npz"


def _finetune(calib: Path, **config: Any) -> tuple[ir.Model, Any]:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    context = PassContext(calibration=open_source(calib, model), reference=_io.load(DIGITS / "digits_cnn.onnx"))
    result = FinetunePass(FinetuneConfig(lr=1e-3, seed=0, **config), context)(model)
    return model, result.report


def _weights(model: ir.Model) -> dict[str, np.ndarray]:
    return {name: v.const_value.numpy().copy() for name, v in model.graph.initializers.items()}


def _logits(model: ir.Model) -> np.ndarray:
    with np.load(DIGITS / "digits_test.npz") as test:
        return ort_run(model, {"input": test["input"][:64]})["logits"]


# --- the spectral-radius penalty --------------------------------------------------------------------------


def test_rayleigh_quotient_is_the_top_eigenvalue_and_its_gradient() -> None:
    rows = torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    start = torch.ones(6, dtype=torch.float64) / 6**0.5
    value, v = rayleigh(rows, start, 200)
    matrix = (rows.detach().T @ rows.detach() / 50).numpy()
    assert float(value.detach()) == pytest.approx(np.linalg.eigvalsh(matrix)[-1], rel=1e-9)
    (grad,) = torch.autograd.grad(value, rows)
    expected = 2 * (rows.detach() @ v)[:, None] * v[None, :] / 50  # d(λ_max)/dX at the top eigenvector
    assert torch.allclose(grad, expected, atol=1e-12)


def test_the_penalty_is_the_sum_of_the_layers_kfac_spectral_radii(tmp_path: Path) -> None:
    calib = _labelled(tmp_path)
    model = _io.load(DIGITS / "digits_cnn.onnx")
    view = TorchView(model)
    masks = Masks(view, [*HIDDEN, LAST])
    run = SpectralRun(SpectralOptions(mu=1.0, power_iters=300), masks, view)
    with np.load(calib) as c:
        data = TrainData({"input": c["input"]}, {}, c["label"])
    settings = _settings(steps=1)
    index = np.arange(32)
    loss, values = _objective(view, data, index, settings, (), run.values)
    state = StepState(0, 1, 1e-3, masks, view, torch.Generator().manual_seed(0), settings)
    penalty = run.penalty(state, loss, values)
    assert penalty is not None and penalty.requires_grad
    # the same radii from the K-FAC factors, built here in numpy from the layer inputs and output gradients
    expected = 0.0
    for node in run.layers.values():
        x, y = values[node.inputs[0].name], values[node.outputs[0].name]
        (grad,) = torch.autograd.grad(loss, y, retain_graph=True)
        from onnxprune.passes._kfac import torch_rows

        a_rows, d_rows = torch_rows(node, x.detach(), grad * len(index), bias=False)
        a = (a_rows.T @ a_rows / a_rows.shape[0]).numpy()
        g = (d_rows.T @ d_rows / d_rows.shape[0]).numpy()
        expected += spectral_radius(a, 500) * spectral_radius(g, 500)
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)
    assert run.summary()["spectral_radius_sum_first"] == pytest.approx(expected, rel=1e-6)
    assert float(penalty.detach()) == pytest.approx(run.summary()["spectral_radius_sum_tail"], rel=1e-6)


def test_mu_zero_trains_exactly_like_no_method(tmp_path: Path) -> None:
    calib = _labelled(tmp_path)
    plain, _ = _finetune(calib, steps=6, holdout=0)
    zero, report = _finetune(calib, steps=6, holdout=0, method="spectral", method_options={"mu": 0})
    assert report.details["method"]["regularized_steps"] == 0
    for name, value in _weights(plain).items():
        np.testing.assert_array_equal(_weights(zero)[name], value)


def test_the_penalty_lowers_the_spectral_radius_the_model_trains_to(tmp_path: Path) -> None:
    calib = _labelled(tmp_path)
    radius = {}
    for mu in (0.0, 3e-3):  # mu 0: measured, not penalized
        model, report = _finetune(
            calib, steps=60, holdout=0, optimizer="sgd", method="spectral", method_options={"mu": mu, "monitor": True}
        )
        radius[mu] = report.details["method"]["spectral_radius_sum_tail"]
        assert report.details["method"]["regularized_steps"] == (60 if mu else 0)
        assert np.isfinite(_logits(model)).all()
    assert radius[3e-3] < 0.5 * radius[0.0], radius


# --- LRPET's projection ------------------------------------------------------------------------------------


def test_projection_keeps_the_energy_and_the_rank() -> None:
    matrix = np.random.default_rng(0).standard_normal((12, 20))
    for redu in (0.0, 0.3):
        new = project(matrix, 4, redu)
        sigma, new_sigma = np.linalg.svd(matrix, compute_uv=False), np.linalg.svd(new, compute_uv=False)
        assert np.sum(new_sigma**2) == pytest.approx(np.sum(sigma**2), rel=1e-12)  # energy transfer
        np.testing.assert_allclose(new_sigma[4:], redu * sigma[4:], atol=1e-10)
    truncated = project(matrix, 4, energy_transfer=False)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    np.testing.assert_allclose(truncated, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-12)  # the Eckart-Young truncation
    assert projected_rank((12, 20), 0.5) == 6 and projected_rank((3, 9), 0.9) == 1


def test_lrpet_leaves_hidden_weights_at_the_rank_and_lowrank_factorizes_them_exactly(tmp_path: Path) -> None:
    calib = DIGITS / "digits_calib.npz"
    model, report = _finetune(calib, steps=12, method="lrpet", method_options={"rank_ratio": 0.5, "every": 5})
    summary = report.details["method"]
    assert summary["projections"] == 3  # steps 5, 10 and the last
    assert set(summary["ranks"]) == set(HIDDEN)  # the classifier keeps its full rank
    weights = _weights(model)
    for name, rank in summary["ranks"].items():
        matrix = weights[name].reshape(weights[name].shape[0], -1)
        sigma = np.linalg.svd(matrix, compute_uv=False)
        assert rank == projected_rank(matrix.shape, 0.5)
        assert np.all(sigma[rank:] < 1e-5 * sigma[0]) and sigma[rank - 1] > 1e-3 * sigma[0]
    assert np.linalg.matrix_rank(weights[LAST]) == 10
    before = _logits(model)
    result = LowRankPass(LowRankConfig(energy=0.999999, round_to=1, bn_rectify=False))(model)
    assert result.report.changed, "no layer was factorized"
    np.testing.assert_allclose(_logits(model), before, atol=1e-4, rtol=1e-4)


def test_the_lrpet_preset_runs_and_writes_a_smaller_model(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    passes = [dict(p, config=dict(p["config"])) for p in PRESETS["lrpet"].passes]
    passes[0]["config"].update(steps=20, lr=1e-3, method_options={"rank_ratio": 0.75, "every": 10})
    recipe = {
        "model": str(DIGITS / "digits_cnn.onnx"),
        "output": str(out),
        "calibration": {"path": str(DIGITS / "digits_calib.npz")},
        "passes": passes,
        "validate": False,
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "r.yaml")])
    assert result.exit_code == 0, result.output
    params = lambda m: sum(v.const_value.numpy().size for v in m.graph.initializers.values())  # noqa: E731
    assert params(_io.load(out)) < 0.7 * params(_io.load(DIGITS / "digits_cnn.onnx"))
    assert np.isfinite(_logits(_io.load(out))).all()


# --- AP --------------------------------------------------------------------------------------------------


def test_least_moved_negative_picks_the_kept_negative_weights_that_moved_least() -> None:
    params = {"a": torch.tensor([-1.0, -2.0, 3.0, -4.0]), "b": torch.tensor([[-5.0, -6.0]])}
    start = {"a": torch.tensor([-1.5, -2.01, 3.0, -4.3]), "b": torch.tensor([[-5.02, -9.0]])}
    keep = {"a": torch.tensor([True, False, True, True]), "b": torch.tensor([[True, True]])}
    chosen = least_moved_negative(params, start, keep, 2)
    # eligible: a0 (moved 0.5), a3 (0.3), b0 (0.02), b1 (3.0); a1 is pruned, a2 positive
    assert chosen["a"].tolist() == [False, False, False, True] and chosen["b"].tolist() == [[True, False]]


def test_ap_chooses_its_share_of_each_later_pruning_step() -> None:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    view = TorchView(model)
    masks = Masks(view, [*HIDDEN, LAST])
    run = APRun(APOptions(fraction=0.25))
    generator = torch.Generator().manual_seed(0)
    settings = _settings(steps=10, final_sparsity=0.5, prune_scope="global")
    state = StepState(0, 10, 1e-3, masks, view, generator, settings)
    total = sum(k.numel() for k in masks.keep.values())
    run.prune_to(masks, 0.2, generator, settings)  # the first step: magnitude only
    assert run.removed == [0] and masks.sparsity == pytest.approx(0.2, abs=1 / total)
    run.before_step(state)  # the cycle starts: its weights are remembered
    with torch.no_grad():  # "training": every weight moves, by an amount known per weight
        for p in masks.params.values():
            p.add_(torch.linspace(0.01, 0.02, p.numel()).reshape(p.shape) * p.sign())
    kept_before = {n: k.clone() for n, k in masks.keep.items()}
    values = {n: p.detach().clone() for n, p in masks.params.items()}
    run.prune_to(masks, 0.4, generator, settings)
    count = int(round(0.4 * total)) - int(round(0.2 * total))
    assert run.removed[1] == round(0.25 * count)
    assert masks.sparsity == pytest.approx(0.4, abs=2 / total)
    magnitude = torch.cat([(values[n].abs() * kept_before[n]).reshape(-1) for n in masks.params])
    removed = torch.cat([(kept_before[n] & ~masks.keep[n]).reshape(-1) for n in masks.params])
    negative = torch.cat([(values[n] < 0).reshape(-1) for n in masks.params])
    # the base took the smallest kept magnitudes; AP's extra weights are negative and bigger than those
    threshold = magnitude[removed & ~negative].max()
    by_ap = removed & (magnitude > threshold)
    assert int(by_ap.sum()) > 0 and bool(negative[by_ap].all())


def test_ap_in_an_imp_run_reaches_the_sparsity_and_fraction_zero_is_plain_imp() -> None:
    calib = DIGITS / "digits_calib.npz"
    config = {"steps": 12, "holdout": 0, "final_sparsity": 0.6, "cycles": 3, "rewind": True, "prune_scope": "global"}
    plain, _ = _finetune(calib, **config)
    none, _ = _finetune(calib, **config, method="ap", method_options={"fraction": 0.0})
    for name, value in _weights(plain).items():
        np.testing.assert_array_equal(_weights(none)[name], value)
    model, report = _finetune(calib, **config, method="ap", method_options={"fraction": 0.2})
    assert report.summary["sparsity_after"] == pytest.approx(0.6, abs=1e-3)
    removed = report.details["method"]["removed_by_ap"]
    assert removed[0] == 0 and all(r > 0 for r in removed[1:])
    assert np.isfinite(_logits(model)).all()


def test_ap_without_a_pruning_schedule_and_lrpet_with_one_are_refused() -> None:
    with pytest.raises(RecipeError, match="method ap adds to an iterative pruning run"):
        _finetune(DIGITS / "digits_calib.npz", steps=2, method="ap")
    with pytest.raises(RecipeError, match="method lrpet projects dense weights"):
        _finetune(DIGITS / "digits_calib.npz", steps=2, method="lrpet", final_sparsity=0.5)


def test_the_kfac_and_ap_presets_run(tmp_path: Path) -> None:
    calib = _labelled(tmp_path)
    for name in ("kfac-neuron", "ap"):
        out = tmp_path / f"{name}.onnx"
        passes = [dict(p, config=dict(p["config"])) for p in PRESETS[name].passes]
        for spec in passes:
            if spec["name"] == "finetune":
                spec["config"].update(steps=8, lr=1e-3)
        recipe = {
            "model": str(DIGITS / "digits_cnn.onnx"),
            "output": str(out),
            "calibration": {"path": str(calib)},
            "passes": passes,
            "validate": False,
        }
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
        result = CliRunner().invoke(cli, ["run", str(tmp_path / "r.yaml")])
        assert result.exit_code == 0, (name, result.output)
        assert np.isfinite(_logits(_io.load(out))).all()


def test_the_penalty_reads_conv_kernels_held_by_constant_nodes(tmp_path: Path) -> None:
    """PaddlePaddle exports keep weights in Constant nodes (PP-OCR's classifier): no initializer to read."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(DIGITS / "digits_cnn.onnx")
    first = next(i for i in proto.graph.initializer if i.name == HIDDEN[0])
    proto.graph.initializer.remove(first)
    constant = helper.make_node(
        "Constant", [], [HIDDEN[0]], value=numpy_helper.from_array(numpy_helper.to_array(first))
    )
    proto.graph.node.insert(0, constant)
    path = tmp_path / "constants.onnx"
    onnx.save(proto, path)
    model = _io.load(path)
    context = PassContext(calibration=open_source(_labelled(tmp_path), model), reference=_io.load(path))
    config = FinetuneConfig(lr=1e-3, seed=0, steps=2, holdout=0, method="spectral", method_options={"mu": 1e-3})
    report = FinetunePass(config, context)(model).report
    assert report.details["method"]["regularized_steps"] == 2
    assert HIDDEN[0] in report.details["method"]["spectral_radius_last"]
    assert np.isfinite(_logits(model)).all()


def test_lrpet_skips_a_weight_whose_factors_would_not_be_smaller() -> None:
    from onnxprune.passes._lrpet import LRPETOptions, LRPETRun
    from tests.conftest import to_ir
    from tests.models.lowrank_models import matmul_layer

    model = to_ir(matmul_layer(48, 40))  # one [48, 40] MatMul weight: factors save below rank 21
    view = TorchView(model)
    name = next(n for n, p in view.named_tensors().items() if p.dim() == 2)
    masks = Masks(view, [name], {name: 1})
    half = LRPETRun(LRPETOptions(rank_ratio=0.4, keep_last=False), masks, view)  # rank 24
    assert name in half.skipped and half.ranks == {}
    before = masks.params[name].detach().clone()
    half.finish(masks, view)
    assert torch.equal(masks.params[name].detach(), before)  # a skipped weight is never projected
    deep = LRPETRun(LRPETOptions(rank_ratio=0.6, keep_last=False), masks, view)  # rank 16
    assert deep.ranks == {name: 16} and not deep.skipped
    deep.finish(masks, view)
    assert np.linalg.matrix_rank(masks.params[name].detach().numpy(), tol=1e-4) == 16
