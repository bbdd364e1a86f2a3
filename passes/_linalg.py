"""Dense symmetric-positive-definite algebra on calibration Grams, in place where it can be.

Grams of wide layers are large (a 3×3 conv over 512 channels: 4608², 170 MB in float64), so every
helper here works on one copy at most and uses LAPACK's triangular routines through scipy instead of
general inverses: SparseGPT's ``chol(H⁻¹)`` costs one Cholesky and one triangular inverse.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import linalg as sla
from scipy.linalg import lapack

__all__ = [
    "lower_cholesky_with_inverse",
    "output_error",
    "quadratic_form",
    "relative_error",
    "solve_spd",
    "upper_cholesky_of_inverse",
]

logger = logging.getLogger(__name__)

_RETRIES = 6


def _dampened_cholesky(h: np.ndarray, percdamp: float, what: str) -> np.ndarray:
    """Lower Cholesky factor of ``h + λI`` computed in ``h`` (Fortran order, float64), in place.

    ``λ = percdamp · mean diag h`` is raised tenfold up to five times while ``h`` is not definite. Only
    the lower triangle is written (LAPACK leaves the upper one as it was), so a failed attempt is
    undone from the upper triangle.
    """
    diagonal = np.diag(h).copy()
    base = float(np.mean(diagonal)) if h.size else 0.0
    damp = percdamp
    for attempt in range(_RETRIES):
        h[np.diag_indices_from(h)] = diagonal + max(damp * base, 1e-12)
        factor, info = lapack.dpotrf(h, lower=1, clean=0, overwrite_a=1)
        if info == 0:
            if attempt:
                logger.warning("%s not positive definite: dampening raised to %.3g", what, damp)
            return factor
        for i in range(1, len(h)):  # row by row: index arrays would cost as much as ``h``
            h[i, :i] = h[:i, i]
        damp = max(damp * 10, 1e-4)
    raise np.linalg.LinAlgError(f"{what} is not positive definite even with dampening {damp:.3g}")


def upper_cholesky_of_inverse(hessian: np.ndarray, percdamp: float, unit: np.ndarray | None = None) -> np.ndarray:
    """``U`` (upper triangular) with ``(H + λI)⁻¹ = UᵀU``, as SparseGPT needs.

    ``unit`` (a boolean mask over the diagonal) sets those diagonal entries of ``H`` to 1 first, in
    the working copy (SparseGPT's treatment of inputs that never fire).

    With ``J`` the reversal permutation and ``J H J = L Lᵀ``, ``U = J L⁻¹ J``: one Cholesky and one
    triangular inverse, on a single working copy of ``H`` (returned as a reversed view of it).
    """
    flipped = np.array(hessian[::-1, ::-1], dtype=np.float64, order="F")
    if unit is not None and np.any(unit):
        flipped[np.diag_indices_from(flipped)] = np.where(unit[::-1], 1.0, np.diag(flipped))
    lower = _dampened_cholesky(flipped, percdamp, "Hessian")
    inverse, info = lapack.dtrtri(lower, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular inverse failed (info={info})")
    for i in range(len(inverse) - 1):  # the upper triangle still holds the input: becomes U's lower one
        inverse[i, i + 1 :] = 0.0
    return inverse[::-1, ::-1]


def lower_cholesky_with_inverse(gram: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray] | None:
    """``(L, L⁻¹)`` with ``L Lᵀ = G + damp·I``, or ``None`` when that is not positive definite."""
    h = np.array(gram, dtype=np.float64, order="F")
    h[np.diag_indices_from(h)] += damp
    lower, info = lapack.dpotrf(h, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        return None
    inverse, info = lapack.dtrtri(lower, lower=1, overwrite_c=0)
    return (lower, inverse) if info == 0 else None


def solve_spd(gram: np.ndarray, rhs: np.ndarray, percdamp: float) -> np.ndarray:
    """``(G + λI)⁻¹ · rhs`` for a symmetric positive semi-definite ``G`` (Cholesky, one copy of ``G``)."""
    h = np.array(gram, dtype=np.float64, order="F")
    lower = _dampened_cholesky(h, percdamp, "Gram")
    return sla.cho_solve((lower, True), rhs, overwrite_b=False, check_finite=False)


def output_error(w: np.ndarray, approx: np.ndarray, hessian: np.ndarray) -> float:
    """Relative output error ‖(W−Ŵ)X‖/‖WX‖ from ``H = XᵀX``: sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))."""
    return relative_error(quadratic_form(w - approx, hessian), quadratic_form(w, hessian))


def quadratic_form(x: np.ndarray, hessian: np.ndarray) -> float:
    """``tr(X H Xᵀ)`` in the Hessian's dtype (a float32 Hessian is not copied to float64), summed in float64.

    A sum over the rows of ``X``: row chunks of a large weight can be added up.
    """
    x = x.astype(hessian.dtype, copy=False)
    return float(np.sum((x @ hessian) * x, dtype=np.float64))


def relative_error(num: float, den: float) -> float:
    """``sqrt(num / den)`` of two :func:`quadratic_form` values (0 where ``den`` is 0)."""
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0
