"""Layers: convolutions, matrix products, normalizations, pooling, activations with parameters."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from onnxprune.torchview._registry import op


def _same_pads(x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int], upper: bool) -> list[int]:
    """ONNX begin/end pads for auto_pad SAME_UPPER/SAME_LOWER."""
    begins, ends = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if upper else big)
        ends.append(big if upper else small)
    return begins + ends


def _pad_input(x: torch.Tensor, attrs: dict[str, Any], kernel: list[int], value: float = 0.0) -> torch.Tensor:
    """Apply ONNX ``pads``/``auto_pad`` explicitly (torch pads symmetrically only)."""
    spatial = x.dim() - 2
    strides = attrs.get("strides", [1] * spatial)
    dilations = attrs.get("dilations", [1] * spatial)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(x, kernel, strides, dilations, auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    else:
        pads = attrs.get("pads", [0] * (2 * spatial))
    if not any(pads):
        return x
    torch_pads: list[int] = []
    for axis in reversed(range(spatial)):
        torch_pads += [pads[axis], pads[axis + spatial]]
    return F.pad(x, torch_pads, value=value)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@op("Conv")
def conv(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    kernel = attrs.get("kernel_shape", list(w.shape[2:]))
    spatial = x.dim() - 2
    x = _pad_input(x, attrs, kernel)
    return _CONV[spatial](
        x,
        w,
        bias,
        stride=attrs.get("strides", [1] * spatial),
        dilation=attrs.get("dilations", [1] * spatial),
        groups=attrs.get("group", 1),
    )


_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@op("ConvTranspose")
def conv_transpose(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    spatial = x.dim() - 2
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or "output_shape" in attrs:
        raise NotImplementedError("ConvTranspose with auto_pad SAME or output_shape")
    pads = attrs.get("pads", [0] * (2 * spatial))
    if pads[:spatial] != pads[spatial:]:
        raise NotImplementedError("ConvTranspose with asymmetric pads")
    return _CONV_T[spatial](
        x,
        w,
        bias,
        stride=attrs.get("strides", [1] * spatial),
        padding=pads[:spatial],
        output_padding=attrs.get("output_padding", [0] * spatial),
        groups=attrs.get("group", 1),
        dilation=attrs.get("dilations", [1] * spatial),
    )


@op("Gemm")
def gemm(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0):
        b = b.t()
    y = attrs.get("alpha", 1.0) * (a @ b)
    return y if c is None else y + attrs.get("beta", 1.0) * c


@op("MatMul")
def matmul(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.matmul(inputs[0], inputs[1])


@op("Einsum", since=12)
def einsum(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.einsum(attrs["equation"], *inputs)


@op("BatchNormalization")
def batch_norm(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5))


@op("LayerNormalization", since=17)
def layer_norm(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = attrs.get("axis", -1) % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, eps=attrs.get("epsilon", 1e-5))


@op("InstanceNormalization")
def instance_norm(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, scale, bias = inputs
    return F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))


@op("GroupNormalization", since=18)
def group_norm(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, scale, bias = inputs
    groups = attrs["num_groups"]
    if scale.numel() != x.shape[1]:  # opset 18: one scale/bias per group
        scale = scale.repeat_interleave(x.shape[1] // groups)
        bias = bias.repeat_interleave(x.shape[1] // groups)
    return F.group_norm(x, groups, scale, bias, eps=attrs.get("epsilon", 1e-5))


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _symmetric_padding(x: torch.Tensor, attrs: dict[str, Any]) -> list[int] | None:
    """The torch ``padding`` when ONNX's pads are explicit and symmetric, else ``None`` (pad first)."""
    spatial = x.dim() - 2
    pads = attrs.get("pads", [0] * (2 * spatial))
    if attrs.get("auto_pad", "NOTSET") == "NOTSET" and pads[:spatial] == pads[spatial:]:
        return list(pads[:spatial])
    return None


@op("MaxPool")
def max_pool(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    kernel = attrs["kernel_shape"]
    spatial = x.dim() - 2
    padding = _symmetric_padding(x, attrs)
    if padding is None:
        x, padding = _pad_input(x, attrs, kernel, value=float("-inf")), [0] * spatial
    return _MAX_POOL[spatial](
        x,
        kernel,
        stride=attrs.get("strides", [1] * spatial),
        padding=padding,
        dilation=attrs.get("dilations", [1] * spatial),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
    )


@op("AveragePool")
def average_pool(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    kernel = attrs["kernel_shape"]
    spatial = x.dim() - 2
    include_pad = bool(attrs.get("count_include_pad", 0))
    padding = _symmetric_padding(x, attrs)
    if padding is None:
        if not include_pad and any(attrs.get("pads", [])):
            raise NotImplementedError("AveragePool with asymmetric pads and count_include_pad=0")
        x, padding = _pad_input(x, attrs, kernel), [0] * spatial
    return _AVG_POOL[spatial](
        x,
        kernel,
        stride=attrs.get("strides", [1] * spatial),
        padding=padding,
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
        count_include_pad=include_pad,
    )


@op("GlobalAveragePool")
def global_average_pool(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@op("Dropout")
def dropout(inputs: list[Any], attrs: dict[str, Any]) -> Any:
    x = inputs[0]
    return x, torch.ones_like(x, dtype=torch.bool)


@op("Softmax", since=13)
def softmax(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.softmax(inputs[0], dim=attrs.get("axis", -1))


@op("Softmax")
def softmax_v1(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    axis = attrs.get("axis", 1) % x.dim()
    flat = x.reshape(*x.shape[:axis], -1)
    return torch.softmax(flat, dim=-1).reshape(x.shape)


@op("LogSoftmax", since=13)
def log_softmax(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.log_softmax(inputs[0], dim=attrs.get("axis", -1))


@op("PRelu")
def prelu(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, slope = inputs
    return torch.where(x >= 0, x, x * slope)


@op("Resize", since=11)
def resize(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    scales = inputs[2] if len(inputs) > 2 else None
    sizes = inputs[3] if len(inputs) > 3 else None
    mode = attrs.get("mode", "nearest")
    transform = attrs.get("coordinate_transformation_mode", "half_pixel")
    size = None
    factor = None
    if sizes is not None and sizes.numel():
        size = [int(s) for s in sizes.tolist()[2:]]
    elif scales is not None and scales.numel():
        factor = [float(s) for s in scales.tolist()[2:]]
    if mode == "nearest":  # torch's floor(asymmetric) equals every ONNX nearest mode for integer upscales
        return F.interpolate(x, size=size, scale_factor=factor, mode="nearest")
    torch_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.dim() - 2] if mode == "linear" else "bicubic"
    return F.interpolate(x, size=size, scale_factor=factor, mode=torch_mode, align_corners=transform == "align_corners")


@op("Upsample")
def upsample(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    scales = inputs[1].tolist() if len(inputs) > 1 else attrs["scales"]
    mode = attrs.get("mode", "nearest")
    torch_mode = "nearest" if mode == "nearest" else "bilinear"
    return F.interpolate(x, scale_factor=[float(s) for s in scales[2:]], mode=torch_mode, align_corners=False)
