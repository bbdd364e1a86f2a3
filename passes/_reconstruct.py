"""Closed-form recovery: refit each consumer's weight and bias on the calibration activations.

For a consumer whose input lost channels, the kept columns of its input are fitted to the original
output ``X·W + b`` by ridge regression, using only streaming sums. One-shot, the input is the
original ``X`` and ``[W'; b'] = (G_kk + λI)⁻¹ G_k,: [W; b]`` with ``G`` the Gram of ``[X, 1]``.
Layer-sequentially the input ``X̂`` comes from the model with the earlier consumers already pruned
and refitted, and the target is still the original output: ``[W'; b'] = (Ĝ_kk + λI)⁻¹ C_k,: [W; b]``
with ``Ĝ`` the Gram of ``[X̂, 1]`` and ``C = [X̂, 1]ᵀ[X, 1]``, so each refit also corrects the error
of the layers before it. The result is written at full width with zeros in the removed columns, so
the masked model already carries it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels import ChannelAnalysis, ParamUse, replace_constant
from onnxprune.calibration.collect import StatRequest, conv_geometry
from onnxprune.calibration.stats import ChannelStats

__all__ = ["Refit", "original_weights", "plan_refits", "refit"]

#: consumer ops whose weight is refitted (ConvTranspose and others keep the plain slice)
_REFITTED = ("Conv", "Gemm", "MatMul")


@dataclasses.dataclass(frozen=True)
class Refit:
    """One consumer to refit: its input, the Gram request, and where its weight and bias live."""

    node: ir.Node
    use: ParamUse
    request: StatRequest
    kernel: int  # columns per input channel (kh·kw for Conv, 1 otherwise)
    bias: tuple[ir.Node, int] | None  # where the intercept goes (an absent Conv/Gemm bias is added); None: no intercept
    features: int = 0  # Gram width (input channels × kernel)


#: onnxruntime's fused ops that add a constant bias to their input: op -> (inputs the bias adds to, bias index)
_FUSED_BIAS = {
    "BiasGelu": ((0,), 1),
    "FastGelu": ((0,), 1),
    "SkipLayerNormalization": ((0, 1), 4),
    "SkipSimplifiedLayerNormalization": ((0, 1), 3),
}


def _bias_add(node: ir.Node, analysis: ChannelAnalysis, n: int) -> tuple[ir.Node, int] | None:
    """The ``Add(MatMul, const[n])`` (or fused com.microsoft op with a bias input) that carries a MatMul's bias."""
    uses = node.outputs[0].uses()
    if len(uses) != 1:
        return None
    add, index = uses[0]
    if add.op_type == "Add" and add.domain in ("", "ai.onnx"):
        other = 1 - index
    elif add.domain == "com.microsoft" and index in _FUSED_BIAS.get(add.op_type, ((), 0))[0]:
        other = _FUSED_BIAS[add.op_type][1]
    else:
        return None
    const = analysis.const(add.inputs[other]) if other < len(add.inputs) else None
    if const is None or const.size != n or const.shape[-1] != n:
        return None
    return add, other


def _bias_writable(analysis: ChannelAnalysis, holder: ir.Node, index: int, outputs: int) -> bool:
    """The bias input is absent (a new initializer is added) or a constant with one value per output."""
    value = holder.inputs[index] if index < len(holder.inputs) else None
    if value is None:
        return True
    const = analysis.const(value)
    return const is not None and const.size == outputs


def _plan_one(analysis: ChannelAnalysis, use: ParamUse, max_features: int) -> Refit | str:
    node = use.node
    if node.op_type not in _REFITTED:
        return f"{node.op_type} consumers are not refitted"
    weight = analysis.const(node.inputs[1])
    layout = analysis.layout(use.by)
    assert weight is not None and layout is not None
    attrs = node.attributes
    geometry, kernel, bias = None, 1, (node, 2)
    if node.op_type == "Conv":
        if weight.ndim != 4:
            return "only 2-D Conv consumers are refitted"
        geometry = conv_geometry(node, tuple(weight.shape[2:]))  # type: ignore[arg-type]
        if isinstance(geometry, str):
            return geometry
        kernel = int(weight.shape[2] * weight.shape[3])
    elif node.op_type == "Gemm":
        if attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_float("beta", 1.0) != 1.0:
            return "Gemm with alpha/beta != 1 is not refitted"
    else:
        bias = _bias_add(node, analysis, weight.shape[1])
    outputs = int(weight.shape[0] if node.op_type == "Conv" else _as_matrix(node, weight).shape[1])
    if bias is not None and not _bias_writable(analysis, *bias, outputs):
        bias = None  # a computed or broadcast bias: fit without an intercept
    key = f"{use.by.name}@{node.name}"
    request = StatRequest(
        use.by.name or "", layout.axis, gram=True, conv=geometry, sums=frozenset(), key=key, holdout=True
    )
    features = layout.width * kernel
    if features > max_features:
        return f"{features} input features exceed the refit limit ({max_features})"
    return Refit(node, use, request, kernel, bias, features)


