"""Dynamic sparse training in the fine-tuning loop: RigL/SET, GaP and SCL (``finetune --method``).

RigL keeps every tensor's count fixed while its mask changes, grows by the hand-computed gradient
and starts grown weights at 0; GaP grows every part once and ends at the target; SCL ends at the
target density and the written model is θ ⊙ mask in onnxruntime; no steps (or no update inside the
run) change nothing; bad options are one line, exit 2; the presets' recipes run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxprune import _io
from onnxprune._field_docs import undocumented
from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import FinetuneConfig, FinetunePass
from onnxprune.passes._erk import erk_densities
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodRun, StepState, method_options
from onnxprune.presets import PRESETS
from onnxprune.recipe import CalibrationSpec, PassSpec, Recipe, run_recipe
from tests.conftest import DIGITS, ort_run, to_ir
from tests.models.handbuilt import mlp_model

torch = pytest.importorskip("torch")

from onnxprune.passes._dst import drop_and_grow, largest  # noqa: E402 - needs torch
from onnxprune.passes._dst_scl import per_feature_normalized  # noqa: E402
from onnxprune.passes._train import Masks, TrainData, TrainSettings, train  # noqa: E402
from onnxprune.torchview import TorchView, write_back  # noqa: E402


def _settings(steps: int, **changes: Any) -> TrainSettings:
    config = FinetuneConfig(lr=changes.pop("lr", 1e-2), **changes)  # the loop itself takes 0 steps too
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    values = {k: v for k, v in dataclasses.asdict(config).items() if k in known}
    return TrainSettings(**{**values, "steps": steps, "eval_every": max(1, steps)})


class _Spy(MethodRun):
    """Delegates to a method's run, counting hook calls and letting a test look at every step."""

    def __init__(self, inner: MethodRun, check: Any = None) -> None:
        self.inner, self.check = inner, check
        self.calls = {"before_step": 0, "after_backward": 0, "after_step": 0}

    def settled_at(self, steps: int) -> int:
        return self.inner.settled_at(steps)

    def _hook(self, hook: str, state: StepState) -> None:
        self.calls[hook] += 1
        getattr(self.inner, hook)(state)
        if self.check is not None:
            self.check(hook, state, self.inner)

    def before_step(self, state: StepState) -> None:
        self._hook("before_step", state)

    def after_backward(self, state: StepState) -> None:
        self._hook("after_backward", state)

    def after_step(self, state: StepState) -> None:
        self._hook("after_step", state)

    def summary(self) -> dict[str, Any]:
        return self.inner.summary()


class _Setup:
    """An MLP (MatMul W1[16,32], Gemm W2[10,32] transB) distilling from a differently seeded teacher."""

    def __init__(self, proto: Any = None, n: int = 64) -> None:
        self.model = to_ir(proto if proto is not None else mlp_model(seed=0))
        teacher = to_ir(mlp_model(seed=1)) if proto is None else self.model
        x = np.random.default_rng(0).standard_normal((n, *self._in_shape())).astype(np.float32)
        out = self.model.graph.outputs[0].name
        target = ort_run(teacher, {"x": x})[out]
        if proto is not None:  # a teacher for a single layer: a fixed random target
            target = np.random.default_rng(1).standard_normal(target.shape).astype(np.float32)
        self.data = TrainData({"x": x}, {out: target})
        self.view = TorchView(self.model)
        weights = [w for w in find_weights(self.model) if w.name in self.view.named_tensors()]
        self.masks = Masks(self.view, [w.name for w in weights], {w.name: w.out_axis for w in weights})

    def _in_shape(self) -> tuple[int, ...]:
        dims = self.model.graph.inputs[0].shape
        return tuple(int(d) for d in list(dims)[1:])

    def prune(self, sparsity: float) -> None:
        self.masks.prune_to(sparsity, torch.Generator().manual_seed(0), scope="layer")

    def run(self, method: str, steps: int, options: dict | None = None, check: Any = None, **settings: Any) -> Any:
        config = _settings(steps, **settings)
        inner = SPARSE_METHODS[method].start(method_options(method, options or {}), config, self.masks, self.view)
        spy = _Spy(inner, check)
        history = train(self.view, self.data, config, self.masks, method=spy)
        return spy, history

    def weights(self) -> dict[str, np.ndarray]:
        return {n: p.detach().numpy().copy() for n, p in self.masks.params.items()}


@pytest.mark.parametrize(
    ("method", "options"),
    [("rigl", {"update_every": 3}), ("gap", {"partitions": 2}), ("scl", {"target_density": 0.5})],
)
def test_every_hook_is_called_at_every_step(method: str, options: dict) -> None:
    setup = _Setup()
    setup.prune(0.5)
    spy, history = setup.run(method, 10, options)
    assert spy.calls == {"before_step": 10, "after_backward": 10, "after_step": 10}
    assert history["method"] == spy.inner.summary() and history["method"]


