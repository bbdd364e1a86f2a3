"""Smoke test of the transformer benchmark's bookkeeping (``bench/bench_transformers.py``), no model run.

Goals are judged in the right direction, a row (measured, failed, or with a failed fine-tune) renders in
its case's table with the goals marked, and the case list and CLI flags come out as the cases say.
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import _transformers_cases
    import _transformers_report
    import bench_transformers

    return _transformers_cases, _transformers_report, bench_transformers


def test_goals_direction(bench):
    cases, _, _ = bench
    goals = cases.Goals(speedup=1.4, params_kept=0.7, one_shot=0.9, finetuned=0.95)
    figures = {"speedup": 1.5, "params_kept": 0.65, "one_shot": 0.89, "finetuned": None}
    assert goals.check(figures) == {"speedup": True, "params_kept": True, "one_shot": False, "finetuned": None}
    assert cases.Goals(speedup=1.8).check({"speedup": 1.2}) == {"speedup": False}
    assert cases.Goals(params_kept=0.7).describe() == {"params_kept": "≥ 30% fewer params"}


def test_case_flags(bench):
    cases, _, _ = bench
    inexact = cases.Case(
        "inexact", "t", ("--channels", "0.3"), cases.ONE_SHOT, channels_config=(("allow_inexact", True),)
    )
    assert inexact.flags() == ["--allow-inexact"]
    assert cases.BY_NAME["channels"].flags() == []


def _row(model: str, case: str, **extra):
    latency = {t: {"speedup": s, "ref_ms": 8.0, "cand_ms": 8.0 / s} for t, s in (("1", 1.5), ("2", 1.3))}
    return {
        "id": f"{model}/{case}",
        "model": model,
        "case": case,
        "dense_metric": 0.9999,
        "params_kept": 0.9,
        "macs_kept": 0.8,
        "one_shot": 0.91,
        "latency": latency,
        "prune": {"rc": 0, "wall_s": 12.0},
        "commands": {"prune": "prune m.onnx -o out.onnx --channels 0.3"},
        "skipped": [["Reshape with a computed (non-constant) shape", 18]],
        "seconds": 30.0,
        **extra,
    }


def test_markdown_marks_goals_and_failures(bench):
    _, report, _ = bench
    goals = {"speedup": False, "params_kept": False, "one_shot": True, "finetuned": True}
    rows = [
        _row("ts", "channels", finetuned=0.96, finetune={"rc": 0, "wall_s": 90.0}, goals=goals),
        {"id": "dynamo/channels", "model": "dynamo", "case": "channels", "error": "ValueError: boom", "seconds": 1.0},
        _row("ts", "flops", finetune={"rc": 1, "error": "RuntimeError: oops"}, goals={"speedup": False}),
    ]
    results = {
        "date": "2026-01-01T00:00:00+00:00",
        "environment": {k: "x" for k in ("python", "platform", "machine", "onnxruntime", "onnx", "onnx_ir", "numpy")}
        | {"cpu_count": 2, "torch": "2"},
        "latency": {"threads": [1, 2], "runs": 90, "rounds": 3},
        "prune_threads": 2,
        "code": "abc",
        "steps": 200,
        "rows": rows,
    }
    text = report.markdown(results)
    assert "--cases channels flops --steps 200" in text
    channels = text.split("## ")[1]
    assert "≥ 1.4× faster | ≥ 30% fewer params | Spearman ≥ 0.9 one-shot | Spearman ≥ 0.95 fine-tuned" in channels
    assert "| **missed** | **missed** | met | met |" in channels
    assert "1.50× (8.00 → 5.33 ms)" in channels and "0.9600" in channels
    assert "**failed**: `ValueError: boom`" in channels
    assert "`onnxprune prune m.onnx -o out.onnx --channels 0.3`" in channels
    assert "Reshape with a computed (non-constant) shape (×18)" in channels
    flops = text.split("## ")[2]
    assert "fine-tune failed: `RuntimeError: oops`" in flops and "| **failed** |" in flops


def test_list(bench, capsys):
    _, _, script = bench
    assert script.main(["--list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("channels: ")


def test_skip_reasons_elide_names(bench):
    _, _, script = bench
    skipped = [
        {"reason": "Reshape 'a': Reshape with a computed (non-constant) shape"},
        {"reason": "Reshape 'b': Reshape with a computed (non-constant) shape"},
        {"reason": "Add 'x': combines with 'y', whose channels cannot be pruned"},
    ]
    report = {"passes": [{"name": "channels", "skipped": skipped}, {"name": "cleanup", "skipped": []}]}
    assert script.skip_reasons(report) == [
        ("Reshape '…': Reshape with a computed (non-constant) shape", 2),
        ("Add '…': combines with '…', whose channels cannot be pruned", 1),
    ]


def test_an_option_with_a_flag_is_passed_on_the_command_line(bench, tmp_path):
    cases, _, script = bench
    case = cases.Case("inexact", "t", ("--channels", "0.3"), cases.ONE_SHOT, channels_config=(("allow_inexact", True),))
    help_text = "  --allow-inexact  Also prune ..."
    words = script._commands(case, tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path, help_text)
    assert list(words) == ["prune"] and "--allow-inexact" in words["prune"] and words["prune"][0] == "prune"