def plan_refits(
    analysis: ChannelAnalysis, uses: Sequence[ParamUse], keep: Mapping[int, np.ndarray], max_features: int
) -> tuple[list[Refit], dict[str, str]]:
    """Consumers that lose input channels under ``keep``, and the reasons for those left as they are."""
    plans: list[Refit] = []
    skipped: dict[str, str] = {}
    for use in uses:
        if use.role != "in":
            continue
        kept = analysis.positions(use.by, keep)
        layout = analysis.layout(use.by)
        if kept is None or layout is None or len(kept) == layout.width:
            continue
        plan = _plan_one(analysis, use, max_features)
        if isinstance(plan, str):
            skipped[use.node.name or ""] = plan
        else:
            plans.append(plan)
    return plans, skipped


def _as_matrix(node: ir.Node, weight: np.ndarray) -> np.ndarray:
    """The weight as ``[features, outputs]`` (features in the Gram's column order)."""
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1).T
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight.T
    return weight


def _from_matrix(node: ir.Node, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Conv":
        return matrix.T.reshape(shape)
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return matrix.T
    return matrix


def _augmented(gram: np.ndarray, left: np.ndarray, right: np.ndarray, rows: int) -> np.ndarray:
    """``[A, 1]ᵀ[B, 1]`` from ``AᵀB``, the column sums of ``A`` (left) and of ``B`` (right)."""
    features = gram.shape[0]
    out = np.zeros((features + 1, features + 1))
    out[:features, :features] = gram
    out[:features, -1] = left
    out[-1, :features] = right
    out[-1, -1] = rows
    return out


@dataclasses.dataclass(frozen=True)
class _Moments:
    """Augmented second moments of the consumer's input now (``X̂``) and originally (``X``)."""

    now: np.ndarray  # [X̂,1]ᵀ[X̂,1]
    cross: np.ndarray  # [X̂,1]ᵀ[X,1]
    original: np.ndarray  # [X,1]ᵀ[X,1]

    @classmethod
    def of(cls, entry: ChannelStats) -> _Moments:
        assert entry.gram is not None and entry.gram_sum is not None
        now = _augmented(entry.gram, entry.gram_sum, entry.gram_sum, entry.rows)
        if entry.cross is None or entry.ref_gram is None or entry.ref_sum is None:  # one-shot: X̂ = X
            return cls(now, now, now)
        cross = _augmented(entry.cross, entry.gram_sum, entry.ref_sum, entry.rows)
        return cls(now, cross, _augmented(entry.ref_gram, entry.ref_sum, entry.ref_sum, entry.rows))

    @property
    def samples(self) -> float:
        """Rows the moments were summed over (the intercept's diagonal)."""
        return float(self.now[-1, -1])

    def error(self, theta: np.ndarray, target: np.ndarray) -> float:
        """Σ over samples of ‖[X̂,1]·theta − [X,1]·target‖²."""
        value = (
            np.einsum("ij,ij->", theta, self.now @ theta)
            - 2 * np.einsum("ij,ij->", theta, self.cross @ target)
            + np.einsum("ij,ij->", target, self.original @ target)
        )
        return max(float(value), 0.0)


def original_weights(analysis: ChannelAnalysis, plan: Refit) -> tuple[np.ndarray, np.ndarray | None]:
    """The consumer's weight and bias as they are now (``None``: no bias to refit)."""
    node = plan.node
    weight = np.array(analysis.const(node.inputs[1]))
    if plan.bias is None:
        return weight, None
    holder, index = plan.bias
    present = index < len(holder.inputs) and holder.inputs[index] is not None
    outputs = _as_matrix(node, weight).shape[1]
    return weight, np.array(analysis.const(holder.inputs[index])) if present else np.zeros(outputs, weight.dtype)


def refit(
    analysis: ChannelAnalysis,
    plan: Refit,
    keep: Mapping[int, np.ndarray],
    stats: Mapping[str, ChannelStats],
    ridge: float,
    original_values: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Refit one consumer in place; return its relative output error before and after.

    ``original_values`` (weight, bias) are the targets when the consumer was already masked.
    """
    node = plan.node
    moments = _Moments.of(stats[plan.request.name])
    weight, bias_now = original_values if original_values is not None else original_weights(analysis, plan)
    matrix = _as_matrix(node, weight).astype(np.float64)
    features, outputs = matrix.shape
    original = np.vstack([matrix, (bias_now if bias_now is not None else np.zeros(outputs)).reshape(1, -1)])
    channels = analysis.positions(plan.use.by, keep)
    assert channels is not None
    cols = (channels[:, None] * plan.kernel + np.arange(plan.kernel)[None, :]).ravel()
    path = _RidgePath(moments, cols, features, original, intercept=bias_now is not None)
    masked = _masked(original, path)
    reference = max(moments.error(np.zeros_like(original), original), 1e-30)
    before = moments.error(masked, original) / reference
    strength = _choose_ridge(stats[plan.request.name], moments, path, original, ridge)
    fitted = masked if strength is None else path.solve(strength)[0]
    after = before if strength is None else moments.error(fitted, original) / reference
    replace_constant(node, 1, _from_matrix(node, fitted[:features], weight.shape).astype(weight.dtype))
    if plan.bias is not None and bias_now is not None:
        holder, index = plan.bias
        replace_constant(holder, index, fitted[-1].reshape(bias_now.shape).astype(weight.dtype))
    return {"error_before": before, "error_after": after, "ridge": strength}


#: ridge strengths tried (times the configured one); generalized cross-validation picks among them,
#: and keeps the plain slice when no fit is expected to generalize (few rows for many features)
_RIDGE_SCALES = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def _choose_ridge(
    entry: ChannelStats, moments: _Moments, path: _RidgePath, original: np.ndarray, ridge: float
) -> float | None:
    """The ridge strength to refit with, or None to keep the plain slice.

    With held-out batches (``entry.holdout``), each strength is fitted on the other batches and scored
    on the held-out ones, as is the plain slice: a refit must lower the error on samples it did not
    see. Otherwise generalized cross-validation scores the fits on the data they saw.
    """
    held = entry.holdout
    if held is not None and 0 < held.rows < entry.rows and held.gram is not None:
        test = _Moments.of(held)
        train = _Moments(moments.now - test.now, moments.cross - test.cross, moments.original - test.original)
        fold = _RidgePath(train, path.cols, path.features, original, path.intercept)
        scores = {None: test.error(_masked(original, path), original)}
        scores.update({ridge * k: test.error(fold.solve(ridge * k)[0], original) for k in _RIDGE_SCALES})
    else:
        reference = max(moments.error(np.zeros_like(original), original), 1e-30)
        scores = {None: moments.error(_masked(original, path), original) / reference}
        for scale in _RIDGE_SCALES:
            fitted, dof = path.solve(ridge * scale)
            error = moments.error(fitted, original) / reference
            scores[ridge * scale] = error / max(1.0 - dof / max(moments.samples, 1.0), 1e-6) ** 2
    return min(scores, key=lambda k: scores[k])


def _masked(original: np.ndarray, path: _RidgePath) -> np.ndarray:
    masked = original.copy()
    masked[np.setdiff1d(np.arange(path.features), path.cols)] = 0.0
    return masked


class _RidgePath:
    """Ridge fits of the kept columns for any strength, from one eigendecomposition.

    With an intercept the problem is centered (the intercept is not shrunk); ``solve`` returns the full
    ``[W; b]`` and the effective degrees of freedom (``Σ d/(d+λ)``, +1 for the intercept).
    """

    def __init__(self, moments: _Moments, cols: np.ndarray, features: int, original: np.ndarray, intercept: bool):
        self.cols, self.features, self.original, self.intercept = cols, features, original, intercept
        n = max(moments.samples, 1.0)
        gram = moments.now[np.ix_(cols, cols)]
        target = moments.cross @ original  # [X̂,1]ᵀ[X,1]·θ: features' and ones' products with the target
        self.scale = float(np.mean(np.diag(gram))) if len(cols) else 0.0
        rhs = target[cols]
        if intercept:
            mean_x = moments.now[cols, -1] / n
            self.mean_x, self.mean_y = mean_x, target[-1] / n
            gram = gram - n * np.outer(mean_x, mean_x)
            rhs = rhs - n * np.outer(mean_x, self.mean_y)
        self.eigen, vectors = np.linalg.eigh(gram)
        self.eigen = np.clip(self.eigen, 0.0, None)
        self.vectors, self.projected = vectors, vectors.T @ rhs

    def solve(self, ridge: float) -> tuple[np.ndarray, float]:
        damp = ridge * self.scale
        weights = self.vectors @ (self.projected / (self.eigen + damp)[:, None])
        fitted = np.zeros_like(self.original)
        fitted[self.cols] = weights
        dof = float(np.sum(self.eigen / (self.eigen + damp))) if damp > 0 else float(len(self.cols))
        if self.intercept:
            fitted[self.features] = self.mean_y - self.mean_x @ weights
            dof += 1.0
        else:
            fitted[self.features] = self.original[self.features]
        return fitted, dof