def test_rigl_keeps_counts_fixed_changes_masks_and_starts_grown_weights_at_zero() -> None:
    setup = _Setup()
    setup.prune(0.7)
    counts = {n: int(k.sum()) for n, k in setup.masks.keep.items()}
    seen: list[dict[str, int]] = []
    grown_values: list[float] = []
    before: dict[str, torch.Tensor] = {}

    def check(hook: str, state: StepState, run: Any) -> None:
        keep = state.masks.keep
        if hook == "before_step":
            before.update({n: k.clone() for n, k in keep.items()})
        if hook == "after_step":
            seen.append({n: int(k.sum()) for n, k in keep.items()})
            for name, param in state.masks.params.items():
                grown = keep[name] & ~before[name]
                if state.step % 4 == 0 and state.step:  # an update: no optimizer step, grown weights stay 0
                    grown_values.extend(param.detach()[grown].abs().tolist())

    spy, history = setup.run("rigl", 30, {"update_every": 4, "end": 1.0}, check)
    assert all(c == counts for c in seen)
    summary = spy.inner.summary()
    assert summary["updates"] == 7 and summary["regrown"] > 0 and grown_values and max(grown_values) == 0.0
    assert [u["step"] for u in summary["per_update"]] == [4, 8, 12, 16, 20, 24, 28]
    fractions = [u["drop_fraction"] for u in summary["per_update"]]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] < 0.3  # cosine decay
    assert 0 < summary["mask_change_mean"] <= 0.3
    assert history["sparsity"] == pytest.approx(0.7, abs=1e-2)


def test_drop_and_grow_drops_smallest_and_grows_largest_score() -> None:
    weight = torch.tensor([[0.5, 0.0, -0.1], [0.0, 2.0, 0.0]])
    keep = weight != 0
    grow = torch.tensor([[9.0, 1.0, 0.0], [3.0, 0.0, 2.0]])  # a kept weight's score (9.0) must not count
    new = drop_and_grow(weight, grow, keep, 1)
    assert new.tolist() == [[True, False, False], [True, True, False]]
    assert int(new.sum()) == int(keep.sum())
    assert largest(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2).tolist() == [False, True, True, False]


def _single_matmul() -> Any:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    w[np.abs(w) < 0.8] = 0  # a sparse start
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_rigl_grows_the_largest_hand_computed_gradients() -> None:
    setup = _Setup(_single_matmul(), n=16)
    x, t = setup.data.inputs["x"], next(iter(setup.data.teacher.values()))
    expected: dict[str, np.ndarray] = {}

    def check(hook: str, state: StepState, run: Any) -> None:
        if hook == "before_step" and state.step == 1:
            w = state.masks.params["W"].detach().numpy().copy()
            keep = state.masks.keep["W"].numpy().copy()
            # relative MSE distillation: L = mean((xW - t)^2) / mean(t^2) over the whole batch
            grad = 2 * x.T @ (x @ w - t) / (t.size * np.mean(t**2))
            count = int(0.3 * keep.sum())
            kept = np.zeros(w.size, bool)
            kept[np.argsort(-np.where(keep, np.abs(w), -np.inf).ravel(), kind="stable")[: keep.sum() - count]] = True
            grown = np.zeros(w.size, bool)
            grown[np.argsort(-np.where(kept, -np.inf, np.abs(grad).ravel()), kind="stable")[:count]] = True
            expected["keep"] = (kept | grown).reshape(w.shape)
            expected["grown"] = (grown & ~keep.ravel()).reshape(w.shape)
        if hook == "after_backward" and state.step == 1:
            assert np.array_equal(state.masks.keep["W"].numpy(), expected["keep"])
            assert (
                state.masks.params["W"].detach().numpy()[expected["grown"]].tolist() == [0.0] * expected["grown"].sum()
            )

    options = {"update_every": 1, "end": 1.0, "decay": "constant"}
    spy, _ = setup.run("rigl", 2, options, check, batch_size=16, optimizer="sgd", momentum=0.0)
    assert expected["grown"].any() and spy.inner.summary()["regrown"] == int(expected["grown"].sum())


def test_set_grows_at_random_with_the_same_counts() -> None:
    setup = _Setup()
    setup.prune(0.8)
    counts = {n: int(k.sum()) for n, k in setup.masks.keep.items()}
    start = {n: k.clone() for n, k in setup.masks.keep.items()}
    spy, _ = setup.run("rigl", 12, {"update_every": 5, "grow": "random", "end": 1.0})
    assert {n: int(k.sum()) for n, k in setup.masks.keep.items()} == counts
    assert any(not torch.equal(start[n], setup.masks.keep[n]) for n in counts)
    assert spy.inner.summary()["updates"] == 2


