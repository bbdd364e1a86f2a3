"""Hardware-aware widths: latency tables (measured, cached), fast steps, the latency budget, the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner

from onnxprune.analysis.channels import analyze_channels
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass, _hw_plan, _latency_table
from onnxprune.passes._allocate import GroupScores
from onnxprune.passes._hw_widths import fast_step, fast_steps, fit_saving, options_for, removal_loss
from onnxprune.passes._latency_table import GroupLatency, LatencySettings, LatencyTable, grid, latency_table
from onnxprune.passes._subgraph import cut_group, feed_for, shrunk_to
from tests.conftest import DIGITS, ort_run, sha256, to_ir
from tests.models.handbuilt import conv_model

#: a fast table for tests: few widths, few runs
QUICK = LatencySettings(points=4, runs=2, rounds=1, warmup=1)


def _digits() -> onnx.ModelProto:
    return onnx.load(DIGITS / "digits_cnn.onnx")


def _table(model: object, settings: LatencySettings, cache: Path) -> tuple[LatencyTable, Path | None]:
    shapes = complete_shapes(model)  # type: ignore[arg-type]
    analysis = analyze_channels(model, shapes)  # type: ignore[arg-type]
    gids = [g.id for g in analysis.prunable()]
    inputs = {v.name: shapes[v.name] for v in model.graph.inputs}  # type: ignore[attr-defined]
    return latency_table(model, analysis, gids, settings, shapes=inputs, cache=cache)  # type: ignore[arg-type]


def test_grid_is_aligned_bounded_and_ends_at_the_full_width() -> None:
    for units, block, step in [(96, 1, 1), (1152, 1, 1), (24, 1, 1), (40, 4, 8), (7, 1, 1)]:
        widths = grid(units, block, LatencySettings(step=step))
        assert widths[-1] == units and list(widths) == sorted(set(widths))
        assert len(widths) <= LatencySettings().points + 1
        assert all(w % np.lcm(block, step) == 0 for w in widths[:-1]) and widths[0] >= 0.1 * units
    around = grid(960, 1, LatencySettings(around=0.45))  # wanted 432: its neighbours at every alignment
    assert {432, 416, 448, 384}.issubset(around) and around[-1] == 960
    assert all(w % 8 == 0 for w in grid(40, 4, LatencySettings(step=8, around=0.5))[:-1])


def test_subgraph_is_small_and_runs_at_every_width() -> None:
    model = to_ir(_digits())
    analysis = analyze_channels(model, complete_shapes(model))
    for group in analysis.prunable():
        sub = cut_group(model, analysis, group.id)
        assert len(list(sub.model.graph)) < len(list(model.graph))
        feed = feed_for(sub)
        for width in (group.units // 2, group.units):
            outputs = ort_run(shrunk_to(sub, width), feed)
            assert all(np.isfinite(v).all() for v in outputs.values())


def test_latency_table_is_cached_and_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = to_ir(_digits())
    before = ir.to_proto(model).SerializeToString()
    table, path = _table(model, QUICK, tmp_path)
    assert ir.to_proto(model).SerializeToString() == before  # measured on copies
    assert path is not None and path.is_file() and path.is_relative_to(tmp_path)
    assert table.groups and not table.skipped
    for entry in table.groups.values():
        assert entry.widths[-1] == entry.units and len(entry.ms) == len(entry.widths)
        assert all(ms > 0 for ms in entry.ms)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(_latency_table, "_measure_group", refuse)
    again, again_path = _table(model, QUICK, tmp_path)
    assert again_path == path and again.to_dict() == table.to_dict()
    # another thread count or other input shapes: another key (measured anew)
    with pytest.raises(AssertionError, match="measured again"):
        _table(model, LatencySettings(points=4, runs=2, rounds=1, warmup=1, threads=2), tmp_path)
    analysis = analyze_channels(model, complete_shapes(model))
    gids = [g.id for g in analysis.prunable()]
    with pytest.raises(AssertionError, match="measured again"):
        latency_table(model, analysis, gids, QUICK, shapes={"input": (4, 1, 8, 8)}, cache=tmp_path)
    assert json.loads(path.read_text())["key"] == table.key


def test_cache_goes_to_xdg_cache_home_not_next_to_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONNXPRUNE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _, path = _table(to_ir(_digits()), QUICK, None)  # type: ignore[arg-type]
    assert path is not None and path.is_relative_to(tmp_path / "xdg" / "onnxprune" / "latency")
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "own"))
    _, path = _table(to_ir(_digits()), QUICK, None)  # type: ignore[arg-type]
    assert path is not None and path.is_relative_to(tmp_path / "own")


# -- selection on injected tables -----------------------------------------------------------------

STAIRS = GroupLatency("conv", 64, (8, 16, 24, 32, 40, 48, 56, 64), (1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 4.0))


def test_fast_steps_are_the_plateau_ends() -> None:
    assert fast_steps(STAIRS) == (16, 40, 56, 64)
    noisy = GroupLatency("conv", 64, STAIRS.widths, (1.0, 1.02, 2.0, 2.05, 1.99, 3.0, 3.0, 4.0))
    assert fast_steps(noisy) == (16, 40, 56, 64)  # within the noise: one plateau


def test_fast_step_keeps_free_channels_near_the_wanted_width() -> None:
    widths = (16, 24, 28, 30, 32, 36, 40, 48, 64)
    linear = GroupLatency("c", 64, widths, tuple(w / 64 for w in widths))
    assert fast_step(linear, 32) == 32 and fast_step(linear, 31) == 32  # no free channels: the nearest
    unaligned = GroupLatency("c", 64, widths, (1.0, 1.5, 1.5, 1.5, 2.0, 2.5, 2.0, 2.0, 3.0))
    assert fast_step(unaligned, 30) == 28  # within reach (28..32) as fast as 30, and more aligned
    assert fast_step(unaligned, 34) == 48  # from 32 (nearest, most aligned): 40 and 48 are as fast
    flat = GroupLatency("c", 64, widths, (1.0, 1.0, 1.01, 1.0, 1.02, 0.99, 1.0, 1.01, 1.0))
    assert fast_step(flat, 32) == 64  # pruning buys no time: the group stays whole
    steps = GroupLatency("c", 64, widths, (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0))
    assert fast_step(steps, 40) == 48  # 48 is as fast as 40: 8 channels for free
    assert fast_step(GroupLatency("c", 8, (2, 4, 6, 8), (1.0, 1.0, 2.0, 2.0)), 4) == 4


def _brute_force(choices: dict, need: float) -> float:
    best = float("inf")
    for picked in itertools.product(*(range(len(o.widths)) for o in choices.values())):
        options = list(choices.values())
        saving = sum(o.saving[i] for o, i in zip(options, picked, strict=True))
        if saving >= need - 1e-9:
            best = min(best, sum(o.loss[i] for o, i in zip(options, picked, strict=True)))
    return best


def test_fit_saving_meets_the_need_near_the_optimum() -> None:
    rng = np.random.default_rng(0)
    for trial in range(20):
        choices = {}
        for gid in range(4):
            units = int(rng.choice([16, 32, 48]))
            widths = tuple(range(units // 4, units + 1, units // 4))
            ms = np.sort(rng.uniform(0.1, 2.0, len(widths)))
            table = GroupLatency(f"g{gid}", units, widths, tuple(float(m) for m in ms))
            scores = GroupScores(units, 1, rng.uniform(0.1, 1.0, units))
            choices[gid] = options_for(table, scores)
        most = sum(float(o.saving.max()) for o in choices.values())
        need = float(rng.uniform(0.1, 0.9)) * most
        widths, saving = fit_saving(choices, need)
        assert saving >= need - 1e-9, trial
        loss = sum(float(o.loss[o.widths.index(widths[g])]) for g, o in choices.items())
        optimum = _brute_force(choices, need)
        assert loss <= optimum * 1.5 + 1e-9, (trial, loss, optimum)
        for gid, width in widths.items():
            assert width in choices[gid].widths


def test_removal_loss_takes_the_lowest_blocks_first() -> None:
    scores = GroupScores(4, 2, np.array([1.0, 1.0, 5.0, 5.0]))
    assert removal_loss(scores, (2, 4)).tolist() == pytest.approx([(2 / 12) ** 2, 0.0])


def _fake_ms(width: int, units: int) -> float:
    """Injected latency of a group's subgraph: proportional to the width, with a step at half the group."""
    return 0.1 * width / units + (0.05 if width > units // 2 else 0.0)


def _fake_table(model: object, analysis: object, gids: object, settings: object, **kwargs: object) -> tuple:
    """Latency proportional to the group's width, plus a step at half the group (no measurement)."""
    groups = {}
    for gid in gids:  # type: ignore[attr-defined]
        group = analysis.groups[gid]  # type: ignore[attr-defined]
        widths = grid(group.units, group.block, LatencySettings())
        ms = tuple(_fake_ms(w, group.units) for w in widths)
        groups[group.producers[0]] = GroupLatency(group.producers[0], group.units, widths, ms)
    return LatencyTable("fake", {}, groups, {}, 0.0), None


@pytest.mark.parametrize("factor", [1.2, 0.7])
def test_target_latency_is_respected_with_an_injected_table(monkeypatch: pytest.MonkeyPatch, factor: float) -> None:
    """The budget logic, with a fake table and a fake clock: the model saves ``factor`` x the table's prediction."""
    monkeypatch.setattr(_hw_plan, "latency_table", _fake_table)
    dense_ms = 1.0

    def fake_measure(setup: object, candidate: object) -> tuple[float, float]:
        def widths(model: object) -> dict[str, int]:  # output channels of every Conv/Gemm (the producers)
            shapes = complete_shapes(model)  # type: ignore[arg-type]
            return {n.name: shapes[n.outputs[0].name][1] for n in model.graph if n.op_type in ("Conv", "Gemm")}  # type: ignore[attr-defined]

        full, kept = widths(setup.model), widths(candidate)  # type: ignore[attr-defined]
        saving = sum(_fake_ms(full[n], full[n]) - _fake_ms(kept[n], full[n]) for n in full)
        return dense_ms, dense_ms - factor * saving

    monkeypatch.setattr(_hw_plan, "_measure", fake_measure)
    retried = 0
    for target in (0.95, 0.85, 0.8):
        model = to_ir(_digits())
        config = ChannelPruneConfig(target_latency=target, reconstruct=False, verify=True)
        summary = ChannelPrunePass(config, PassContext())(model).report.summary
        assert summary["target_latency_met"] and summary["latency_measured_ms"] <= target * 1.03
        assert summary["verify_max_rel_diff"] < 1e-5
        tries = summary["tries"]
        assert tries and (tries[0]["predicted_ms"] > tries[0]["measured_ms"]) == (factor > 1)
        if len(tries) > 1:  # later tries are calibrated by the measured saving of the earlier ones
            assert tries[-1]["predicted_ms"] == pytest.approx(tries[-1]["measured_ms"], abs=1e-6)
        if tries[0]["measured_ms"] > target * 1.03:  # the first try missed: the need grew by the miss
            retried += 1
            assert len(tries) > 1 and tries[1]["need_ms"] > tries[0]["need_ms"]
    assert (retried > 0) == (factor < 1)
    with pytest.raises(RecipeError, match="out of reach"):
        ChannelPrunePass(ChannelPruneConfig(target_latency=0.01, reconstruct=False), PassContext())(to_ir(_digits()))


def test_measured_widths_are_in_the_table_and_exact(tmp_path: Path) -> None:
    """The real path once: measured table, kept widths from it, shrunk model == masked model."""
    proto = _digits()
    model = to_ir(proto)
    cache = str(tmp_path)
    config = ChannelPruneConfig(ratio=0.5, widths="measured", latency_cache=cache, reconstruct=False, verify=True)
    result = ChannelPrunePass(config, PassContext(threads=1))(model)
    summary = result.report.summary
    # measured widths on a loaded machine may keep every group whole; either way shrunk == masked
    assert summary["verify_max_rel_diff"] < 1e-5 and summary["groups_measured"] > 0, summary
    assert summary["latency_measured_ms"] > 0 and summary["latency_predicted_ms"] > 0
    table = LatencyTable.from_dict(json.loads(Path(summary["latency_table"]).read_text()))
    for change in result.report.changed:
        entry = table.groups[change["producers"][0]]
        assert change["kept"] in entry.widths and change["kept"] >= change["units"] // 2 - entry.widths[0]
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert ort_run(model, {"input": x})[model.graph.outputs[0].name].shape == (2, 10)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target_latency": 0.0}, "target_latency must be > 0"),
        ({"target_latency": -3.0}, "target_latency must be > 0"),
        ({"target_latency": 5.0, "target_flops": 0.5}, "one of target_latency"),
        ({"widths": "fast"}, "widths must be one of"),
        ({"widths": "measured", "scope": "global"}, "does not combine"),
        ({"ep": "tpu"}, "ep must be one of"),
    ],
)
def test_bad_configs_are_refused(config: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        ChannelPruneConfig(**config)


# -- command line -----------------------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> object:
    model = tmp_path / "m.onnx"
    if not model.exists():
        onnx.save(conv_model(), model)
    return CliRunner().invoke(cli, ["prune", str(model), "-o", str(tmp_path / "out.onnx"), *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-latency", "0"], "--target-latency"),
        (["--target-latency", "-1"], "--target-latency"),
        (["--target-latency", "abc"], "--target-latency"),
        (["--target-latency", "5", "--target-flops", "0.5"], "one of"),
        (["--target-latency", "5", "--ep", "cuda"], "CUDAExecutionProvider"),
        (["--target-latency", "5", "--ep", "npu"], "--ep"),
        (["--target-latency", "0.000001"], "out of reach"),
        (["--channels", "0.5", "--widths", "measured", "--scope", "global"], "does not combine"),
        (["--sparsity", "0.5", "--target-latency", "5"], "exactly one of"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    result = _cli(tmp_path, *args)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert message in lines[-1] and not (tmp_path / "out.onnx").exists()
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_cli_target_latency_writes_a_model_and_leaves_the_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(), model)
    before = sha256(model)
    report = tmp_path / "report.json"
    result = _cli(tmp_path, "--target-latency", "1000", "--threads", "1", "--report", str(report))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert sha256(model) == before and (tmp_path / "out.onnx").is_file()
    assert list((tmp_path / "cache" / "latency").glob("latency-*.json"))
    assert not list(tmp_path.glob("*.json.tmp")) and not list(tmp_path.glob(".onnxprune-*"))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    out = ort_run(onnx.load(tmp_path / "out.onnx"), {"x": x})
    assert np.allclose(out["y"], ort_run(conv_model(), {"x": x})["y"], atol=1e-5)  # the budget is met dense


def test_cli_max_drop_refuses_a_latency_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    args = ["prune", str(DIGITS / "digits_cnn.onnx"), "-o", str(tmp_path / "out.onnx"), "--target-latency", "5"]
    calib = ["--calib", str(DIGITS / "digits_calib.npz"), "--max-drop", "1"]
    result = CliRunner().invoke(cli, [*args, *calib])
    assert result.exit_code == 2 and "cannot search a latency budget" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "out.onnx").exists()


def test_measure_latencies_times_every_session() -> None:
    from onnxprune import _ort
    from onnxprune.verify import measure_latencies

    model = to_ir(_digits())
    sessions = [_ort.session(model, threads=1) for _ in range(3)]
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    times = measure_latencies(sessions, {"input": x}, runs=4, warmup=1)
    assert len(times) == 3 and all(t > 0 for t in times)
