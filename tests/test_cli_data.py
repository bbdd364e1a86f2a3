"""The CLI on images and text: prune, validate, analyze, recipes, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from click.testing import CliRunner

from onnxprune.cli import cli
from tests import models
from tests.calibration.data_models import image_model, text_model, word_tokenizer, write_image
from tests.conftest import sha256

pytest.importorskip("PIL")
pytest.importorskip("tokenizers")


def _invoke(*args: object, quiet: bool = True) -> object:
    return CliRunner().invoke(cli, [*(["--quiet"] if quiet else []), *map(str, args)], catch_exceptions=False)


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    onnx.save(models.conv_model(), tmp_path / "conv.onnx")
    return tmp_path / "conv.onnx"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Six images of varied sizes and formats, one grayscale, with labels.txt."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, suffix in enumerate(("png", "jpg", "bmp", "webp", "png", "jpeg")):
        shape = (8 + 3 * i, 10 + i) if i == 4 else (8 + 3 * i, 10 + i, 3)
        write_image(folder / f"img{i}.{suffix}", rng.integers(0, 256, shape, dtype=np.uint8))
    (folder / "labels.txt").write_text("\n".join(str(i % 10) for i in range(6)))
    return folder


@pytest.fixture
def text(tmp_path: Path) -> tuple[Path, Path, Path]:
    onnx.save(text_model(seq=6), tmp_path / "text.onnx")
    (tmp_path / "lines.txt").write_text("the cat sat\n\na dog ran on the mat\ncat on a mat\n")
    return tmp_path / "text.onnx", tmp_path / "lines.txt", word_tokenizer(tmp_path / "tokenizer.json")


def test_prune_channels_on_images(tmp_path: Path, conv: Path, images: Path) -> None:
    before = {p.name: sha256(p) for p in images.iterdir()}
    report = tmp_path / "r.json"
    args = ("prune", conv, "-o", tmp_path / "out.onnx", "--channels", "0.3", "--calib", images)
    result = _invoke(*args, "--preprocess", "imagenet", "--report", report, quiet=False)
    assert result.exit_code == 0, result.output
    assert f"calibration data: 6 images from {images}" in _flat(result.output)
    data = json.loads(report.read_text())
    assert data["data"]["calibration"] == {"path": str(images), "samples": 6, "kind": "images"}
    assert data["validation"]["samples"] == 6 and "accuracy_ref" in data["validation"]["outputs"][0]
    assert data["after"]["params"] < data["before"]["params"]
    assert {p.name: sha256(p) for p in images.iterdir()} == before  # inputs never modified

    result = _invoke(*args, "--preprocess", "0-1", "--samples", "4", "--resize", "12", "--bgr", quiet=False)
    assert result.exit_code == 0 and "calibration data: 4 images" in _flat(result.output)


def test_prune_on_text(tmp_path: Path, text: tuple[Path, Path, Path]) -> None:
    model, lines, tokenizer = text
    report = tmp_path / "r.json"
    args = ("prune", model, "-o", tmp_path / "out.onnx", "--sparsity", "0.5", "--calib-text", lines)
    result = _invoke(*args, "--tokenizer", tokenizer, "--report", report, quiet=False)
    assert result.exit_code == 0, result.output
    assert f"calibration data: 3 lines of text from {lines}" in _flat(result.output)
    assert json.loads(report.read_text())["data"]["calibration"]["samples"] == 3
    pruned = onnx.numpy_helper.to_array(
        next(t for t in onnx.load(tmp_path / "out.onnx").graph.initializer if t.name == "w1")
    )
    assert (pruned == 0).mean() == pytest.approx(0.5)


def test_dumped_recipe_reproduces_the_run(tmp_path: Path, conv: Path, images: Path) -> None:
    args = ("prune", conv, "-o", tmp_path / "direct.onnx", "--channels", "0.3", "--calib", images)
    flags = ("--preprocess", "imagenet", "--resize", "9x9", "--layout", "NCHW", "--mean", "0.5", "--samples", "5")
    assert _invoke(*args, *flags).exit_code == 0
    dumped = _invoke(*args, *flags, "--dump-recipe").output
    block = yaml.safe_load(dumped)["calibration"]
    assert block["images"] == {
        "preset": "imagenet",
        "resize": [9, 9],
        "layout": "NCHW",
        "bgr": False,
        "scale": None,
        "mean": [0.5],
        "std": None,
    }
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dumped.replace("direct.onnx", "replayed.onnx"))
    assert _invoke("run", recipe).exit_code == 0
    assert sha256(tmp_path / "direct.onnx") == sha256(tmp_path / "replayed.onnx")


def test_recipe_text_block_with_relative_paths(tmp_path: Path, text: tuple[Path, Path, Path]) -> None:
    model, lines, tokenizer = text
    recipe = {
        "model": model.name,
        "output": "out.onnx",
        "passes": [{"name": "unstructured", "config": {"sparsity": 0.5}}],
        "calibration": {"path": lines.name, "samples": 2, "text": {"tokenizer": tokenizer.name, "seq_len": 6}},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "r.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "calibration data: 2 lines of text" in _flat(result.output)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**recipe, "calibration": {"text": {"tokenizer": 3}}}))
    result = _invoke("run", tmp_path / "r.yaml")
    assert result.exit_code == 2 and "calibration.text.tokenizer must be a string" in result.output


def test_validate_and_analyze_read_images(tmp_path: Path, conv: Path) -> None:
    onnx.save(image_model(["N", 3, 8, 8]), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    for name in ("ant", "bee", "cow", "dog"):
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(2):
            write_image(tmp_path / "val" / name / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    report = tmp_path / "v.json"
    result = _invoke("validate", tmp_path / "m.onnx", tmp_path / "m.onnx", "--data", tmp_path / "val", "--preprocess",
                     "imagenet", "--report", report)  # fmt: skip
    assert result.exit_code == 0, result.output
    (output,) = json.loads(report.read_text())["validation"]["outputs"]
    assert output["accuracy_ref"] == output["accuracy_cand"] is not None

    prefix = tmp_path / "sens"
    args = ("analyze", conv, "--calib", tmp_path / "val", "--preprocess", "0-1", "--kinds", "channels")
    result = _invoke(*args, "--grid", "0.5", "-o", prefix, "--no-cache")
    assert result.exit_code == 0, result.output
    assert json.loads(prefix.with_name("sens.json").read_text())["units"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "images; say how to scale their pixels: --preprocess imagenet|0-1|-1-1|raw"),
        (["--preprocess", "imagenet", "--mean", "1,2"], "mean must hold 1 value or one per channel"),
        (["--preprocess", "imagenet", "--resize", "0"], "--resize '0': expected N (shorter side) or HxW"),
        (["--bgr"], "images need a pixel scaling"),
        (["--preprocess", "imagenet", "--layout", "NHWC"], "NHWC puts 8 channels there"),
        (["--preprocess", "imagenet", "--seq-len", "4"], "--seq-len needs --tokenizer PATH"),
        (["--preprocess", "caffe"], "Invalid value for '--preprocess'"),
    ],
)
def test_bad_image_options_exit_2_on_one_line(
    tmp_path: Path, conv: Path, images: Path, extra: list[str], message: str
) -> None:
    result = _invoke("prune", conv, "-o", tmp_path / "o.onnx", "--channels", "0.3", "--calib", images, *extra)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("onnxprune: error: ") and message in line
    assert not (tmp_path / "o.onnx").exists()


def test_bad_image_files_exit_2_naming_the_file(tmp_path: Path, conv: Path, images: Path) -> None:
    (images / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "labels.txt").unlink()
    result = _invoke("prune", conv, "-o", tmp_path / "o.onnx", "--channels", "0.3", "--calib", images, "--preprocess",
                     "0-1")  # fmt: skip
    assert result.exit_code == 2
    assert result.output.startswith(f"onnxprune: error: {images / 'zz.png'}: cannot read image (")
    assert len(result.output.strip().splitlines()) == 1
    (images / "zz.png").unlink()
    np.savez(images / "x.npz", x=np.zeros((1, 1, 3, 8, 8), np.float32))
    result = _invoke("prune", conv, "-o", tmp_path / "o.onnx", "--channels", "0.3", "--calib", images)
    assert result.exit_code == 2 and "holds both images (img0.png) and arrays (x.npz); keep one kind" in result.output
    (images / "x.npz").unlink()
    result = _invoke("prune", conv, "-o", images / "img0.png", "--channels", "0.3", "--calib", images, "--preprocess",
                     "0-1")  # fmt: skip
    assert result.exit_code == 2 and "would overwrite the calibration data" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calib-text", "{lines}"], "--calib-text needs --tokenizer PATH"),
        (["--calib-text", "{lines}", "--calib", "{lines}", "--tokenizer", "{tok}"], "give --calib or --calib-text"),
        (["--calib", "{lines}"], "lines.txt: text data needs a tokenizer (--tokenizer PATH)"),
        (["--calib-text", "{lines}", "--tokenizer", "{tok}", "--seq-len", "9"], "input 'input_ids' fixes the sequence"),
        (["--calib-text", "{missing}", "--tokenizer", "{tok}"], "missing.txt: no such calibration file or folder"),
        (["--calib-text", "{lines}", "--tokenizer", "{missing}"], "missing.txt: no such tokenizer file or folder"),
    ],
)
def test_bad_text_options_exit_2_on_one_line(
    tmp_path: Path, text: tuple[Path, Path, Path], args: list[str], message: str
) -> None:
    model, lines, tokenizer = text
    filled = [a.format(lines=lines, tok=tokenizer, missing=tmp_path / "missing.txt") for a in args]
    result = _invoke("prune", model, "-o", tmp_path / "o.onnx", "--sparsity", "0.5", *filled)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert message in line


def test_vocabulary_larger_than_the_embedding_is_refused(tmp_path: Path, text: tuple[Path, Path, Path]) -> None:
    _, lines, tokenizer = text
    onnx.save(text_model(vocab=8, seq=6), tmp_path / "small.onnx")
    args = ("prune", tmp_path / "small.onnx", "-o", tmp_path / "o.onnx", "--sparsity", "0.5")
    result = _invoke(*args, "--calib-text", lines, "--tokenizer", tokenizer)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"onnxprune: error: {tokenizer}: the tokenizer's vocabulary (12 tokens) is larger than the model's "
        "embedding table 'word_emb' (8 rows); is it the model's tokenizer?"
    )
