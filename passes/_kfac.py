"""``kfac`` channel importance: K-FAC neuron saliency (M25; Ebrahimi & Klabjan, Hessian spectral radius).

K-FAC approximates the Hessian block of a layer's weight ``W [neurons, fan-in]`` by ``A ⊗ G``, with
``A = E[x xᵀ]`` over the rows the weight multiplies (a Conv's im2col patches; a 1 appended when the
node has a bias) and ``G = E[δ δᵀ]`` of the gradient of the loss at the node's output (per sample,
summed over a Conv's positions). Removing neuron ``j`` (its row ``w_j``) costs, OBD-style,
``½ G_jj · w_jᵀ A w_j``. The spectral radius ``ρ(H) ≈ λ_max(A)·λ_max(G)`` (power iteration) of every
layer is reported. Gradients come from the torch view on the calibration data; the loss is the
cross-entropy of the first output with the calibration labels when they are given, otherwise
``½‖y‖²`` of the first output (distillation from the model itself has zero gradient at the start).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels import ChannelAnalysis, ParamUse
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.errors import CalibrationError
from onnxprune.passes._importance import CHANNEL_IMPORTANCES, ChannelImportance, Stats

if TYPE_CHECKING:
    from onnxprune.context import PassContext

__all__ = ["KFAC", "Factors", "fan_in", "kfac_factors", "kfac_saliency", "layer_rows", "spectral_radius", "torch_rows"]

_OPS = ("Conv", "Gemm", "MatMul")


@dataclasses.dataclass(frozen=True)
class Factors:
    """A layer's K-FAC factors, its weight rows ``[neurons, fan-in (+1 for a bias)]`` and the loss used."""

    a: np.ndarray
    g: np.ndarray
    rows: np.ndarray
    loss: str

    @property
    def saliency(self) -> np.ndarray:
        """``½ G_jj · w_jᵀ A w_j`` per neuron."""
        return kfac_saliency(self.rows, self.a, self.g)


def kfac_saliency(rows: np.ndarray, a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """OBD saliency of every neuron (row of ``rows``) under the K-FAC block ``A ⊗ G``."""
    return 0.5 * np.diag(g) * np.einsum("if,fg,ig->i", rows, a, rows)


def spectral_radius(matrix: np.ndarray, iterations: int = 100, seed: int = 0) -> float:
    """Largest eigenvalue of a symmetric PSD ``matrix`` by power iteration."""
    v = np.random.default_rng(seed).standard_normal(matrix.shape[0])
    value = 0.0
    for _ in range(iterations):
        w = matrix @ v
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        v, value = w / norm, float(v @ w)
    return value


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return np.asarray(value.const_value.numpy(), dtype=np.float64)


def layer_rows(node: ir.Node) -> np.ndarray | None:
    """A Conv/Gemm/MatMul's weight as ``[neurons, fan-in]`` rows, a bias column appended (``None``: not a layer)."""
    weight = _const(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or node.op_type not in _OPS or weight.ndim < 2:
        return None
    if node.op_type == "Conv":
        if node.attributes.get_int("group", 1) != 1 or weight.ndim != 4:
            return None
        rows = weight.reshape(weight.shape[0], -1)
    elif node.op_type == "Gemm":
        if node.attributes.get_int("transA", 0):
            return None
        rows = weight if node.attributes.get_int("transB", 0) else weight.T
    else:
        if weight.ndim != 2:
            return None
        rows = weight.T
    bias = _const(node.inputs[2]) if len(node.inputs) > 2 else None
    if bias is not None and bias.size == rows.shape[0]:
        rows = np.concatenate([rows, bias.reshape(-1, 1)], axis=1)
    return rows


def torch_rows(node: ir.Node, x: Any, y: Any, bias: bool, kernel: tuple[int, ...] | None = None) -> tuple[Any, Any]:
    """Input rows ``[R, fan-in]`` and output-gradient rows ``[samples·positions, neurons]`` of one node.

    ``kernel``: a Conv's ``(kh, kw)`` (default: read from its constant weight).
    """
    import torch

    if node.op_type == "Conv":
        if kernel is None:
            kernel = tuple(np.asarray(node.inputs[1].const_value.numpy()).shape[2:])  # type: ignore[union-attr]
        kh, kw = (int(k) for k in kernel)
        attrs = node.attributes
        top, left, bottom, right = tuple(attrs.get_ints("pads", (0, 0, 0, 0)))
        x = torch.nn.functional.pad(x, (left, right, top, bottom))
        cols = torch.nn.functional.unfold(
            x,
            (kh, kw),
            dilation=tuple(attrs.get_ints("dilations", (1, 1))),
            stride=tuple(attrs.get_ints("strides", (1, 1))),
        )
        inputs = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        grads = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1])
    else:
        inputs = x.reshape(-1, x.shape[-1])
        grads = y.reshape(-1, y.shape[-1])
    if bias:
        inputs = torch.cat([inputs, torch.ones(inputs.shape[0], 1, dtype=inputs.dtype)], dim=1)
    return inputs.double(), grads.double()


