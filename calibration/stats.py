"""Streaming per-channel statistics: running sums whose size grows with channels, never with samples."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["ChannelStats", "ConvGeometry", "unfold_conv_input"]


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """What is needed to unfold a 2-D Conv input into the rows its weight multiplies."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)


def unfold_conv_input(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Return the im2col matrix ``[B*Ho*Wo, C*kh*kw]`` of a ``[B, C, H, W]`` input.

    Columns follow the flattening order of a Conv weight ``[out, C, kh, kw]``.
    """
    kh, kw = geo.kernel
    dh, dw = geo.dilations
    top, left, bottom, right = geo.pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    windows = windows[:, :, :: geo.strides[0], :: geo.strides[1], ::dh, ::dw]
    b, c, ho, wo = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(b * ho * wo, c * kh * kw)


@dataclasses.dataclass
class ChannelStats:
    """Running sums over one axis of an activation.

    ``count`` is the number of values seen per channel; ``gram`` (optional) accumulates XᵀX of the
    rows the consuming weight multiplies, with ``rows`` rows seen.
    """

    axis: int
    channels: int
    count: int = 0
    sum_abs: np.ndarray = dataclasses.field(default=None)  # type: ignore[assignment]
    sum_sq: np.ndarray = dataclasses.field(default=None)  # type: ignore[assignment]
    nonzero: np.ndarray = dataclasses.field(default=None)  # type: ignore[assignment]
    gram: np.ndarray | None = None
    rows: int = 0

    def __post_init__(self) -> None:
        for name in ("sum_abs", "sum_sq", "nonzero"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.channels, dtype=np.float64))

    def update(self, x: np.ndarray) -> None:
        """Accumulate one batch of activations."""
        axis = self.axis % x.ndim
        moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
        if moved.dtype != np.float32 and moved.dtype != np.float64:
            moved = moved.astype(np.float32)
        self.count += moved.shape[0]
        self.sum_abs += np.abs(moved).sum(axis=0, dtype=np.float64)
        self.sum_sq += np.einsum("ij,ij->j", moved, moved, dtype=np.float64)
        self.nonzero += np.count_nonzero(moved, axis=0)

    def update_gram(self, rows: np.ndarray) -> None:
        """Accumulate XᵀX of a ``[rows, features]`` matrix."""
        rows64 = rows.astype(np.float64, copy=False)
        gram = rows64.T @ rows64
        self.gram = gram if self.gram is None else self.gram + gram
        self.rows += rows.shape[0]

    @property
    def mean_abs(self) -> np.ndarray:
        """Mean absolute activation per channel."""
        return self.sum_abs / max(self.count, 1)

    @property
    def mean_sq(self) -> np.ndarray:
        """Mean squared activation per channel."""
        return self.sum_sq / max(self.count, 1)

    @property
    def nonzero_fraction(self) -> np.ndarray:
        """Fraction of non-zero activations per channel (1 - APoZ)."""
        return self.nonzero / max(self.count, 1)

    @property
    def norm(self) -> np.ndarray:
        """L2 norm of each channel over all samples and positions (Wanda's ‖X_j‖)."""
        return np.sqrt(self.sum_sq)
