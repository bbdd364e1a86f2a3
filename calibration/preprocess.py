"""Image preprocessing: how a picture becomes one model input (resize, center crop, scale, normalize, layout).

The steps, in order (torchvision's ``Resize`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize`` on PIL
images, so models trained that way see what they were trained on):

1. convert to the model's channel count: 3 → RGB (grayscale replicated, alpha dropped, CMYK and
   palettes converted), 1 → L (luma), 4 → RGBA;
2. resize with bilinear filtering: ``resize=(N,)`` takes the shorter side to N (the longer side as
   ``int(N * long / short)``), ``resize=(H, W)`` to exactly H×W; without ``resize``, the smallest
   size that covers the model's H×W;
3. center crop to the model's H×W;
4. ``(pixel * scale - mean) / std`` per channel, with ``mean``/``std`` in RGB order;
5. ``bgr`` reverses the channels; ``layout`` puts them first (NCHW) or last (NHWC).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from onnxprune._fields import check_fields, short
from onnxprune.calibration.sources import InputSpec
from onnxprune.errors import CalibrationError, RecipeError

__all__ = ["LAYOUTS", "PRESETS", "ImageGeometry", "ImagePreprocess", "image_geometry", "parse_resize", "preprocess"]

#: Named scale/mean/std settings: ``imagenet`` (torchvision), ``0-1`` (pixels / 255), ``-1-1`` (pixels / 127.5 - 1),
#: ``raw`` (pixels as they are, 0-255; also the one that feeds uint8 inputs).
PRESETS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "0-1": (1 / 255, (0.0,), (1.0,)),
    "-1-1": (1 / 255, (0.5,), (0.5,)),
    "raw": (1.0, (0.0,), (1.0,)),
}
LAYOUTS = ("NCHW", "NHWC")
#: PIL modes by the model's channel count.
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_WHERE = "calibration.images."


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
    """How images become model inputs (recipes: ``calibration.images``).

    ``preset`` gives scale/mean/std (see :data:`PRESETS`); ``scale``, ``mean`` and ``std`` given
    here replace the preset's. ``resize``: ``[N]`` (shorter side) or ``[H, W]`` (exact); ``None``:
    just cover the model's size. ``layout``: ``NCHW``/``NHWC``, ``None``: from the model's input
    (the axis of size 1, 3 or 4). ``mean``/``std`` hold one value or one per channel, in RGB order.
    """

    preset: str | None = None
    resize: tuple[int, ...] | None = None
    layout: str | None = None
    bgr: bool = False
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_fields(self, _WHERE)
        if self.preset is not None and self.preset not in PRESETS:
            raise RecipeError(f"{_WHERE}preset must be one of {', '.join(PRESETS)}, got {short(self.preset)}")
        if self.resize is not None and (len(self.resize) not in (1, 2) or min(self.resize) < 1):
            raise RecipeError(f"{_WHERE}resize must be [N] or [H, W] with sizes >= 1, got {short(self.resize)}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise RecipeError(f"{_WHERE}layout must be NCHW or NHWC, got {short(self.layout)}")
        if self.scale is not None and self.scale == 0:
            raise RecipeError(f"{_WHERE}scale must not be 0")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, 3, 4):
                raise RecipeError(f"{_WHERE}{name} must hold 1 value or one per channel, got {short(values)}")
        if self.std is not None and any(v == 0 for v in self.std):
            raise RecipeError(f"{_WHERE}std must not hold 0, got {short(self.std)}")
        if self.preset is None and self.scale is None and self.mean is None and self.std is None:
            raise RecipeError(
                "images need a pixel scaling: a preset (imagenet, 0-1, -1-1, raw) or scale/mean/std "
                "(--preprocess, --scale, --mean, --std)"
            )

    def values(self) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
        """The effective ``(scale, mean, std)``: the preset's (``raw`` without one), replaced by what is given."""
        scale, mean, std = PRESETS[self.preset or "raw"]
        return (
            scale if self.scale is None else self.scale,
            mean if self.mean is None else self.mean,
            std if self.std is None else self.std,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML (lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def parse_resize(text: str) -> tuple[int, ...]:
    """``256`` → ``(256,)`` (shorter side), ``224x320`` → ``(224, 320)`` (H×W)."""
    try:
        sizes = tuple(int(part) for part in text.lower().split("x"))
        if len(sizes) not in (1, 2) or min(sizes) < 1:
            raise ValueError
    except ValueError as e:
        raise CalibrationError(f"--resize {short(text)}: expected N (shorter side) or HxW, sizes >= 1") from e
    return sizes


@dataclasses.dataclass(frozen=True)
class ImageGeometry:
    """Where the pixels go in one model input: its full shape (batch included), channels, H×W and layout."""

    input: InputSpec
    shape: tuple[int | None, ...]
    channels: int
    height: int
    width: int
    layout: str

    def sample_shape(self) -> tuple[int, ...]:
        """One image as the model takes it, without the batch axis."""
        if self.layout == "NCHW":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)


def _layout(spec: ImagePreprocess, shape: tuple[int | None, ...], where: str) -> str:
    if spec.layout is not None:
        return spec.layout
    first, last = shape[1] in _MODES, shape[3] in _MODES
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    if first:
        return "NCHW"
    raise CalibrationError(f"{where}: cannot tell where the channels are; give --layout NCHW or NHWC")


def image_geometry(
    spec: ImagePreprocess, specs: list[InputSpec], input_shapes: dict[str, tuple[int, ...]], origin: str
) -> ImageGeometry:
    """The model input images feed, with its channels, H×W and layout (from the model, ``--input-shape``, ``resize``).

    Raises:
        CalibrationError: the model does not have exactly one rank-4 input, its channel count is not
            1, 3 or 4, its batch is fixed above 1, or its H×W is dynamic and neither ``--input-shape``
            nor ``resize`` fixes it.
    """
    if len(specs) != 1:
        names = ", ".join(s.name for s in specs)
        raise CalibrationError(f"{origin}: images feed a model with one input; this one has {len(specs)} ({names})")
    model_input = specs[0]
    shape: tuple[int | None, ...] = tuple(input_shapes.get(model_input.name, model_input.shape))
    where = f"{origin}: input '{model_input.name}' {model_input.display_shape}"
    if len(shape) != 4:
        raise CalibrationError(f"{where} is not an image input (N, C, H, W or N, H, W, C)")
    layout = _layout(spec, shape, where)
    c_axis, hw = (1, (2, 3)) if layout == "NCHW" else (3, (1, 2))
    channels = shape[c_axis]
    if channels not in _MODES:
        raise CalibrationError(
            f"{where}: {layout} puts {channels if channels is not None else 'a dynamic number of'} channels there; "
            "images give 1 (grayscale), 3 (RGB) or 4 (RGBA)" + ("" if spec.layout is None else " (check --layout)")
        )
    if shape[0] is not None and shape[0] != 1:
        raise CalibrationError(f"{where}: its batch is fixed at {shape[0]}; images feed batch 1 or a dynamic batch")
    height, width = shape[hw[0]], shape[hw[1]]
    if height is None or width is None:
        if spec.resize is None:
            raise CalibrationError(
                f"{where}: height/width are dynamic; fix them with --input-shape {model_input.name}=... or --resize HxW"
            )
        sizes = spec.resize if len(spec.resize) == 2 else spec.resize * 2
        height = height if height is not None else sizes[0]
        width = width if width is not None else sizes[1]
    scale, mean, std = spec.values()
    for what, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise CalibrationError(
                f"{where}: {what} holds {len(values)} values (RGB order) but the input has {channels} channel(s); "
                f"give --mean/--std with 1 value or {channels}"
            )
    dtype = model_input.dtype
    if not np.issubdtype(dtype, np.floating):
        if not np.issubdtype(dtype, np.integer) or (scale, set(mean), set(std)) != (1.0, {0.0}, {1.0}):
            raise CalibrationError(
                f"{where} takes {dtype}; images feed float inputs, or integer ones with --preprocess raw"
            )
    resolved = list(shape)
    resolved[c_axis], resolved[hw[0]], resolved[hw[1]] = channels, height, width
    return ImageGeometry(model_input, tuple(resolved), int(channels), int(height), int(width), layout)


def _resized_size(width: int, height: int, spec: ImagePreprocess, geometry: ImageGeometry) -> tuple[int, int]:
    """The (W, H) an image of ``width``×``height`` is resized to before the center crop."""
    if spec.resize is not None and len(spec.resize) == 2:
        return spec.resize[1], spec.resize[0]
    if spec.resize is not None:
        size = spec.resize[0]
        if width <= height:
            return size, int(size * height / width)
        return int(size * width / height), size
    factor = max(geometry.height / height, geometry.width / width)
    return max(geometry.width, round(width * factor)), max(geometry.height, round(height * factor))


def preprocess(image: Any, spec: ImagePreprocess, geometry: ImageGeometry, name: str) -> np.ndarray:
    """One PIL image as one model input sample (no batch axis), in the model's dtype.

    Raises:
        CalibrationError: 16-bit or float images, or an image smaller than the crop after resizing.
    """
    from PIL import Image  # noqa: PLC0415 - Pillow is the optional [data] extra

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        raise CalibrationError(f"{name}: {image.mode} images (16-bit or float) are not read; save them as 8-bit")
    mode = _MODES[geometry.channels]
    if image.mode != mode:
        if image.mode == "P" and mode != "L":
            image = image.convert("RGBA")  # palettes with transparency convert through RGBA cleanly
        image = image.convert(mode)
    size = _resized_size(image.width, image.height, spec, geometry)
    if size != (image.width, image.height):
        image = image.resize(size, Image.Resampling.BILINEAR)
    if image.width < geometry.width or image.height < geometry.height:
        raise CalibrationError(
            f"{name}: {image.width}x{image.height} after --resize is smaller than the model's "
            f"{geometry.width}x{geometry.height} (W x H); resize to at least that"
        )
    top = int(round((image.height - geometry.height) / 2.0))
    left = int(round((image.width - geometry.width) / 2.0))
    pixels = np.asarray(image, dtype=np.float32).reshape(image.height, image.width, geometry.channels)
    pixels = pixels[top : top + geometry.height, left : left + geometry.width]
    scale, mean, std = spec.values()
    pixels = (pixels * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if spec.bgr and geometry.channels >= 3:
        pixels = pixels[..., [2, 1, 0, *range(3, geometry.channels)]]
    if geometry.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels).astype(geometry.input.dtype)
