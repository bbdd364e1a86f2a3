"""``--report out.html``: one self-contained page whose figures match the written model, and JSON as before."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from onnxprune import _io
from onnxprune.cli import cli
from onnxprune.html.page import render_page
from onnxprune.html.profile import op_latency, profile_events
from onnxprune.html.svg import LineChart, line_chart, nice_ticks
from onnxprune.recipe import CalibrationSpec, PassSpec, Recipe, run_recipe
from onnxprune.report import _finite
from tests.conftest import DIGITS, sha256
from tests.models.handbuilt import mlp_model

#: A name no page may show raw: it would open a tag and an entity.
HOSTILE = 'fc1<script>alert("x")</script>&amp;'


def _invoke(*args: object) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


def assert_self_contained(page: str) -> None:
    """No network: no remote or protocol-relative src/href, no script, stylesheet link, import or url()."""
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, flags=re.I)
    assert "https://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for needle in ("<script", "<link", "@import", "url(", "<img", "<iframe"):
        assert needle not in page.lower()


@pytest.fixture
def pruned_page(tmp_path: Path, digits_model: Path, digits_calib: Path) -> tuple[Path, Path, Path]:
    """The digits CNN pruned 2:4 with validation on the labelled test digits, reported as HTML."""
    before = sha256(digits_model)
    out, page = tmp_path / "p.onnx", tmp_path / "report.html"
    data = DIGITS / "digits_test.npz"
    result = _invoke("prune", digits_model, "-o", out, "--pattern", "2:4", "--calib", digits_calib, "--data", data,
                     "--report", page)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sha256(digits_model) == before
    return digits_model, out, page


def test_page_figures_match_the_written_model(pruned_page: tuple[Path, Path, Path]) -> None:
    model, out, page_path = pruned_page
    page = page_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert_self_contained(page)
    titles = [re.search(r"<title>(.*?)</title>", svg).group(1) for svg in _svgs(page)]
    assert any("after / before" in t for t in titles)
    assert any("sparsity per weight" in t for t in titles)
    assert any("latency by op type" in t for t in titles)
    # every pruned weight's bar carries the sparsity measured in the written model
    written = _io.load(out)
    pruned = 0
    for name, value in written.graph.initializers.items():
        array = value.const_value.numpy()
        if array.ndim < 2:
            continue
        sparsity = float(np.mean(array == 0))
        if sparsity > 0.4:
            pruned += 1
            row = re.search(rf"<title>{re.escape(name)} \(.*?</g>", page, flags=re.S)
            assert row is not None, name
            assert f">{100 * sparsity:.1f}%<" in row.group(0)
    assert pruned >= 3
    # the validation figures are those of the models run in onnxruntime
    data = np.load(DIGITS / "digits_test.npz")
    ref = ort.InferenceSession(str(model)).run(None, {"input": data["input"]})[0]
    cand = ort.InferenceSession(str(out)).run(None, {"input": data["input"]})[0]
    agreement = float(np.mean(ref.argmax(1) == cand.argmax(1)))
    accuracy = float(np.mean(cand.argmax(1) == data["label"]))
    cells = re.findall(r"<td>([0-9.]+)</td>", page)
    assert f"{agreement:.5g}" in cells and f"{accuracy:.5g}" in cells
    # the exact recipe, as YAML, round-trips to what the run used
    recipe = yaml.safe_load(html.unescape(re.search(r"<pre>(.*?)</pre>", page, flags=re.S).group(1)))
    assert recipe["passes"][0]["name"] == "sparsegpt" and recipe["passes"][0]["config"]["n"] == 2
    assert recipe["output"] == str(out)
    # no temporary file left beside the page
    assert sorted(p.name for p in page_path.parent.iterdir() if p.name.startswith(".")) == []


def test_json_report_is_unchanged(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    """A .json report is the run's report written as before: same keys, same text, no HTML, no profile."""
    recipe = Recipe(
        model=str(digits_model),
        output=str(tmp_path / "p.onnx"),
        passes=(PassSpec("unstructured", {"sparsity": 0.5}), PassSpec("cleanup")),
        calibration=CalibrationSpec(str(digits_calib)),
        report=str(tmp_path / "r.json"),
    )
    result = run_recipe(recipe)
    text = (tmp_path / "r.json").read_text()
    assert text == json.dumps(_finite(result.report), indent=2, default=str)
    data = json.loads(text)
    assert set(data) == {
        "model",
        "output",
        "recipe",
        "before",
        "after",
        "passes",
        "validation",
        "seconds",
        "data",
        "shrinkbench",
    }
    assert "sensitivity" not in data["passes"][0]["details"]
    assert (tmp_path / "r.json").stat().st_mode & 0o644 == 0o644


