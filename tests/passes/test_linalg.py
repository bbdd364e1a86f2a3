"""Dense SPD algebra of the Gram-based passes: exact against numpy's general routines."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.passes._linalg import (
    lower_cholesky_with_inverse,
    output_error,
    solve_spd,
    upper_cholesky_of_inverse,
)


def _gram(n: int, rows: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, n))
    return x.T @ x


def _dampened(h: np.ndarray, percdamp: float) -> np.ndarray:
    d = h.copy()
    d[np.diag_indices_from(d)] += percdamp * np.mean(np.diag(h))
    return d


@pytest.mark.parametrize("n", [1, 7, 130])
def test_upper_cholesky_of_inverse_is_the_factor_of_the_dampened_inverse(n: int) -> None:
    h = _gram(n, n + 5)
    before = h.copy()
    u = upper_cholesky_of_inverse(h, 0.01)
    assert np.array_equal(h, before)  # the input is not touched
    assert np.array_equal(u, np.triu(u))
    inverse = np.linalg.inv(_dampened(h, 0.01))
    assert np.allclose(u.T @ u, inverse, rtol=1e-9, atol=1e-12 * np.abs(inverse).max())


def test_unit_mask_sets_the_diagonal_in_the_working_copy_only() -> None:
    h = _gram(6, 20)
    h[2, :] = h[:, 2] = 0.0
    unit = np.diag(h) == 0
    u = upper_cholesky_of_inverse(h, 0.01, unit=unit)
    expected = h.copy()
    expected[2, 2] = 1.0
    assert h[2, 2] == 0.0
    assert np.allclose(u.T @ u, np.linalg.inv(_dampened(expected, 0.01)))


def test_indefinite_hessian_raises_more_dampening_then_fails_clearly() -> None:
    rank_deficient = _gram(12, 3)  # singular: succeeds once dampened
    assert np.all(np.isfinite(upper_cholesky_of_inverse(rank_deficient, 0.0)))
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        upper_cholesky_of_inverse(-np.eye(4), 0.01)


def test_solve_and_whitening_factors_match_numpy() -> None:
    h = _gram(40, 60, seed=1)
    b = np.random.default_rng(2).standard_normal((40, 3))
    assert np.allclose(solve_spd(h, b, 0.01), np.linalg.solve(_dampened(h, 0.01), b))
    lower, inverse = lower_cholesky_with_inverse(h, 0.5)
    assert np.allclose(lower @ lower.T, h + 0.5 * np.eye(40))
    assert np.allclose(lower @ inverse, np.eye(40), atol=1e-10)
    assert lower_cholesky_with_inverse(-np.eye(3), 0.0) is None


def test_output_error_in_float32_matches_float64() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 20))
    w = rng.standard_normal((8, 20))
    approx = np.where(rng.random(w.shape) < 0.5, 0.0, w)
    h = x.T @ x
    direct = np.linalg.norm((w - approx) @ x.T) / np.linalg.norm(w @ x.T)
    assert output_error(w, approx, h) == pytest.approx(direct, rel=1e-9)
    assert output_error(w, approx, h.astype(np.float32)) == pytest.approx(direct, rel=1e-5)
