"""Streaming per-channel statistics: running sums whose size grows with channels, never with samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

__all__ = ["ALL_SUMS", "ChannelStats", "ConvGeometry", "gram_rows", "sample_rows", "unfold_conv_input"]

#: The running sums a :class:`ChannelStats` can keep: sum |a|, sum a², count of nonzeros.
ALL_SUMS = frozenset({"abs", "sq", "nonzero"})


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


def gram_rows(x: np.ndarray, axis: int, conv: ConvGeometry | None, max_bytes: int = 64 << 20) -> Iterator[np.ndarray]:
    """The rows a weight multiplies, ``[rows, features]`` float32, in chunks of at most ``max_bytes``.

    Rows of a MatMul/Gemm input are its vectors along ``axis``; rows of a 2-D Conv input are its
    im2col patches, unfolded a few samples at a time so that no chunk outgrows the budget.
    """
    x = x.astype(np.float32, copy=False)
    if conv is None:
        matrix = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
        step = max(1, max_bytes // max(matrix.shape[1] * 4, 1))
        for i in range(0, matrix.shape[0], step):
            yield matrix[i : i + step]
        return
    first = unfold_conv_input(x[:1], conv)
    per_sample = max(first.nbytes, 1)
    step = max(1, max_bytes // per_sample)
    yield first
    for i in range(1, x.shape[0], step):
        yield unfold_conv_input(x[i : i + step], conv)


def sample_rows(x: np.ndarray, axis: int, conv: ConvGeometry | None, samples: int, positions: int) -> np.ndarray:
    """The rows a weight multiplies for the first ``samples`` samples: ``[samples, positions, features]``.

    A Conv input is unfolded (im2col) and at most ``positions`` patches per sample are kept, evenly
    spaced; other inputs are their vectors along ``axis`` (one position per row of a sample).
    """
    x = np.asarray(x[:samples], dtype=np.float32)
    if conv is not None:
        rows = unfold_conv_input(x, conv)
        rows = rows.reshape(x.shape[0], -1, rows.shape[-1])
    else:
        moved = np.moveaxis(x, axis, -1)
        rows = moved.reshape(x.shape[0], -1, moved.shape[-1])
    if rows.shape[1] > positions:
        rows = rows[:, np.linspace(0, rows.shape[1] - 1, positions).round().astype(int)]
    return rows


@dataclasses.dataclass
class ChannelStats:
    """Running sums over one axis of an activation.

    ``count`` is the number of values seen per channel; ``sums`` says which sums are kept (the
    others stay zero); ``gram`` (optional) accumulates XᵀX of the rows the consuming weight
    multiplies, ``gram_sum`` their column sums, with ``rows`` rows seen. Paired with the rows ``R``
    of a reference model at the same place (layer-sequential refits), ``delta`` accumulates
    Xᵀ(R − X) (so ``XᵀR = gram + delta``, see :attr:`cross`, without cancellation when ``R ≈ X``),
    ``ref_gram`` RᵀR and ``ref_sum`` the column sums of ``R``. ``holdout`` (optional) holds the same
    sums over every other batch only, for checking a fit on data it was not fitted to. ``sample``
    (optional) keeps the rows of the first few samples themselves, ``[samples, positions, features]``
    (positions: a Conv's im2col patches, evenly thinned; see :func:`sample_rows`).

    Gram-sized sums are float32 (each chunk's product is float32 anyway; half the memory of the
    widest layers' Grams), vectors float64.
    """

    axis: int
    channels: int
    count: int = 0
    sum_abs: np.ndarray = dataclasses.field(default=None)  # type: ignore[assignment]
    sum_sq: np.ndarray = dataclasses.field(default=None)  # type: ignore[assignment]
    nonzero: np.ndarray = dataclasses.field(default=None)  # type: ignore[assignment]
    gram: np.ndarray | None = None
    gram_sum: np.ndarray | None = None
    rows: int = 0
    sums: frozenset[str] = ALL_SUMS
    delta: np.ndarray | None = None
    ref_gram: np.ndarray | None = None
    ref_sum: np.ndarray | None = None
    holdout: ChannelStats | None = None
    sample: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("sum_abs", "sum_sq", "nonzero"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.channels, dtype=np.float64))

    def update(self, x: np.ndarray) -> None:
        """Accumulate one batch of activations.

        Reduces in the array's own layout (no transposed copy): ``[outer, C, inner]`` with the
        contiguous inner axis summed first, in float32, then accumulated in float64.
        """
        axis = self.axis % x.ndim
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        x = np.ascontiguousarray(x)
        channels = x.shape[axis]
        outer = int(np.prod(x.shape[:axis]))
        inner = int(np.prod(x.shape[axis + 1 :]))
        self.count += outer * inner
        if inner == 1:  # channels last (MatMul/Gemm inputs)
            rows = x.reshape(outer, channels)
            if "abs" in self.sums:
                self.sum_abs += np.add.reduce(np.abs(rows), axis=0)
            if "sq" in self.sums:
                self.sum_sq += np.einsum("ij,ij->j", rows, rows)
            if "nonzero" in self.sums:
                self.nonzero += np.count_nonzero(rows, axis=0)
            return
        blocks = x.reshape(outer, channels, inner)  # NCHW: reduce the contiguous spatial axis first
        if "abs" in self.sums:
            self.sum_abs += np.add.reduce(np.abs(blocks), axis=2).sum(axis=0, dtype=np.float64)
        if "sq" in self.sums:
            self.sum_sq += np.einsum("ijk,ijk->ij", blocks, blocks).sum(axis=0, dtype=np.float64)
        if "nonzero" in self.sums:
            self.nonzero += np.count_nonzero(blocks, axis=2).sum(axis=0)

    def update_gram(
        self, rows: np.ndarray, reference: np.ndarray | None = None, *, reference_gram: bool = False
    ) -> None:
        """Accumulate XᵀX of a ``[rows, features]`` matrix (and the paired sums with ``reference`` rows).

        The reference's own Gram ``RᵀR`` is kept only with ``reference_gram``. One float32 product
        is alive at a time.
        """
        rows = rows.astype(np.float32, copy=False)
        self.gram_sum = _accumulate(self.gram_sum, rows.sum(axis=0, dtype=np.float64))
        self.rows += rows.shape[0]
        gram = rows.T @ rows
        if reference is None:
            self.gram = _accumulate(self.gram, gram)
            return
        reference = reference.astype(np.float32, copy=False)
        self.ref_sum = _accumulate(self.ref_sum, reference.sum(axis=0, dtype=np.float64))
        if self.delta is None:
            self.delta = np.zeros_like(gram)
        if np.array_equal(rows, reference):  # nothing upstream changed: the very same sums
            if reference_gram:
                self.ref_gram = _accumulate(self.ref_gram, gram.copy())
            self.gram = _accumulate(self.gram, gram)
            return
        self.gram = _accumulate(self.gram, gram)
        del gram
        self.delta += rows.T @ (reference - rows)
        if reference_gram:
            self.ref_gram = _accumulate(self.ref_gram, reference.T @ reference)

    @property
    def cross(self) -> np.ndarray | None:
        """XᵀR in float64 (``None`` unless paired)."""
        if self.delta is None or self.gram is None:
            return None
        return self.gram.astype(np.float64) + self.delta

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


def _accumulate(total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    """``total + part``, added in place; the first part is taken as it is (float32 Grams stay float32)."""
    if total is None:
        return part
    np.add(total, part, out=total)
    return total
