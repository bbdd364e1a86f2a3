"""Command-line options that say how images and text become model inputs (``--preprocess``, ``--tokenizer``, ...).

They go to every verb that reads data; :func:`pop_data_options` turns them into the recipe's
:class:`ImagePreprocess` and :class:`TextSpec`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from onnxprune.calibration.preprocess import LAYOUTS, PRESETS, ImagePreprocess, parse_resize
from onnxprune.calibration.text import TextSpec
from onnxprune.errors import OnnxPruneError, OptionError

__all__ = ["CALIB_TEXT_OPTION", "SPEC_OPTIONS", "data_options", "pop_data_options"]

CALIB_TEXT_OPTION = click.option(
    "--calib-text", type=click.Path(dir_okay=False), help="Calibration text, one sample a line (needs --tokenizer)."
)
SPEC_OPTIONS = (
    click.option("--tokenizer", type=click.Path(), help="tokenizer.json (or its folder) for text data."),
    click.option("--seq-len", type=click.IntRange(1), help="Text: pad/truncate to N tokens (default: the model's)."),
    click.option("--preprocess", type=click.Choice(list(PRESETS)), help="Images: scale/mean/std preset."),
    click.option("--resize", metavar="N|HxW", help="Images: shorter side to N, or exactly HxW, before the crop."),
    click.option("--layout", type=click.Choice(LAYOUTS), help="Images: channel axis (default: from the model)."),
    click.option("--bgr", is_flag=True, help="Images: feed BGR instead of RGB."),
    click.option("--scale", type=float, help="Images: multiply pixels (0-255) by F (replaces the preset's)."),
    click.option("--mean", metavar="M[,M,M]", help="Images: subtract per channel, RGB order, after --scale."),
    click.option("--std", metavar="S[,S,S]", help="Images: divide per channel, RGB order, after --mean."),
)
_IMAGE_KEYS = ("preprocess", "resize", "layout", "bgr", "scale", "mean", "std")


def _floats(option: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as e:
        raise OptionError(f"{option} {text!r}: expected one number or three, comma-separated") from e


def pop_data_options(kwargs: dict[str, Any]) -> tuple[ImagePreprocess | None, TextSpec | None]:
    """Remove the image and text options from a verb's ``kwargs`` and return them as specs (``None``: not given).

    A ``calib_text`` entry, when present, becomes ``calib`` (one of the two may be given). Bad values
    are click usage errors (one line, exit 2).
    """
    try:
        return _pop(kwargs)
    except OnnxPruneError as e:
        raise click.UsageError(str(e)) from e


def _pop(kwargs: dict[str, Any]) -> tuple[ImagePreprocess | None, TextSpec | None]:
    raw = {key: kwargs.pop(key) for key in _IMAGE_KEYS}
    tokenizer, seq_len = kwargs.pop("tokenizer"), kwargs.pop("seq_len")
    if seq_len is not None and tokenizer is None:
        raise click.UsageError("--seq-len needs --tokenizer PATH")
    text = None if tokenizer is None else TextSpec(tokenizer, seq_len)
    if "calib_text" in kwargs:
        calib_text = kwargs.pop("calib_text")
        if calib_text is not None and kwargs.get("calib") is not None:
            raise click.UsageError("give --calib or --calib-text, not both")
        if calib_text is not None and text is None:
            raise click.UsageError("--calib-text needs --tokenizer PATH")
        kwargs["calib"] = kwargs.get("calib") if calib_text is None else calib_text
    if all(raw[key] in (None, False) for key in _IMAGE_KEYS):
        return None, text
    images = ImagePreprocess(
        preset=raw["preprocess"],
        resize=None if raw["resize"] is None else parse_resize(raw["resize"]),
        layout=raw["layout"],
        bgr=bool(raw["bgr"]),
        scale=raw["scale"],
        mean=_floats("--mean", raw["mean"]),
        std=_floats("--std", raw["std"]),
    )
    return images, text


def data_options(*, calib_text: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options (and ``--calib-text`` when asked) to a verb; it gets ``images`` and ``text`` arguments."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            images, text = pop_data_options(kwargs)
            return fn(*args, images=images, text=text, **kwargs)

        for option in reversed((CALIB_TEXT_OPTION, *SPEC_OPTIONS) if calib_text else SPEC_OPTIONS):
            wrapper = option(wrapper)
        return wrapper

    return decorate
