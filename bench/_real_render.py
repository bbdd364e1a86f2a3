"""Rendered text for the OCR models: ASCII lines drawn with Pillow, preprocessed as PP-OCR does.

Every line is drawn dark on a light background at a random font (the DejaVu faces where the machine
has them, else Pillow's built-in font), size, offset, ink and background shade, plus Gaussian noise.
The random state is a ``numpy`` generator, so a seed fixes every sample; calibration and evaluation
draw from different seeds and :func:`lines` drops texts already used by another split.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

WORDS = (
    "apple river stone market signal paper window garden yellow orange silver number street coffee "
    "station north south east west invoice total amount price order customer account office letter "
    "village bridge summer winter morning evening kitchen doctor school teacher student library "
    "museum harbor travel ticket flight hotel dinner breakfast lunch table chair phone email "
    "address city country model system data value report credit debit balance open closed exit "
    "entrance parking monday friday sunday january march august december quick brown fox jumps "
    "over lazy dog hello world green blue red black white light heavy small large total tax"
).split()
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
#: the recognizer's input (PP-OCRv4 rec: 3 x 48 x 320) and the angle classifier's (3 x 48 x 192)
REC_SHAPE = (48, 320)
CLS_SHAPE = (48, 192)


def random_text(rng: Any) -> str:
    """One to three words (random case) with an optional number, at most 18 characters."""
    while True:
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 4)))]
        style = int(rng.integers(3))
        words = [w.upper() if style == 0 else w.capitalize() if style == 1 else w for w in words]
        if rng.random() < 0.5:
            number = str(int(rng.integers(0, 10_000)))
            number = number if rng.random() < 0.5 else f"{number}.{rng.integers(100):02d}"
            words.insert(int(rng.integers(len(words) + 1)), number)
        text = " ".join(words)
        if len(text) <= 18:
            return text


def lines(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """``count`` distinct random texts not in ``exclude``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count:
        text = random_text(rng)
        if text not in exclude and text not in out:
            out.append(text)
    return out


@functools.lru_cache(maxsize=32)
def _font(index: int, size: int) -> Any:
    from PIL import ImageFont

    files = [FONT_DIR / f for f in FONT_FILES if (FONT_DIR / f).is_file()]
    if files:
        return ImageFont.truetype(str(files[index % len(files)]), size)
    return ImageFont.load_default(size=size)


def render_line(text: str, rng: Any) -> tuple[Any, tuple[int, int, int, int]]:
    """``text`` drawn on a light crop with a few pixels of margin: ``H x W`` uint8 array and the text's box."""
    import numpy as np
    from PIL import Image, ImageDraw

    font = _font(int(rng.integers(len(FONT_FILES))), int(rng.integers(24, 40)))
    left, _, right, _ = font.getbbox(text)
    margin_x, margin_y = (int(v) for v in rng.integers(2, 9, size=2))
    background = int(rng.integers(190, 256))
    ink = int(rng.integers(0, 70))
    ascent, descent = font.getmetrics()
    image = Image.new("L", (right - left + 2 * margin_x, ascent + descent + 2 * margin_y), background)
    ImageDraw.Draw(image).text((margin_x - left, margin_y), text, fill=ink, font=font)
    array = np.asarray(image, dtype=np.float32)
    array += rng.normal(0.0, float(rng.uniform(0, 12)), size=array.shape)
    # the text's box spans the line's cell (ascender to descender), as a line's annotation would
    box = (margin_x, margin_y, margin_x + right - left, margin_y + ascent + descent)
    return np.clip(array, 0, 255).astype(np.uint8), box


def normalize_line(gray: Any, shape: tuple[int, int]) -> Any:
    """PP-OCR's rec/cls preprocessing: resize to the height keeping aspect, (x/255-0.5)/0.5, pad right with 0."""
    import numpy as np
    from PIL import Image

    height, width = shape
    h, w = gray.shape
    resized_w = min(width, int(np.ceil(height * w / h)))
    resized = np.asarray(Image.fromarray(gray).resize((resized_w, height), Image.BILINEAR), dtype=np.float32)
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = (resized / 255.0 - 0.5) / 0.5
    return out


def rec_arrays(texts: list[str], seed: int) -> dict[str, Any]:
    """Recognizer inputs ``x`` [N, 3, 48, 320] for ``texts`` and the ground truth under ``texts``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.stack([normalize_line(render_line(t, rng)[0], REC_SHAPE) for t in texts])
    return {"x": x, "texts": np.array(texts)}


def cls_arrays(texts: list[str], seed: int) -> dict[str, Any]:
    """Angle-classifier inputs ``x`` [N, 3, 48, 192]; every other line turned 180 degrees (``labels`` 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.arange(len(texts), dtype=np.int64) % 2
    crops = [render_line(t, rng)[0] for t in texts]
    x = np.stack(
        [normalize_line(c[::-1, ::-1].copy() if flip else c, CLS_SHAPE) for c, flip in zip(crops, labels, strict=True)]
    )
    return {"x": x, "labels": labels}


def det_arrays(count: int, seed: int, size: int = 320, per_page: int = 4) -> dict[str, Any]:
    """Detector pages ``x`` [N, 3, size, size]: up to ``per_page`` lines at random non-overlapping places.

    Ground truth: ``boxes`` [N, per_page, 4] (x0, y0, x1, y1 of each drawn line's ink, -1 rows unused).
    Normalization as RapidOCR's detector: (x/255 - 0.5)/0.5.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pages = np.empty((count, 3, size, size), dtype=np.float32)
    boxes = np.full((count, per_page, 4), -1, dtype=np.int32)
    for n in range(count):
        page = np.full((size, size), int(rng.integers(200, 256)), dtype=np.float32)
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(per_page * 4):
            if len(taken) == per_page:
                break
            crop, (bx0, by0, bx1, by1) = render_line(random_text(rng), rng)
            scale = float(rng.uniform(0.5, 1.0))
            h, w = max(8, int(crop.shape[0] * scale)), max(8, int(crop.shape[1] * scale))
            if w >= size - 8 or h >= size - 8:
                continue
            x0, y0 = int(rng.integers(4, size - w - 4)), int(rng.integers(4, size - h - 4))
            if any(x0 < b[2] + 6 and b[0] < x0 + w + 6 and y0 < b[3] + 6 and b[1] < y0 + h + 6 for b in taken):
                continue
            patch = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), dtype=np.float32)
            page[y0 : y0 + h, x0 : x0 + w] = patch
            sx, sy = w / crop.shape[1], h / crop.shape[0]
            boxes[n, len(taken)] = (x0 + bx0 * sx, y0 + by0 * sy, x0 + bx1 * sx, y0 + by1 * sy)
            taken.append((x0, y0, x0 + w, y0 + h))
        pages[n] = (page / 255.0 - 0.5) / 0.5
    return {"x": pages, "boxes": boxes}