def test_node_names_are_escaped(tmp_path: Path) -> None:
    """Hostile node and tensor names reach the page as text, never as markup."""
    proto = mlp_model()
    for init in proto.graph.initializer:
        if init.name == "W1":
            init.name = f"W1{HOSTILE}"
    for node in proto.graph.node:
        node.input[:] = [f"W1{HOSTILE}" if i == "W1" else i for i in node.input]
        if node.name == "fc1_matmul":
            node.name = HOSTILE
    model, page_path = tmp_path / "m.onnx", tmp_path / "m.html"
    onnx.save(proto, model)
    result = _invoke("prune", model, "-o", tmp_path / "o.onnx", "--sparsity", "0.5", "--report", page_path)
    assert result.exit_code == 0, result.output
    page = page_path.read_text()
    assert "<script" not in page and "&amp;amp;" in page
    assert html.escape(f"W1{HOSTILE}", quote=True) in page
    assert_self_contained(page)


def test_sensitivity_curves_are_reported_and_drawn(
    tmp_path: Path, digits_model: Path, digits_calib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    page_path, json_path = tmp_path / "s.html", tmp_path / "s.json"
    args = ("prune", digits_model, "--channels", "0.3", "--allocation", "sensitivity", "--calib", digits_calib)
    assert _invoke(*args, "-o", tmp_path / "s.onnx", "--report", page_path, "--samples", "64").exit_code == 0
    assert _invoke(*args, "-o", tmp_path / "t.onnx", "--report", json_path, "--samples", "64").exit_code == 0
    curves = json.loads(json_path.read_text())["passes"][0]["details"]["sensitivity"]["channels"]
    assert len(curves) >= 3
    for curve in curves.values():
        assert curve["ratios"][0] == 0.0 and curve["errors"][0] == 0.0
        assert curve["ratios"] == sorted(curve["ratios"]) and max(curve["errors"]) > 0
    page = page_path.read_text()
    svg = next(s for s in _svgs(page) if "measured sensitivity" in s)
    assert svg.count("<polyline") == len(curves)
    kept = [s for s in _svgs(page) if "kept width per channel group" in s]
    assert len(kept) == 1 and ">kept<" in kept[0]


def test_lowrank_page_shows_the_factor_ranks(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    out, page_path = tmp_path / "l.onnx", tmp_path / "l.htm"
    result = _invoke("lowrank", digits_model, "-o", out, "--energy", "0.9", "--calib", digits_calib,
                     "--report", page_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    page = page_path.read_text()
    svg = next(s for s in _svgs(page) if "rank per factorized layer" in s)
    factors = {n: v.const_value.shape for n, v in _io.load(out).graph.initializers.items() if ".lowrank_" in n}
    assert factors
    for name, shape in factors.items():
        if name.endswith(".lowrank_b"):  # the first factor: [in, r] (MatMul) or [r, c, k, k] (Conv)
            rank = shape[1] if len(shape) == 2 else shape[0]
            tensor = name[: -len(".lowrank_b")]
            row = re.search(rf"<title>{re.escape(tensor)} \(.*?</g>", svg, flags=re.S).group(0)
            assert f">{rank}<" in row


def test_run_overrides_the_report_path_with_html(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    recipe = tmp_path / "r.yaml"
    dump = _invoke("prune", digits_model, "-o", tmp_path / "p.onnx", "--sparsity", "0.3", "--calib", digits_calib,
                   "--dump-recipe")  # fmt: skip
    recipe.write_text(dump.output)
    assert _invoke("run", recipe, "--report", tmp_path / "out.HTML").exit_code == 0
    page = (tmp_path / "out.HTML").read_text()
    assert len(_svgs(page)) >= 3 and "<h2>Recipe</h2>" in page


def test_failed_render_leaves_the_old_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxprune import report as report_module

    path = tmp_path / "r.html"
    path.write_text("old")

    def broken(*_: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr("onnxprune.html.page.render_page", broken)
    with pytest.raises(RuntimeError):
        report_module.write_report({"model": "m"}, path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_profile_events_average_per_run_without_the_warm_up() -> None:
    def run(ts: int) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 100}

    def kernel(ts: int, op: str, dur: int) -> dict:
        return {"cat": "Node", "name": f"n{ts}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0), kernel(10, "Conv", 5000), run(200), kernel(210, "Conv", 300), kernel(220, "Relu", 100)]
    events += [run(400), kernel(410, "Conv", 500), {"cat": "Node", "name": "n_fence_before", "ts": 420, "dur": 9}]
    assert profile_events(events) == pytest.approx({"Conv": 0.4, "Relu": 0.05})


def test_op_latency_profiles_the_executed_kernels(digits_model: Path) -> None:
    model = _io.load(digits_model)
    sample = {"input": np.load(DIGITS / "digits_calib.npz")["input"][:1]}
    result = op_latency({"original": model}, sample)
    ops = result["original"]
    assert any("Conv" in op for op in ops) and all(ms > 0 for ms in ops.values())
    assert sum(ops.values()) < 50  # ms per run of a 48k-parameter CNN: per run, not summed over runs


def test_charts_keep_every_point_inside_the_axes() -> None:
    assert nice_ticks(0.25, 0.9)[-1] >= 0.9 and nice_ticks(0.25, 0.9)[0] <= 0.25
    svg = line_chart(LineChart("t", {"a": ([0.25, 0.9], [1e-7, 0.5])}, "x", "y", log_y=True))
    plot = re.search(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="none"', svg)
    x0, y0, w, h = map(float, plot.groups())
    for cx, cy in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg):
        assert x0 - 0.01 <= float(cx) <= x0 + w + 0.01 and y0 - 0.01 <= float(cy) <= y0 + h + 0.01


def test_page_without_validation_or_profile_says_so() -> None:
    page = render_page({"model": "a.onnx", "output": "b.onnx", "passes": [], "validation": None})
    assert "Validation was off" in page and "Not measured" in page
    assert_self_contained(page)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        pytest.skip("chromium not found (Debian: apt-get install -y chromium; .ci/run installs it)")
    return found


def _chromium_run(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    command = [_chromium(), *flags, *extra, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def _bands(mask: np.ndarray, gap: int = 30) -> list[tuple[int, int]]:
    """Vertical runs of rows holding ``mask`` pixels, split where ``gap`` rows hold none."""
    rows = np.flatnonzero(mask.sum(axis=1) >= 3)
    bands: list[tuple[int, int]] = []
    for row in rows:
        if bands and row - bands[-1][1] <= gap:
            bands[-1] = (bands[-1][0], int(row))
        else:
            bands.append((int(row), int(row)))
    return bands


def test_chromium_renders_the_page(pruned_page: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    _, _, page_path = pruned_page
    page = page_path.read_text()
    shot = tmp_path / "shot.png"
    run = _chromium_run(page_path, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2400")
    assert run.returncode == 0, run.stderr[-2000:]
    log = run.stderr
    for bad in (":CONSOLE", "Uncaught", "net::ERR", "Failed to load resource", "Refused to"):
        assert bad not in log, [line for line in log.splitlines() if bad in line][:5]
    dom = _chromium_run(page_path, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<h1>onnxprune report</h1>" in dom.stdout
    assert dom.stdout.count("<svg") == len(_svgs(page)) >= 3
    for error_page in ("neterror", "ERR_FILE_NOT_FOUND", "This page isn", "This site can"):
        assert error_page not in dom.stdout
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.shape == (2400, 1200, 3)
    assert pixels.std() > 20  # not a blank page
    blue = np.abs(pixels - np.array([0, 114, 178])).sum(axis=2) < 40  # the first series' bars
    orange = np.abs(pixels - np.array([230, 159, 0])).sum(axis=2) < 40  # the second series (the result)
    assert blue.sum() > 5000 and orange.sum() > 300
    bands = _bands(blue)
    assert len(bands) >= 3, bands  # after/before, sparsity per weight, latency by op type: separate figures
    for top, bottom in bands:  # each figure's region is drawn, not white
        region = pixels[top : bottom + 1]
        assert (region.sum(axis=2) < 600).mean() > 0.02


def test_validate_writes_the_page(pruned_page: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, out, _ = pruned_page
    page_path = tmp_path / "v.html"
    result = _invoke("validate", model, out, "--data", DIGITS / "digits_test.npz", "--report", page_path)
    assert result.exit_code == 0, result.output
    page = page_path.read_text()
    assert_self_contained(page)
    latency = next(s for s in _svgs(page) if "latency by op type" in s)
    assert ">REF<" in latency and ">CAND<" in latency
    assert "<h2>Recipe</h2>" not in page and "top-1 agreement" in page