def test_rigl_prunes_a_dense_model_to_erk_densities() -> None:
    setup = _Setup()
    spy, history = setup.run("rigl", 5, {"sparsity": 0.8, "update_every": 2})
    densities = erk_densities({n: tuple(p.shape) for n, p in setup.masks.params.items()}, 0.8)
    for name, keep in setup.masks.keep.items():
        assert int(keep.sum()) == max(1, round(densities[name] * keep.numel()))
    assert (
        history["sparsity"] == pytest.approx(0.8, abs=1e-2) and spy.settled_at(5) == 3
    )  # one update, at step 2 (< 0.75 · 5)


def test_erk_densities() -> None:
    shapes = {"conv": (8, 4, 3, 3), "fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}
    sizes = {n: int(np.prod(s)) for n, s in shapes.items()}
    for sparsity in (0.5, 0.9, 0.98):
        d = erk_densities(shapes, sparsity)
        kept = sum(d[n] * sizes[n] for n in shapes)
        assert kept == pytest.approx((1 - sparsity) * sum(sizes.values()), rel=1e-9)
        assert max(d.values()) <= 1 and d["fc1"] < d["fc2"] <= d["fc3"]
        free = [n for n in shapes if d[n] < 1]
        ratios = {n: d[n] * np.prod(shapes[n]) / sum(shapes[n]) for n in free}  # ε the same for every free tensor
        assert max(ratios.values()) == pytest.approx(min(ratios.values()))
    assert erk_densities(shapes, 0.5)["fc3"] == 1.0  # 110/1000 · ε > 1: made dense
    assert list(erk_densities(shapes, 0.9, power=0).values()) == pytest.approx([0.1] * 4)


def test_gap_grows_every_part_once_and_ends_at_the_target() -> None:
    setup = _Setup()
    dense_parts: set[str] = set()

    def check(hook: str, state: StepState, run: Any) -> None:
        if hook == "after_backward":
            dense_parts.update(n for n, k in state.masks.keep.items() if bool(k.all()))

    spy, history = setup.run("gap", 30, {"partitions": 2, "sparsity": 0.8}, check)
    summary = spy.inner.summary()
    assert summary["every_part_grown"] and summary["parts"] == [1, 1] and summary["steps_per_phase"] == 10
    assert dense_parts == set(setup.masks.params)
    for name, keep in setup.masks.keep.items():
        assert int(keep.sum()) == round(0.2 * keep.numel())
        assert int((setup.masks.params[name] != 0).sum()) <= int(keep.sum())
    assert [p["end"] for p in summary["phases"]] == [10, 20] and spy.settled_at(30) == 20
    assert history["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_gap_prunes_back_at_the_last_step_when_the_run_is_short() -> None:
    setup = _Setup()
    setup.prune(0.6)
    counts = {n: int(k.sum()) for n, k in setup.masks.keep.items()}
    spy, _ = setup.run("gap", 5, {"partitions": 4, "steps_per_phase": 4})
    assert {n: int(k.sum()) for n, k in setup.masks.keep.items()} == counts
    assert [p["part"] for p in spy.inner.summary()["phases"]] == [0, 1] and spy.settled_at(5) == 5


def test_scl_reaches_the_target_and_writes_theta_times_mask(tmp_path: Path) -> None:
    setup = _Setup()
    spy, history = setup.run("scl", 60, {"target_density": 0.3, "mask_lr": 0.1})
    run = spy.inner
    summary = run.summary()
    assert summary["density"] == pytest.approx(0.3, abs=1e-3) and history["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert summary["learned_density"] == pytest.approx(0.3, abs=0.01)  # λ alone met the schedule
    write_back(setup.view, setup.model, list(setup.view.named_tensors()))
    path = tmp_path / "scl.onnx"
    _io.save(setup.model, path)
    written = _io.load(path)
    x = setup.data.inputs["x"][:8]
    masked = {n: (run.theta[n] * (run.logits[n] > 0)).numpy() for n in run.theta}
    b1, b2 = (setup.view.parameter(n).detach().numpy() for n in ("b1", "b2"))
    expected = np.maximum(x @ masked["W1"] + b1, 0) @ masked["W2"].T + b2
    np.testing.assert_allclose(ort_run(written, {"x": x})["y"], expected, rtol=1e-5, atol=1e-5)


def test_scl_normalizes_the_mask_gradient_per_output_feature() -> None:
    grad = torch.randn(16, 32)  # MatMul layout [in, out]: an output feature is a column
    columns = per_feature_normalized(grad, 1)
    assert torch.allclose(columns.norm(dim=0), torch.ones(32))
    rows = per_feature_normalized(torch.randn(10, 3, 2, 2), 0)  # Conv [out, in, kh, kw]
    assert torch.allclose(rows.reshape(10, -1).norm(dim=1), torch.ones(10))
    setup = _Setup()
    assert setup.masks.out_axes == {"W1": 1, "W2": 0}


@pytest.mark.parametrize(
    ("method", "options"),
    [("rigl", {"sparsity": 0.9}), ("gap", {"sparsity": 0.9}), ("scl", {"target_density": 0.1})],
)
def test_zero_steps_change_nothing(method: str, options: dict) -> None:
    setup = _Setup()
    setup.prune(0.5)
    weights, keep = setup.weights(), {n: k.clone() for n, k in setup.masks.keep.items()}
    setup.run(method, 0, options)
    assert all(np.array_equal(weights[n], w) for n, w in setup.weights().items())
    assert all(torch.equal(keep[n], k) for n, k in setup.masks.keep.items())


def test_rigl_without_an_update_inside_the_run_trains_like_no_method() -> None:
    plain, rigl = _Setup(), _Setup()
    for setup in (plain, rigl):
        setup.prune(0.5)
    plain.run("none", 20)
    spy, _ = rigl.run("rigl", 20, {"update_every": 50})
    assert spy.inner.summary()["updates"] == 0 and spy.settled_at(20) == 0
    assert all(np.array_equal(plain.weights()[n], w) for n, w in rigl.weights().items())


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("drop_fraction=1.5", "drop_fraction must be in [0, 1]"),
        ("grow=best", "grow must be one of gradient, random"),
        ("update_every=0", "update_every must be >= 1"),
        ("speed=3", "has no option 'speed'"),
        ("sparsity=yes", "sparsity"),
    ],
)
def test_bad_method_options_are_one_line_exit_2(tmp_path: Path, option: str, message: str) -> None:
    model = DIGITS / "digits_cnn.onnx"
    args = ["finetune", str(model), "-o", str(tmp_path / "o.onnx"), "--teacher", str(model)]
    args += ["--calib", str(DIGITS / "digits_calib.npz"), "--method", "rigl", "--method-option", option]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_option_checks_of_gap_and_scl() -> None:
    for method, raw in [
        ("gap", {"partitions": 0}),
        ("gap", {"partition": "blocks"}),
        ("scl", {"target_density": 0}),
        ("scl", {"mask_lr": 0.0}),
        ("scl", {"normalize": "layer"}),
    ]:
        with pytest.raises(RecipeError):
            method_options(method, raw)


def test_finetune_pass_reports_the_method_and_writes_the_masks() -> None:
    model = to_ir(mlp_model(seed=0))
    x = np.random.default_rng(0).standard_normal((48, 16)).astype(np.float32)
    context = PassContext(
        calibration=ArraySource({"x": x}, input_specs(model), "calib"), reference=to_ir(mlp_model(seed=1))
    )
    config = FinetuneConfig(steps=20, lr=1e-2, method="rigl", method_options={"sparsity": 0.75, "update_every": 5})
    result = FinetunePass(config, context)(model)
    assert result.report.details["method"]["updates"] == 2
    assert result.report.summary["sparsity_after"] == pytest.approx(0.75, abs=1e-2)
    weights = {w.name: w for w in find_weights(model)}
    zeros = sum(int(np.sum(read_weight(w) == 0)) for w in weights.values())
    assert zeros / sum(w.size for w in weights.values()) == pytest.approx(0.75, abs=1e-2)


@pytest.mark.parametrize("name", ["rigl", "set", "gap", "scl"])
def test_preset_recipes_run(tmp_path: Path, name: str) -> None:
    preset = PRESETS[name]
    assert preset.method in {"M23", "M26", "M32"} and "torch" in preset.needs
    passes = []
    for entry in preset.passes:
        config = dict(entry["config"])
        if entry["name"] == "finetune":
            options = dict(config["method_options"])
            options.update({"update_every": 4} if config["method"] == "rigl" else {})
            config.update(steps=12, lr=1e-3, method_options=options)
        passes.append(PassSpec(entry["name"], config))
    model, calib, out = tmp_path / "mlp.onnx", tmp_path / "calib.npz", tmp_path / "out.onnx"
    model.write_bytes(mlp_model(seed=0).SerializeToString())
    np.savez(calib, x=np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    recipe = Recipe(
        str(model), str(out), tuple(passes), calibration=CalibrationSpec(str(calib)), validate=False, latency_runs=1
    )
    run_recipe(recipe)
    weights = find_weights(_io.load(out))
    total = sum(w.size for w in weights)
    zeros = sum(int(np.sum(read_weight(w) == 0)) for w in weights)
    assert zeros / total >= 0.85  # every preset ends ~90% sparse


def test_every_method_option_is_documented() -> None:
    for name in ("rigl", "gap", "scl"):
        method = SPARSE_METHODS[name]
        assert method.paper and method.description and not undocumented(method.options), name
