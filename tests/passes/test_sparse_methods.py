"""The sparse-training method hooks of the fine-tuning loop: call order, dense gradients, early stop,
option checks, and the masks a method changes written back (onnxruntime runs the result)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from onnxprune import _io
from onnxprune.calibration.sources import open_source
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import FinetuneConfig, FinetunePass
from onnxprune.passes._sparse_methods import (
    SPARSE_METHODS,
    MethodOptions,
    MethodRun,
    SparseMethod,
    StepState,
    method_options,
)
from tests.conftest import DIGITS, ort_run

torch = pytest.importorskip("torch")

WEIGHT = "classifier.1.weight"


@dataclasses.dataclass(frozen=True)
class _ProbeOptions(MethodOptions):
    stop_after: int = 0
    zero_rows: int = 0


class _ProbeRun(MethodRun):
    def __init__(self, options: _ProbeOptions) -> None:
        self.options = options
        self.calls: list[tuple[str, int]] = []
        self.grad_at_masked: list[float] = []

    def before_step(self, state: StepState) -> None:
        self.calls.append(("before", state.step))
        if state.step == 0 and self.options.zero_rows:
            state.masks.keep[WEIGHT][: self.options.zero_rows] = False
            state.masks.apply()

    def after_backward(self, state: StepState) -> None:
        self.calls.append(("backward", state.step))
        grad = state.masks.params[WEIGHT].grad
        assert grad is not None
        self.grad_at_masked.append(float(grad[~state.masks.keep[WEIGHT]].abs().sum()))

    def after_step(self, state: StepState) -> None:
        self.calls.append(("after", state.step))
        if self.options.stop_after and state.step + 1 >= self.options.stop_after:
            self.stop = True

    def summary(self) -> dict[str, Any]:
        return {"steps_seen": len({s for _, s in self.calls})}


@dataclasses.dataclass(frozen=True)
class _Probe(SparseMethod):
    name: str = "probe"
    description: str = "test probe"
    options: type[MethodOptions] = _ProbeOptions
    runs: list[_ProbeRun] = dataclasses.field(default_factory=list, compare=False)

    def start(self, options: MethodOptions, settings: Any, masks: Any, view: Any) -> MethodRun:
        assert isinstance(options, _ProbeOptions)
        self.runs.append(_ProbeRun(options))
        return self.runs[-1]


@pytest.fixture
def probe() -> Iterator[_Probe]:
    entry = SPARSE_METHODS.register(_Probe())
    try:
        yield entry
    finally:
        SPARSE_METHODS._entries.pop(entry.name)


def _finetune(**config: Any) -> tuple[Any, Any]:
    model = _io.load(DIGITS / "digits_cnn.onnx")
    context = PassContext(
        calibration=open_source(DIGITS / "digits_calib.npz", model), reference=_io.load(DIGITS / "digits_cnn.onnx")
    )
    result = FinetunePass(FinetuneConfig(lr=1e-3, holdout=0, seed=0, **config), context)(model)
    return model, result.report


def test_hooks_run_in_order_with_dense_gradients_and_masks_written_back(probe: _Probe) -> None:
    model, report = _finetune(steps=3, method="probe", method_options={"zero_rows": 2})
    run = probe.runs[-1]
    assert run.calls == [(h, s) for s in range(3) for h in ("before", "backward", "after")]
    assert all(g > 0 for g in run.grad_at_masked)  # a masked weight still gets its (dense) gradient
    weight = model.graph.initializers[WEIGHT].const_value.numpy()
    assert not weight[:2].any() and weight[2:].all()  # the mask the method set is written back
    assert report.summary["method"] == "probe" and report.details["method"] == {"steps_seen": 3}
    with np.load(DIGITS / "digits_test.npz") as test:
        assert np.isfinite(ort_run(model, {"input": test["input"][:8]})["logits"]).all()


def test_a_method_stops_training_early(probe: _Probe) -> None:
    _, report = _finetune(steps=50, method="probe", method_options={"stop_after": 4})
    assert report.summary["steps"] == 4


def test_the_default_method_changes_nothing_but_training() -> None:
    _, report = _finetune(steps=2)
    assert report.summary["method"] == "none" and "method" not in report.details


def test_method_options_are_checked(probe: _Probe) -> None:
    assert method_options("probe", {"stop_after": 2}) == _ProbeOptions(stop_after=2)
    with pytest.raises(
        RecipeError, match="method 'probe' has no option 'typo' \\(its options: stop_after, zero_rows\\)"
    ):
        FinetuneConfig(method="probe", method_options={"typo": 1})
    with pytest.raises(RecipeError, match="method option stop_after must be an integer"):
        FinetuneConfig(method="probe", method_options={"stop_after": "soon"})
    with pytest.raises(RecipeError, match="method must be one of"):
        FinetuneConfig(method="nope")


@pytest.mark.parametrize(
    ("method", "option", "message"),
    [
        ("none", "x", "--method-option takes KEY=VALUE, got 'x'"),
        ("none", "a=1", "method 'none' has no option 'a'"),
        ("platon", "sparsity=1.5", "sparsity must be in (0, 1)"),
        ("platon", "beta2=0", "beta2 in (0, 1]"),
        ("campfire", "block=window", "block must be one of kernel, filter"),
        ("campfire", "freeze_after=0", "freeze_after must be in"),
        ("early_bird", "eps=-1", "eps must be in [0, 1]"),
        ("early_bird", "scope=everywhere", "scope must be one of"),
        ("early_bird", "rate=0.5", "has no option 'rate'"),
        ("spectral", "mu=-1", "mu must be >= 0"),
        ("lrpet", "rank_ratio=1", "rank_ratio must be in (0, 1)"),
        ("lrpet", "redu_fac=1.5", "redu_fac in [0, 1)"),
        ("ap", "fraction=2", "fraction must be in [0, 1]"),
        ("ap", "from_cycle=0", "from_cycle >= 1"),
    ],
)
def test_cli_method_option_errors_are_one_line(tmp_path: Any, method: str, option: str, message: str) -> None:
    model = str(DIGITS / "digits_cnn.onnx")
    args = ["finetune", model, "-o", str(tmp_path / "o.onnx"), "--teacher", model, "--method", method]
    args += ["--calib", str(DIGITS / "digits_calib.npz"), "--method-option", option]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()
