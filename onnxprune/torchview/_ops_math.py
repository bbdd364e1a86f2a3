"""Elementwise math, activations, comparisons, reductions and casts."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from onnxprune.torchview._registry import op

_DTYPES = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


def torch_dtype(onnx_type: int) -> torch.dtype:
    """Torch dtype of an ONNX ``TensorProto`` data type."""
    if onnx_type not in _DTYPES:
        raise NotImplementedError(f"ONNX data type {onnx_type}")
    return _DTYPES[onnx_type]


def _binary(name: str, fn: Any) -> None:
    op(name)(lambda inputs, attrs: fn(inputs[0], inputs[1]))


for _name, _fn in {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}.items():
    _binary(_name, _fn)


@op("Div")
def div(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a, b = inputs
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


@op("Pow")
def pow_(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a, b = inputs
    return torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b)


@op("Mod")
def mod(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    a, b = inputs
    return torch.fmod(a, b) if attrs.get("fmod", 0) else torch.remainder(a, b)


def _unary(name: str, fn: Any) -> None:
    op(name)(lambda inputs, attrs: fn(inputs[0]))


for _name, _fn in {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,
    "Sign": torch.sign,
    "Not": torch.logical_not,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "Identity": lambda x: x,
    "IsNaN": torch.isnan,
}.items():
    _unary(_name, _fn)


@op("LeakyRelu")
def leaky_relu(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@op("Elu")
def elu(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return F.elu(inputs[0], attrs.get("alpha", 1.0))


@op("Selu")
def selu(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    alpha, gamma = attrs.get("alpha", 1.67326319217681884765625), attrs.get("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@op("HardSigmoid")
def hard_sigmoid(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.clamp(attrs.get("alpha", 0.2) * inputs[0] + attrs.get("beta", 0.5), 0, 1)


@op("HardSwish")
def hard_swish(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return F.hardswish(inputs[0])


@op("Gelu", since=20)
def gelu(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return F.gelu(inputs[0], approximate=attrs.get("approximate", "none"))


@op("Clip", since=11)
def clip(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 else None
    high = inputs[2] if len(inputs) > 2 else None
    return torch.clamp(x, low, high)


@op("Clip")
def clip_v6(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.clamp(inputs[0], attrs.get("min", float("-inf")), attrs.get("max", float("inf")))


def _variadic(fn: Any) -> Any:
    def apply(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
        out = inputs[0]
        for x in inputs[1:]:
            out = fn(out, x)
        return out

    return apply


op("Max")(_variadic(torch.maximum))
op("Min")(_variadic(torch.minimum))
op("Sum")(_variadic(torch.add))


@op("Mean")
def mean(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _variadic(torch.add)(inputs, attrs) / len(inputs)


@op("Where")
def where(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.where(inputs[0], inputs[1], inputs[2])


@op("Cast")
def cast(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return inputs[0].to(torch_dtype(attrs["to"]))


@op("CastLike", since=15)
def cast_like(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return inputs[0].to(inputs[1].dtype)


def _reduce(fn: Any, *, axes_input_since: int) -> Any:
    """A Reduce* op: axes as an attribute before ``axes_input_since``, as input 1 from then on."""

    def from_attribute(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
        return _apply(fn, inputs[0], attrs.get("axes"), attrs)

    def from_input(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
        axes = inputs[1].tolist() if len(inputs) > 1 and inputs[1] is not None else None
        if not axes and attrs.get("noop_with_empty_axes", 0):
            return inputs[0]
        return _apply(fn, inputs[0], axes, attrs)

    return from_attribute, from_input


def _apply(fn: Any, x: torch.Tensor, axes: list[int] | None, attrs: dict[str, Any]) -> torch.Tensor:
    dims = tuple(range(x.dim())) if not axes else tuple(a % x.dim() for a in axes)
    return fn(x, dims, bool(attrs.get("keepdims", 1)))


_REDUCERS = {
    "ReduceMean": (lambda x, d, k: x.mean(dim=d, keepdim=k), 18),
    "ReduceSum": (lambda x, d, k: x.sum(dim=d, keepdim=k), 13),
    "ReduceMax": (lambda x, d, k: x.amax(dim=d, keepdim=k), 18),
    "ReduceMin": (lambda x, d, k: x.amin(dim=d, keepdim=k), 18),
    "ReduceProd": (lambda x, d, k: _prod(x, d, k), 18),
    "ReduceL2": (lambda x, d, k: x.pow(2).sum(dim=d, keepdim=k).sqrt(), 18),
    "ReduceL1": (lambda x, d, k: x.abs().sum(dim=d, keepdim=k), 18),
    "ReduceSumSquare": (lambda x, d, k: x.pow(2).sum(dim=d, keepdim=k), 18),
}


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keep)
    return x


for _name, (_fn, _since) in _REDUCERS.items():
    _old, _new = _reduce(_fn, axes_input_since=_since)
    op(_name)(_old)
    op(_name, since=_since)(_new)


@op("ArgMax")
def argmax(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.argmax(inputs[0], dim=attrs.get("axis", 0), keepdim=bool(attrs.get("keepdims", 1)))


@op("CumSum", since=11)
def cumsum(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, axis = inputs
    if attrs.get("exclusive", 0) or attrs.get("reverse", 0):
        raise NotImplementedError("CumSum with exclusive/reverse")
    return torch.cumsum(x, dim=int(axis))
