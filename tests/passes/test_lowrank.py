"""Low-rank factorization: exactness at full rank, SVD-tail errors, activation-aware and LRPET options,
rank selection, skip reasons, composition with structured pruning, CLI, all checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import yaml
from click.testing import CliRunner

from onnxprune.analysis.flops import count_params
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes import PASSES, ChannelPruneConfig, ChannelPrunePass, LowRankConfig, LowRankPass
from onnxprune.passes._rank import (
    Candidate,
    allocate_ranks,
    break_even,
    energy_rank,
    rank_for_saving,
    round_rank,
    saved_fraction_curve,
    saves,
)
from onnxprune.passes._svd import decompose, whitening
from onnxprune.pipeline import Pipeline
from tests.conftest import ort_run, sha256, to_ir
from tests.models import handbuilt
from tests.models.lowrank_models import LAYERS, conv_layer, correlated_inputs, gemm_layer, matmul_layer

EXACT = {"energy": 1.0, "round_to": 1, "only_if_smaller": False}


def _inputs(proto: onnx.ModelProto, samples: int, seed: int, correlated: bool = False) -> dict[str, np.ndarray]:
    dims = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if dims[0] != "N":  # Gemm with transA: [n, N]
        return {"x": np.random.default_rng(seed).standard_normal((dims[0], samples)).astype(np.float32)}
    shape = tuple(int(d) for d in dims[1:])
    if correlated:  # along the features a Gemm/MatMul reads, or a Conv's channels
        return {"x": correlated_inputs(samples, shape, axis=0 if len(shape) > 2 else -1, seed=seed)}
    return {"x": np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)}


def _context(proto: onnx.ModelProto, samples: int = 64, correlated: bool = False) -> PassContext:
    model = to_ir(proto)
    arrays = _inputs(proto, samples, seed=0, correlated=correlated)
    return PassContext(calibration=ArraySource(arrays, input_specs(model), "calib"))


def _factorize(proto: onnx.ModelProto, context: PassContext | None = None, **config: object):
    model = to_ir(proto)
    result = LowRankPass(LowRankConfig(**config), context)(model)
    return result.model, result.report


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check_runs(model: ir.Model) -> onnx.ModelProto:
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


# --------------------------------------------------------------------------- #
# numerics
# --------------------------------------------------------------------------- #


def test_rank_r_weight_error_is_the_svd_tail() -> None:
    w = np.random.default_rng(0).standard_normal((30, 50))
    spectrum = decompose(w)
    for rank in (1, 7, 30):
        a, b = spectrum.factors(rank)
        tail = np.sqrt(np.sum(spectrum.sigma[rank:] ** 2))
        assert np.linalg.norm(w - a @ b) == pytest.approx(tail, rel=1e-9, abs=1e-9)
        assert spectrum.energy(rank) == pytest.approx(1 - tail**2 / np.sum(w**2))


@pytest.mark.parametrize("method", ["cholesky", "eigen"])
def test_whitening_factors_the_dampened_gram(method: str) -> None:
    x = np.random.default_rng(1).standard_normal((200, 12)) @ np.diag(0.5 ** np.arange(12))
    gram = x.T @ x / 200
    s, s_inv = whitening(gram, method, percdamp=0.01)
    np.testing.assert_allclose(s @ s.T, gram + 0.01 * np.mean(np.diag(gram)) * np.eye(12), atol=1e-10)
    np.testing.assert_allclose(s @ s_inv, np.eye(12), atol=1e-8)


def test_energy_transfer_conserves_the_frobenius_energy() -> None:
    w = np.random.default_rng(2).standard_normal((20, 40))
    a, b = decompose(w).factors(5, energy_transfer=True)
    assert np.linalg.norm(a @ b) == pytest.approx(np.linalg.norm(w), rel=1e-9)
    plain_a, plain_b = decompose(w).factors(5)
    assert np.linalg.norm(plain_a @ plain_b) < np.linalg.norm(w)


def test_rank_helpers() -> None:
    sigma = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert energy_rank(sigma, 16 / 22) == 1
    assert energy_rank(sigma, 0.8) == 2
    assert energy_rank(sigma, 1.0) == 4
    assert energy_rank(np.zeros(3), 0.5) == 1
    assert round_rank(3, 8, 100) == 8 and round_rank(9, 8, 100) == 16 and round_rank(9, 8, 12) == 12
    assert break_even(64, 64) == 32 and saves(31, 64, 64) and not saves(32, 64, 64)


def test_allocation_meets_the_budget_and_spends_it() -> None:
    rng = np.random.default_rng(3)
    candidates = [Candidate(np.sort(rng.random(64))[::-1] ** k, 64, 64, 4096.0) for k in (1, 3, 6)]
    ranks, energy, met = allocate_ranks(candidates, budget=0.5 * 3 * 4096, multiple=4)
    cost = sum(c.cost_at(r) for c, r in zip(candidates, ranks, strict=True))
    assert met and 0 < energy < 1
    assert 0.45 * 3 * 4096 <= cost <= 0.5 * 3 * 4096
    assert ranks[2] is not None and ranks[0] is not None and ranks[2] <= ranks[0]  # faster decay, lower rank
    _, _, met = allocate_ranks(candidates, budget=10.0, multiple=4)
    assert not met


# --------------------------------------------------------------------------- #
# exactness and errors in onnxruntime
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", sorted(LAYERS))
@pytest.mark.parametrize("aware", [False, True], ids=["plain", "activation_aware"])
def test_full_rank_reproduces_the_outputs(case: str, aware: bool) -> None:
    proto = LAYERS[case]()
    context = _context(proto) if aware else None
    model, report = _factorize(proto, context, activation_aware=aware, energy_transfer=True, **EXACT)
    assert report.changed and not [s for s in report.skipped if "Conv" in s["op"] or "MatMul" in s["op"]]
    feeds = _inputs(proto, 4, seed=9)
    got, want = ort_run(_check_runs(model), feeds)["y"], ort_run(proto, feeds)["y"]
    assert _rel(got, want) <= 1e-5
    assert all(e["rank"] == e["full_rank"] for e in report.changed)
    if aware and case in ("conv_1d", "conv_same_upper"):  # no im2col Gram: plain SVD, said so
        assert report.changed[0]["note"].startswith("plain SVD: ")
    ops = [n.op_type for n in model.graph]
    assert len(ops) == len(proto.graph.node) + len(report.changed) * (2 if case == "shared" else 1) - (
        1 if case == "shared" else 0
    )  # one new node per use; the Identity alias is gone


def test_rank_r_error_in_the_model_is_the_svd_tail() -> None:
    proto = gemm_layer(n=48, m=40, trans_b=1)
    model, report = _factorize(proto, rank=8, round_to=1)
    w = onnx.numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    sigma = np.linalg.svd(w, compute_uv=False)
    [entry] = report.changed
    assert entry["rank"] == 8
    assert entry["weight_error"] == pytest.approx(np.sqrt(np.sum(sigma[8:] ** 2) / np.sum(sigma**2)), rel=1e-6)
    a = ir.to_proto(model)
    factors = {i.name: onnx.numpy_helper.to_array(i) for i in a.graph.initializer}
    first, second = (factors[name] for name in entry["factors"])
    assert first.shape == (48, 8) and second.shape == (40, 8)  # MatMul [n, r]; Gemm transB [m, r]
    approx = (first @ second.T).T  # [m, n]
    assert np.linalg.norm(w - approx) == pytest.approx(np.sqrt(np.sum(sigma[8:] ** 2)), rel=1e-5)
    assert [n.op_type for n in model.graph] == ["MatMul", "Gemm"]


@pytest.mark.parametrize(
    "builder", [matmul_layer, lambda: conv_layer(32, 32, pads=[1, 1, 1, 1], image=8)], ids=["matmul", "conv"]
)
def test_activation_aware_beats_plain_on_correlated_inputs(builder) -> None:  # noqa: ANN001
    proto = builder()
    context = _context(proto, samples=256, correlated=True)
    rank = 6
    plain, _ = _factorize(proto, rank=rank)
    aware, report = _factorize(proto, context, rank=rank, activation_aware=True)
    held_out = _inputs(proto, 64, seed=5, correlated=True)
    want = ort_run(proto, held_out)["y"]
    err_plain = _rel(ort_run(plain, held_out)["y"], want)
    err_aware = _rel(ort_run(aware, held_out)["y"], want)
    assert err_aware < 0.75 * err_plain, (err_aware, err_plain)
    assert report.changed[0]["output_error"] < report.changed[0]["weight_error"]


def test_bn_rectification_lowers_the_error_after_the_batchnorm() -> None:
    proto = conv_layer(batchnorm=True, pads=[1, 1, 1, 1], cin=16, cout=32)
    feeds = _inputs(proto, 16, seed=4)
    want = ort_run(proto, feeds)["y"]
    errors = {}
    for rectify in (False, True):
        model, report = _factorize(proto, rank=8, round_to=1, bn_rectify=rectify)
        assert report.changed[0]["bn_rectified"] is rectify
        errors[rectify] = _rel(ort_run(model, feeds)["y"], want)
    assert errors[True] < 0.8 * errors[False], errors


def test_energy_mode_keeps_the_energy_and_rounds_ranks() -> None:
    proto = matmul_layer(n=96, m=96)
    model, report = _factorize(proto, energy=0.5, round_to=8)
    [entry] = report.changed
    assert entry["rank"] % 8 == 0 and entry["energy_kept"] >= 0.5
    assert entry["rank"] < break_even(96, 96)
    feeds = _inputs(proto, 4, seed=1)
    assert _rel(ort_run(model, feeds)["y"], ort_run(proto, feeds)["y"]) < 1.0


# --------------------------------------------------------------------------- #
# what is skipped, and why
# --------------------------------------------------------------------------- #


def test_skips_carry_reasons() -> None:
    depthwise = conv_layer(cin=8, cout=8, group=8, pads=[1, 1, 1, 1])
    _, report = _factorize(depthwise, energy=0.5)
    assert not report.changed and "depthwise Conv (group=8)" in report.skipped[0]["reason"]
    grouped = conv_layer(cin=8, cout=16, group=2, pads=[1, 1, 1, 1])
    _, report = _factorize(grouped, energy=0.5)
    assert "grouped Conv (group=2)" in report.skipped[0]["reason"]
    small = gemm_layer(n=8, m=8)
    model, report = _factorize(small, energy=0.99)
    assert "does not save work" in report.skipped[0]["reason"] and "break-even rank 4.0" in report.skipped[0]["reason"]
    assert [n.op_type for n in model.graph] == ["Gemm"]
    _, report = _factorize(handbuilt.if_loop_model(), rank=1)
    assert any("inside a subgraph" in s["reason"] for s in report.skipped)
    _, report = _factorize(handbuilt.lstm_model(), rank=1)
    assert any("recurrent" in s["reason"] for s in report.skipped)


def test_nothing_to_factorize_changes_nothing() -> None:
    proto = gemm_layer(n=8, m=8)
    model, report = _factorize(proto, energy=1.0)
    assert not report.changed
    assert ir.to_proto(model).SerializeToString() == ir.to_proto(to_ir(proto)).SerializeToString()


def test_activation_aware_needs_data() -> None:
    with pytest.raises(CalibrationError, match="calibration data"):
        _factorize(matmul_layer(), rank=4, activation_aware=True)


@pytest.mark.parametrize(
    "config, match",
    [
        ({}, "exactly one of"),
        ({"energy": 0.9, "rank": 4}, "exactly one of"),
        ({"energy": 0.0}, "energy must be in"),
        ({"target_params": 1.5}, "target_params must be in"),
        ({"rank": 0}, "rank must be >= 1"),
        ({"energy": 0.9, "round_to": 0}, "round_to"),
        ({"energy": 0.9, "whitening": "qr"}, "whitening must be one of"),
    ],
)
def test_bad_configs_are_refused(config: dict, match: str) -> None:
    with pytest.raises(RecipeError, match=match):
        LowRankConfig(**config)


# --------------------------------------------------------------------------- #
# budgets, composition, exported models
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("what", ["target_params", "target_flops"])
def test_targets_are_met_across_layers(what: str) -> None:
    proto = _mlp(widths=(64, 256, 256, 64))
    model, report = _factorize(proto, **{what: 0.5})
    assert report.summary["target_met"] and len(report.changed) >= 2
    assert 0.42 <= report.summary["planned_fraction"] <= 0.5
    if what == "target_params":
        assert count_params(model)[0] <= 0.5 * count_params(to_ir(proto))[0]
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    assert ort_run(model, feeds)["y"].shape == (4, 64)


def _mlp(widths: tuple[int, ...]) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i, (n, m) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = (rng.standard_normal((n, m)) @ np.diag(0.9 ** np.arange(m)) / np.sqrt(n)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        out = "y" if i == len(widths) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [out], name=f"mm{i}"))
        x = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", widths[-1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_composes_after_structured_pruning() -> None:
    pytest.importorskip("torch")
    from tests.models.structured_zoo import zoo_onnx

    proto = zoo_onnx("resnet_basic", dynamo=False)
    model = to_ir(proto)
    before = count_params(model)[0]
    context = PassContext(calibration=ArraySource(_image_batch(8), input_specs(model), "calib"))
    pipeline = Pipeline(
        [
            ChannelPrunePass(ChannelPruneConfig(ratio=0.25, reconstruct=False), context),
            LowRankPass(LowRankConfig(energy=0.9, activation_aware=True), context),
        ]
    )
    result = pipeline(model)
    pruned_only = ChannelPrunePass(ChannelPruneConfig(ratio=0.25, reconstruct=False))(to_ir(proto)).model
    [channels, lowrank] = result.reports
    assert channels.changed and lowrank.changed
    assert count_params(result.model)[0] < count_params(pruned_only)[0] < before
    out = ort_run(_check_runs(result.model), {"x": _image_batch(2)["x"]})["y"]
    assert np.isfinite(out).all()


def _image_batch(n: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)}


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("arch", ["transformer_mlp", "resnet_bottleneck"])
def test_exported_models_full_rank_exact_and_truncated_run(arch: str, dynamo: bool) -> None:
    pytest.importorskip("torch")
    from tests.models.structured_zoo import example_input, zoo_onnx

    proto = zoo_onnx(arch, dynamo=dynamo)
    feeds = {"x": example_input(arch, batch=2, seed=7).numpy()}
    want = ort_run(proto, feeds)["y"]
    exact, report = _factorize(proto, **EXACT)
    assert report.changed
    assert _rel(ort_run(_check_runs(exact), feeds)["y"], want) <= 1e-5
    truncated, report = _factorize(proto, energy=0.8)
    _check_runs(truncated)
    assert ort_run(truncated, feeds)["y"].shape == want.shape
    assert count_params(truncated)[0] < count_params(to_ir(proto))[0]


def test_graphsurgeon_adapter_runs_lowrank() -> None:
    gs = pytest.importorskip("onnx_graphsurgeon")
    from onnxprune.graphsurgeon import run_on_graphsurgeon

    proto = matmul_layer(n=64, m=64)
    graph = gs.import_onnx(proto)
    new = run_on_graphsurgeon(LowRankPass(LowRankConfig(rank=8)), graph)
    assert [n.op for n in new.nodes].count("MatMul") == 2
    feeds = _inputs(proto, 3, seed=2)
    out = ort_run(gs.export_onnx(new), feeds)["y"]
    assert out.shape == ort_run(proto, feeds)["y"].shape


# --------------------------------------------------------------------------- #
# CLI and recipes
# --------------------------------------------------------------------------- #


def test_cli_lowrank_writes_a_smaller_model(tmp_path, digits_model, digits_calib) -> None:  # noqa: ANN001
    digest = sha256(digits_model)
    out, report = tmp_path / "lr.onnx", tmp_path / "r.json"
    args = ["-q", "lowrank", str(digits_model), "-o", str(out), "--target-params", "0.5", "--activation-aware"]
    result = CliRunner().invoke(cli, [*args, "--calib", str(digits_calib), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert sha256(digits_model) == digest
    import json

    data = json.loads(report.read_text())
    [lowrank] = [p for p in data["passes"] if p["name"] == "lowrank"]
    assert lowrank["summary"]["target_met"] and lowrank["changed"]
    assert data["after"]["params"] <= 0.5 * data["before"]["params"]
    [logits] = data["validation"]["outputs"]
    assert logits["top1_agreement"] >= 0.95


def test_cli_recipe_round_trip_and_errors(tmp_path, digits_model) -> None:  # noqa: ANN001
    runner = CliRunner()
    args = ["lowrank", str(digits_model), "-o", str(tmp_path / "o.onnx"), "--energy", "0.9", "--energy-transfer"]
    dumped = runner.invoke(cli, [*args, "--no-bn-rectify", "--round-to", "4", "--dump-recipe"])
    assert dumped.exit_code == 0, dumped.output
    recipe = yaml.safe_load(dumped.output)
    [spec, _cleanup] = recipe["passes"]
    assert spec["name"] == "lowrank" and spec["config"]["energy"] == 0.9
    assert spec["config"]["energy_transfer"] and not spec["config"]["bn_rectify"] and spec["config"]["round_to"] == 4
    (tmp_path / "r.yaml").write_text(dumped.output)
    ran = runner.invoke(cli, ["-q", "run", str(tmp_path / "r.yaml")])
    assert ran.exit_code == 0, ran.output and (tmp_path / "o.onnx").is_file()
    both = runner.invoke(cli, [*args, "--rank", "4"])
    assert both.exit_code == 2 and "exactly one of" in both.output
    missing = runner.invoke(
        cli, ["lowrank", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "x.onnx"), "--rank", "4"]
    )
    assert missing.exit_code == 2 and "nope.onnx" in missing.output and len(missing.output.strip().splitlines()) == 1
    assert "lowrank" in PASSES


def test_external_data_weights_stay_out_of_memory(tmp_path) -> None:  # noqa: ANN001
    from onnxprune import _io

    proto = matmul_layer(n=64, m=64)
    source = _io.save(to_ir(proto), tmp_path / "in.onnx", external_data=True, size_threshold_bytes=0)
    model = _io.load(source)
    result = LowRankPass(LowRankConfig(**EXACT))(model)
    [entry] = result.report.changed
    for name in entry["factors"]:
        assert isinstance(model.graph.initializers[name].const_value, ir.ExternalTensor)
    out = _io.save(model, tmp_path / "out" / "lr.onnx", external_data=True, size_threshold_bytes=0)
    feeds = _inputs(proto, 3, seed=3)
    assert _rel(ort_run(_io.load(out), feeds)["y"], ort_run(proto, feeds)["y"]) <= 1e-5


def test_inspect_ranks_lists_spectra_and_reasons(digits_model) -> None:  # noqa: ANN001
    import json

    result = CliRunner().invoke(cli, ["inspect", str(digits_model), "--ranks", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["tensor"]: r for r in json.loads(result.output)}
    fc = rows["classifier.1.weight"]
    assert (fc["m"], fc["n"], fc["full_rank"]) == (64, 512, 64)
    assert fc["ranks"]["0.9"] <= fc["ranks"]["0.95"] <= fc["ranks"]["0.99"] <= 64
    assert fc["break_even"] == pytest.approx(64 * 512 / 576)
    table = CliRunner().invoke(cli, ["inspect", str(digits_model), "--ranks"])
    assert table.exit_code == 0 and "break-even" in table.output


# --------------------------------------------------------------------------- #
# sensitivity allocation
# --------------------------------------------------------------------------- #


def test_saved_fraction_curve_and_rank_for_saving() -> None:
    xs, ys = saved_fraction_curve(np.array([0.0, 0.25, 0.5, 0.9]), np.array([0.0, 0.1, 0.3, 0.8]), 64, 64)
    assert xs[0] == 0.0 and ys[0] == 0.0
    assert np.all(np.diff(xs) > 0) and xs[-1] == pytest.approx(1 - 6 * 128 / 64**2)  # rank 6 of 64
    assert len(xs) == 2  # ranks 48 and 32 of 64 save nothing (break-even 32): dropped
    assert rank_for_saving(0.0, 64, 64, 8) == 0
    rank = rank_for_saving(0.5, 64, 64, 8)
    assert rank == 16 and rank * 128 <= 0.5 * 64 * 64
    assert rank_for_saving(0.99, 64, 64, 8) == 1  # below one multiple: the rank itself, at least 1


def test_sensitivity_allocation_meets_the_budget_with_measured_curves() -> None:
    """Layers whose truncation hurts the output more keep more rank; the budget is met."""
    proto = _mlp(widths=(64, 128, 128, 64))
    x = np.random.default_rng(1).standard_normal((48, 64)).astype(np.float32)
    model = to_ir(proto)
    context = PassContext(calibration=ArraySource({"x": x}, input_specs(model), "test"))
    result = LowRankPass(LowRankConfig(target_params=0.6, allocation="sensitivity"), context)(model)
    summary = result.report.summary
    assert summary["allocation"] == "sensitivity" and summary["target_met"]
    assert count_params(result.model)[0] <= 0.6 * count_params(to_ir(proto))[0]
    assert ort_run(result.model, {"x": x[:4]})["y"].shape == (4, 64)


def test_sensitivity_allocation_needs_a_budget_and_data(tmp_path, digits_model) -> None:  # noqa: ANN001
    with pytest.raises(RecipeError, match="spreads a budget"):
        LowRankConfig(energy=0.9, allocation="sensitivity")
    with pytest.raises(RecipeError, match="allocation must be one of"):
        LowRankConfig(target_params=0.5, allocation="owl")
    out = tmp_path / "lr.onnx"
    args = ["lowrank", str(digits_model), "-o", str(out), "--target-params", "0.5", "--allocation", "sensitivity"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "needs calibration data" in result.output
    assert not out.exists()
