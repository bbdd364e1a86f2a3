"""Folders of images: preprocessing checked against numpy by hand, labels, sampling, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from onnxprune.calibration import ImagePreprocess, InputSpec, open_images, open_source
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.verify import validate
from tests.calibration.data_models import image_model, write_image
from tests.conftest import ort_run, to_ir

pytest.importorskip("PIL")

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NCHW = [InputSpec("x", np.dtype(np.float32), (None, 3, 8, 8))]
NHWC = [InputSpec("x", np.dtype(np.float32), (None, 8, 8, 3))]


def _pixels(seed: int, h: int = 8, w: int = 8, c: int | None = 3) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _by_hand(pixels: np.ndarray, scale: float, mean: tuple, std: tuple, *, bgr: bool, layout: str) -> np.ndarray:
    x = (pixels.astype(np.float32) * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if bgr:
        x = x[..., ::-1]
    return x.transpose(2, 0, 1) if layout == "NCHW" else x


@pytest.mark.parametrize(
    ("preset", "values"),
    [("imagenet", (1 / 255, *IMAGENET)), ("0-1", (1 / 255, (0.0,), (1.0,))), ("-1-1", (1 / 255, (0.5,), (0.5,)))],
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("bgr", [False, True])
def test_presets_layouts_and_bgr_match_numpy(
    tmp_path: Path, preset: str, values: tuple, layout: str, bgr: bool
) -> None:
    images = [write_image(tmp_path / f"{i}.png", _pixels(i)) for i in range(3)]
    source = open_images(tmp_path, NCHW if layout == "NCHW" else NHWC, ImagePreprocess(preset=preset, bgr=bgr))
    (batch,) = list(source.batches(8))
    expected = np.stack([_by_hand(p, *values, bgr=bgr, layout=layout) for p in images])
    np.testing.assert_allclose(batch["x"], expected, rtol=1e-6, atol=1e-6)
    if preset == "-1-1":
        assert batch["x"].min() >= -1 and batch["x"].max() <= 1


def test_explicit_scale_mean_std_replace_the_preset(tmp_path: Path) -> None:
    pixels = write_image(tmp_path / "a.bmp", _pixels(0))
    spec = ImagePreprocess(preset="imagenet", scale=0.5, mean=(10.0,))
    (batch,) = list(open_images(tmp_path, NCHW, spec).batches(1))
    np.testing.assert_allclose(batch["x"][0], _by_hand(pixels, 0.5, (10.0,), IMAGENET[1], bgr=False, layout="NCHW"))


def test_center_crop_and_shorter_side_resize(tmp_path: Path) -> None:
    wide = write_image(tmp_path / "wide.png", _pixels(1, h=8, w=13))  # covers 8x8 already: crop only
    spec = ImagePreprocess(preset="0-1")
    (batch,) = list(open_images(tmp_path, NCHW, spec).batches(1))
    left = round((13 - 8) / 2)
    np.testing.assert_allclose(batch["x"][0], wide[:, left : left + 8].transpose(2, 0, 1) / np.float32(255), atol=1e-6)

    from PIL import Image

    (tmp_path / "wide.png").unlink()
    big = write_image(tmp_path / "big.png", _pixels(2, h=20, w=30))
    (batch,) = list(open_images(tmp_path, NCHW, ImagePreprocess(preset="0-1", resize=(10,))).batches(1))
    resized = np.asarray(Image.fromarray(big).resize((15, 10), Image.Resampling.BILINEAR))  # shorter side 20 -> 10
    top, left = round((10 - 8) / 2), round((15 - 8) / 2)
    crop = resized[top : top + 8, left : left + 8]
    np.testing.assert_allclose(batch["x"][0], crop.transpose(2, 0, 1) / np.float32(255), atol=1e-6)


def test_formats_sizes_and_channel_conversion(tmp_path: Path) -> None:
    """PNG, JPEG, BMP, WEBP of various sizes; grayscale and RGBA into an RGB model; luma into a 1-channel model."""
    gray = write_image(tmp_path / "a_gray.png", _pixels(3, c=None))
    rgba = write_image(tmp_path / "b_rgba.png", _pixels(4, c=4))
    write_image(tmp_path / "c.jpg", _pixels(5, h=16, w=12), quality=95)
    write_image(tmp_path / "d.webp", _pixels(6, h=9, w=40), lossless=True)
    write_image(tmp_path / "e.JPEG", _pixels(7, h=100, w=100))
    source = open_images(tmp_path, NCHW, ImagePreprocess(preset="0-1"))
    batch = next(iter(source.batches(8)))["x"]
    assert batch.shape == (5, 3, 8, 8) and np.isfinite(batch).all()
    np.testing.assert_allclose(batch[0], np.stack([gray] * 3) / np.float32(255), atol=1e-6)
    np.testing.assert_allclose(batch[1], rgba[..., :3].transpose(2, 0, 1) / np.float32(255), atol=1e-6)

    (tmp_path / "only").mkdir()
    rgb = write_image(tmp_path / "only" / "x.png", _pixels(8))
    one = [InputSpec("x", np.dtype(np.float32), (None, 1, 8, 8))]
    (batch,) = list(open_images(tmp_path / "only", one, ImagePreprocess(preset="raw")).batches(1))
    luma = rgb.astype(np.float64) @ np.array([299, 587, 114]) / 1000  # ITU-R 601-2, what PIL's "L" computes
    assert np.abs(batch["x"][0, 0] - luma).max() <= 1.0


def test_feeds_the_model_in_onnxruntime(tmp_path: Path) -> None:
    images = [write_image(tmp_path / f"{i}.png", _pixels(i)) for i in range(5)]
    model = to_ir(image_model(["N", 3, 8, 8]))
    source = open_source(tmp_path, model, images=ImagePreprocess(preset="imagenet"))
    assert source.num_samples == 5 and source.kind == "images"
    (batch,) = list(source.batches(32))
    by_hand = np.stack([_by_hand(p, 1 / 255, *IMAGENET, bgr=False, layout="NCHW") for p in images])
    np.testing.assert_allclose(ort_run(model, batch)["y"], ort_run(model, {"x": by_hand})["y"], rtol=1e-5, atol=1e-6)


def test_fixed_batch_uint8_nhwc_and_dynamic_sizes(tmp_path: Path) -> None:
    pixels = write_image(tmp_path / "a.png", _pixels(0, h=6, w=6))
    fixed = to_ir(image_model([1, 6, 6, 3], dtype=TensorProto.UINT8))
    source = open_source(tmp_path, fixed, images=ImagePreprocess(preset="raw"))
    (batch,) = list(source.batches(4))
    assert batch["x"].dtype == np.uint8 and np.array_equal(batch["x"][0], pixels)

    dynamic = to_ir(image_model(["N", 3, "H", "W"]))
    with pytest.raises(CalibrationError, match=r"height/width are dynamic; fix them with --input-shape x=\.\.\."):
        open_source(tmp_path, dynamic, images=ImagePreprocess(preset="0-1"))
    by_resize = open_source(tmp_path, dynamic, images=ImagePreprocess(preset="0-1", resize=(4, 5)))
    assert next(iter(by_resize.batches(1)))["x"].shape == (1, 3, 4, 5)
    by_shape = open_source(tmp_path, dynamic, images=ImagePreprocess(preset="0-1"), input_shapes={"x": (1, 3, 6, 6)})
    np.testing.assert_allclose(next(iter(by_shape.batches(1)))["x"][0], pixels.transpose(2, 0, 1) / np.float32(255))


def test_labels_txt_csv_and_class_folders(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("b.png", "a.png", "c.png"):
        write_image(flat / name, _pixels(len(name)))
    (flat / "labels.txt").write_text("2\n0\n1\n\n")
    spec = ImagePreprocess(preset="0-1")
    assert open_images(flat, NCHW, spec).labels.tolist() == [2, 0, 1]  # a, b, c: sorted names
    (flat / "labels.txt").unlink()
    (flat / "labels.csv").write_text("file,label\nc.png,3\na.png,1\nb.png,0\n")
    assert open_images(flat, NCHW, spec).labels.tolist() == [1, 0, 3]

    classes = tmp_path / "classes"
    for index, name in enumerate(("cat", "dog", "eel")):
        (classes / name).mkdir(parents=True)
        for i in range(index + 1):
            write_image(classes / name / f"{i}.png", _pixels(10 * index + i))
    assert open_images(classes, NCHW, spec).labels.tolist() == [0, 1, 1, 2, 2, 2]


def test_validation_reports_top1_from_folder_labels(tmp_path: Path) -> None:
    model = to_ir(image_model(["N", 3, 8, 8]))
    for index in range(4):
        (tmp_path / f"class{index}").mkdir()
        for i in range(3):
            write_image(tmp_path / f"class{index}" / f"{i}.png", _pixels(100 + 10 * index + i))
    source = open_source(tmp_path, model, images=ImagePreprocess(preset="imagenet"))
    result = validate(model, model.clone(), source, latency_runs=1).as_dict()
    (output,) = result["outputs"]
    feeds = next(iter(source.batches(64)))
    accuracy = float((ort_run(model, feeds)["y"].argmax(1) == source.labels).mean())
    assert output["accuracy_ref"] == pytest.approx(accuracy) and output["accuracy_cand"] == pytest.approx(accuracy)


def test_samples_are_a_seeded_pick_across_classes(tmp_path: Path) -> None:
    for index in range(4):
        (tmp_path / f"c{index}").mkdir()
        for i in range(5):
            write_image(tmp_path / f"c{index}" / f"{i}.png", _pixels(index * 5 + i))
    spec = ImagePreprocess(preset="0-1")
    a = open_images(tmp_path, NCHW, spec, samples=6, seed=0)
    b = open_images(tmp_path, NCHW, spec, samples=6, seed=0)
    c = open_images(tmp_path, NCHW, spec, samples=6, seed=1)
    assert a.num_samples == 6
    assert np.array_equal(next(iter(a.batches(6)))["x"], next(iter(b.batches(6)))["x"])
    assert not np.array_equal(next(iter(a.batches(6)))["x"], next(iter(c.batches(6)))["x"])
    assert len(set(a.labels.tolist())) > 1  # not the first six files (one class and a bit)


def test_progress_is_reported_per_image(tmp_path: Path) -> None:
    for i in range(3):
        write_image(tmp_path / f"{i}.png", _pixels(i))
    calls = []
    open_images(tmp_path, NCHW, ImagePreprocess(preset="0-1"), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def _corrupt(folder: Path) -> None:
    write_image(folder / "good.png", _pixels(0))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def _truncated(folder: Path) -> None:
    write_image(folder / "whole.png", _pixels(0, h=64, w=64))
    (folder / "cut.png").write_bytes((folder / "whole.png").read_bytes()[:200])


@pytest.mark.parametrize(
    ("make", "spec", "message"),
    [
        (_corrupt, ImagePreprocess(preset="0-1"), r"broken\.jpg: cannot read image \(OSError"),
        (_truncated, ImagePreprocess(preset="0-1"), r"cut\.png: cannot read image"),
        (lambda d: write_image(d / "a.png", _pixels(0)), None, r"holds images; say how to scale their pixels"),
        (
            lambda d: (write_image(d / "a.png", _pixels(0)), np.save(d / "b.npy", np.zeros(3))),
            ImagePreprocess(preset="0-1"),
            r"holds both images \(a\.png\) and arrays \(b\.npy\)",
        ),
        (
            lambda d: (write_image(d / "a.png", _pixels(0)), (d / "labels.txt").write_text("0\n1\n")),
            ImagePreprocess(preset="0-1"),
            r"labels\.txt: 2 labels for 1 images",
        ),
        (
            lambda d: (write_image(d / "a.png", _pixels(0)), (d / "labels.txt").write_text("cat\n")),
            ImagePreprocess(preset="0-1"),
            r"labels\.txt: line 1: expected an integer class index, got 'cat'",
        ),
        (
            lambda d: (write_image(d / "a.png", _pixels(0)), (d / "labels.csv").write_text("b.png,1\n")),
            ImagePreprocess(preset="0-1"),
            r"labels\.csv: names 'b\.png', which is not an image",
        ),
        (
            lambda d: write_image(d / "a.png", _pixels(0, h=4, w=4)),
            ImagePreprocess(preset="0-1", resize=(4,)),
            r"a\.png: 4x4 after --resize is smaller than the model's 8x8",
        ),
        (
            lambda d: (d / "a.png").write_bytes(_i16_png()),
            ImagePreprocess(preset="0-1"),
            r"a\.png: I;16 images \(16-bit or float\) are not read",
        ),
    ],
)
def test_bad_images_are_one_line_errors_naming_the_file(
    tmp_path: Path, make: object, spec: object, message: str
) -> None:
    make(tmp_path)
    with pytest.raises(CalibrationError, match=message) as info:
        open_images(tmp_path, NCHW, spec)
    assert "\n" not in str(info.value)


def _i16_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("shape", "spec", "message"),
    [
        ((None, 2, 8, 8), ImagePreprocess(preset="0-1", layout="NCHW"), r"NCHW puts 2 channels there; images give 1"),
        ((None, 5, 8), ImagePreprocess(preset="0-1"), r"is not an image input"),
        ((4, 3, 8, 8), ImagePreprocess(preset="0-1"), r"its batch is fixed at 4"),
        ((None, 1, 8, 8), ImagePreprocess(preset="imagenet"), r"mean holds 3 values \(RGB order\) but the input has 1"),
        ((None, 7, 8, 7), ImagePreprocess(preset="0-1"), r"cannot tell where the channels are; give --layout"),
    ],
)
def test_inputs_images_cannot_feed(tmp_path: Path, shape: tuple, spec: ImagePreprocess, message: str) -> None:
    write_image(tmp_path / "a.png", _pixels(0))
    with pytest.raises(CalibrationError, match=message):
        open_images(tmp_path, [InputSpec("x", np.dtype(np.float32), shape)], spec)


def test_multi_input_model_and_bad_specs_are_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", _pixels(0))
    two = [*NCHW, InputSpec("y", np.dtype(np.float32), (None, 3))]
    with pytest.raises(CalibrationError, match=r"images feed a model with one input; this one has 2 \(x, y\)"):
        open_images(tmp_path, two, ImagePreprocess(preset="0-1"))
    for kwargs, message in [
        ({}, "images need a pixel scaling"),
        ({"preset": "caffe"}, "preset must be one of imagenet, 0-1, -1-1, raw"),
        ({"preset": "raw", "std": (0.0,)}, "std must not hold 0"),
        ({"preset": "raw", "resize": (1, 2, 3)}, r"resize must be \[N\] or \[H, W\]"),
    ]:
        with pytest.raises(RecipeError, match=message):
            ImagePreprocess(**kwargs)