def kfac_factors(
    model: ir.Model, source: CalibrationSource, nodes: Sequence[ir.Node], batch_size: int = 32
) -> dict[str, Factors]:
    """K-FAC factors of ``nodes`` (Conv/Gemm/MatMul) over the calibration data, keyed by node name."""
    import torch

    from onnxprune.torchview import TorchView

    layers = {
        n.name: (n, r) for n in nodes if (r := layer_rows(n)) is not None and n.outputs and n.inputs[0] is not None
    }
    if not layers:
        return {}
    view = TorchView(model, trainable=True)
    labels = getattr(source, "labels", None)
    loss_kind = "cross-entropy" if labels is not None else "output sum of squares"
    names = {key: (node.inputs[0].name or "", node.outputs[0].name or "") for key, (node, _) in layers.items()}
    extra = tuple(dict.fromkeys(v for pair in names.values() for v in pair if v not in view.input_names))
    sums = {key: [0.0, 0.0, 0, 0] for key in layers}  # A sum, G sum, rows, samples
    seen = 0
    for batch in source.batches(batch_size):
        feeds = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items() if k in view.input_names}
        count = next(iter(feeds.values())).shape[0]
        values = view(**feeds, _extra=extra)
        values.update({k: v for k, v in feeds.items()})
        first = values[view.output_names[0]]
        if labels is not None:
            target = torch.from_numpy(np.asarray(labels[seen : seen + count])).long()
            loss = torch.nn.functional.cross_entropy(first.reshape(count, -1), target)
        else:
            loss = 0.5 * first.pow(2).sum() / count
        outputs = [values[names[key][1]] for key in layers]
        grads = torch.autograd.grad(loss, outputs)
        with torch.no_grad():
            for (key, (node, rows)), grad in zip(layers.items(), grads, strict=True):
                bias = rows.shape[1] != fan_in(node)
                x_rows, d_rows = torch_rows(node, values[names[key][0]].detach(), grad * count, bias)
                entry = sums[key]
                entry[0] = entry[0] + (x_rows.T @ x_rows).numpy()
                entry[1] = entry[1] + (d_rows.T @ d_rows).numpy()
                entry[2] += x_rows.shape[0]
                entry[3] += count
        seen += count
    return {
        key: Factors(np.asarray(s[0]) / max(s[2], 1), np.asarray(s[1]) / max(s[3], 1), layers[key][1], loss_kind)
        for key, s in sums.items()
    }


def fan_in(node: ir.Node) -> int:
    weight = np.asarray(node.inputs[1].const_value.numpy())  # type: ignore[union-attr]
    if node.op_type == "Conv":
        return int(np.prod(weight.shape[1:]))
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return int(weight.shape[1])
    return int(weight.shape[0])


@dataclasses.dataclass(frozen=True)
class KFAC(ChannelImportance):
    """K-FAC OBD neuron saliency ``½ G_jj · w_jᵀ A w_j`` of the producing layer (needs data and torch)."""

    name: str = "kfac"
    description: str = (
        "K-FAC OBD neuron saliency (Hessian block A⊗G, gradients via torch; labels: cross-entropy); needs data"
    )
    roles: tuple[str, ...] = ("out",)
    root: bool = False

    @property
    def needs_data(self) -> bool:
        return True

    def gather(
        self, context: PassContext, model: ir.Model, analysis: ChannelAnalysis, uses: Sequence[ParamUse]
    ) -> Stats | None:
        source = context.calibration
        if source is None or getattr(source, "random", False):
            raise CalibrationError("importance 'kfac' needs calibration data (--calib PATH)")
        nodes = list({id(u.node): u.node for u in uses if u.role == "out" and u.index == 1}.values())
        return kfac_factors(model, source, nodes, context.batch_size)

    def member(self, analysis: ChannelAnalysis, use: ParamUse, stats: Stats | None) -> np.ndarray | None:
        if use.role != "out" or use.index != 1 or stats is None or use.node.name not in stats:
            return None
        return np.repeat(stats[use.node.name].saliency, use.per)

    def summary(self, stats: Stats | None) -> dict[str, Any]:
        if not stats:
            return {}
        factors: Mapping[str, Factors] = stats
        return {
            "kfac_loss": next(iter(factors.values())).loss,
            "spectral_radius": {k: spectral_radius(f.a) * spectral_radius(f.g) for k, f in factors.items()},
        }


CHANNEL_IMPORTANCES.register(KFAC())
