"""Truncated SVD of a weight matrix, plain or weighted by the data and by an adjacent BatchNorm.

A weight is viewed as ``M [m, n]`` (one row per output, one column per input feature, so
``y = M x``). Its factorization is ``M ≈ A·B`` with ``A [m, r]`` and ``B [r, n]``.

* Plain: the SVD of ``M``; the weight error ``‖M − AB‖_F`` is the norm of the dropped singular
  values (Eckart–Young).
* Activation-aware: with the calibration Gram ``H = E[x xᵀ] = S Sᵀ`` (Cholesky or eigen
  factor), the SVD of ``M S`` truncated and mapped back by ``S⁻¹`` minimizes the output error
  ``E‖(M − AB) x‖²`` instead of the weight error.
* BN rectification (LRPET): the rows are scaled by the following BatchNorm's ``γ/√(σ²+ε)`` before
  the SVD and unscaled after, so the truncation minimizes the error after the BatchNorm.
* Energy transfer (LRPET, hard projection): the kept singular values are scaled so that their
  squared sum equals that of all singular values.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from onnxprune.passes._linalg import lower_cholesky_with_inverse
from onnxprune.passes._rank import energy_kept

__all__ = ["WHITENINGS", "Spectrum", "decompose", "whitening"]

logger = logging.getLogger(__name__)

WHITENINGS = ("cholesky", "eigen")


def whitening(gram: np.ndarray, method: str = "cholesky", percdamp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(S, S⁻¹)`` with ``S Sᵀ = H + λI`` (``λ = percdamp · mean diag H``).

    ``cholesky`` gives a lower-triangular ``S``; ``eigen`` gives ``Q (Λ+λI)^½`` (negative rounding
    noise in ``Λ`` clipped to 0). Cholesky falls back to eigen when the dampened Gram is not positive definite.
    """
    h = np.asarray(gram, dtype=np.float64)
    h = (h + h.T) / 2
    damp = percdamp * float(np.mean(np.diag(h))) if h.size else 0.0
    if damp <= 0:
        damp = 1e-8
    if method == "cholesky":
        factors = lower_cholesky_with_inverse(h, damp)
        if factors is not None:
            return factors
        logger.warning("Gram is not positive definite after dampening: eigen whitening used instead")
    elif method != "eigen":
        raise ValueError(f"whitening must be one of {', '.join(WHITENINGS)}, got {method!r}")
    values, vectors = np.linalg.eigh(h)
    root = np.sqrt(np.maximum(values, 0.0) + damp)
    return vectors * root, vectors.T / root[:, None]


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """The SVD ``U Σ Vᵀ`` of ``diag(row_scale) · M · S`` and how to map factors back to ``M``."""

    u: np.ndarray
    sigma: np.ndarray
    vt: np.ndarray
    row_scale: np.ndarray | None = None
    whiten_inv: np.ndarray | None = None

    @property
    def full_rank(self) -> int:
        """``min(m, n)``."""
        return int(self.sigma.size)

    def energy(self, rank: int) -> float:
        """Fraction of ``Σσ²`` held by the first ``rank`` singular values."""
        return energy_kept(self.sigma, rank)

    def factors(self, rank: int, energy_transfer: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``A [m, rank]`` and ``B [rank, n]`` with ``M ≈ A·B`` (each carries ``√σ``)."""
        if not 1 <= rank <= self.full_rank:
            raise ValueError(f"rank {rank} is outside 1..{self.full_rank}")
        kept = self.sigma[:rank].copy()
        if energy_transfer:
            kept_energy = float(np.sum(kept**2))
            if kept_energy > 0:
                kept *= np.sqrt(float(np.sum(self.sigma**2)) / kept_energy)
        root = np.sqrt(kept)
        a = self.u[:, :rank] * root
        b = root[:, None] * self.vt[:rank]
        if self.whiten_inv is not None:
            b = b @ self.whiten_inv
        if self.row_scale is not None:
            a = a * _safe_inverse(self.row_scale)[:, None]
        return a, b


def _safe_inverse(scale: np.ndarray) -> np.ndarray:
    """``1/scale``, with 0 where the scale is 0 (rows a BatchNorm multiplies by 0 do not matter)."""
    tiny = 1e-12 * float(np.max(np.abs(scale), initial=0.0))
    safe = np.where(np.abs(scale) > tiny, scale, 1.0)
    return np.where(np.abs(scale) > tiny, 1.0 / safe, 0.0)


def decompose(
    matrix: np.ndarray,
    *,
    gram: np.ndarray | None = None,
    method: str = "cholesky",
    percdamp: float = 0.01,
    row_scale: np.ndarray | None = None,
) -> Spectrum:
    """SVD of ``matrix [m, n]``, whitened by ``gram [n, n]`` and row-scaled by ``row_scale [m]`` if given."""
    m = np.asarray(matrix, dtype=np.float64)
    whiten_inv = None
    if gram is not None:
        s, whiten_inv = whitening(gram, method, percdamp)
        m = m @ s
    if row_scale is not None:
        m = m * np.asarray(row_scale, dtype=np.float64)[:, None]
    u, sigma, vt = np.linalg.svd(m, full_matrices=False)
    return Spectrum(u, sigma, vt, None if row_scale is None else np.asarray(row_scale, np.float64), whiten_inv)
