"""Shape and indexing ops: Reshape, Transpose, Concat, Split, Slice, Gather(ND), Shape, ... and constants."""

from __future__ import annotations

from typing import Any

import torch

from onnxprune.torchview._registry import op


def _ints(t: Any) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


@op("Reshape", since=5)
def reshape(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, shape = inputs[0], _ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def flatten(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    axis = attrs.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    outer = 1
    for d in x.shape[:axis]:
        outer *= d
    return x.reshape(outer, -1)


@op("Transpose")
def transpose(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    return x.permute(attrs.get("perm", list(reversed(range(x.dim())))))


@op("Concat")
def concat(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    tensors = [t for t in inputs if t is not None and (t.numel() or t.dim() > 1)]
    return torch.cat(tensors, dim=attrs["axis"])


def _split(x: torch.Tensor, axis: int, sizes: list[int] | None, outputs: int) -> tuple[torch.Tensor, ...]:
    if sizes is None:
        length = x.shape[axis]
        chunk = -(-length // outputs)
        sizes = [chunk] * (outputs - 1) + [length - chunk * (outputs - 1)]
    return tuple(torch.split(x, sizes, dim=axis))


@op("Split")
def split(inputs: list[Any], attrs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return _split(inputs[0], attrs.get("axis", 0), attrs.get("split"), attrs["_outputs"])


@op("Split", since=13)
def split_v13(inputs: list[Any], attrs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    sizes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None
    return _split(inputs[0], attrs.get("axis", 0), sizes, attrs.get("num_outputs", attrs["_outputs"]))


def _slice(x: torch.Tensor, starts: list[int], ends: list[int], axes: list[int], steps: list[int]) -> torch.Tensor:
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= x.dim()
        size = x.shape[axis]
        if step > 0:
            lo = max(0, min(size, start + size if start < 0 else start))
            hi = max(0, min(size, end + size if end < 0 else end))
            index[axis] = slice(lo, hi, step)
        else:  # negative steps: torch has none, so index the flipped axis
            first = start + size if start < 0 else start
            first = max(-1, min(size - 1, first))
            last = end + size if end < 0 else end
            last = max(-1, min(size - 1, last))
            index[axis] = slice(size - 1 - first, size - 1 - last, -step) if first > last else slice(0, 0)
            flips.append(axis)
    if flips:
        x = torch.flip(x, flips)
    return x[tuple(index)]


@op("Slice")
def slice_v1(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    starts, ends = attrs["starts"], attrs["ends"]
    axes = attrs.get("axes", list(range(len(starts))))
    return _slice(inputs[0], starts, ends, axes, [1] * len(starts))


@op("Slice", since=10)
def slice_v10(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    return _slice(inputs[0], starts, ends, axes, steps)


@op("Squeeze")
def squeeze(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _squeeze(inputs[0], attrs.get("axes"))


@op("Squeeze", since=13)
def squeeze_v13(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _squeeze(inputs[0], _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None)


def _squeeze(x: torch.Tensor, axes: list[int] | None) -> torch.Tensor:
    if axes is None:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(axis)
    return x


@op("Unsqueeze")
def unsqueeze(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _unsqueeze(inputs[0], attrs["axes"])


@op("Unsqueeze", since=13)
def unsqueeze_v13(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return _unsqueeze(inputs[0], _ints(inputs[1]))


def _unsqueeze(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


@op("Shape")
def shape(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    dims = list(inputs[0].shape)
    start, end = attrs.get("start", 0), attrs.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64)


@op("Size")
def size(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(inputs[0].numel(), dtype=torch.int64)


@op("Gather")
def gather(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, indices = inputs
    axis = attrs.get("axis", 0) % x.dim()
    indices = torch.where(indices < 0, indices + x.shape[axis], indices).long()
    out = torch.index_select(x, axis, indices.reshape(-1))
    return out.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))


@op("GatherElements")
def gather_elements(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, indices = inputs
    axis = attrs.get("axis", 0) % x.dim()
    return torch.gather(x, axis, torch.where(indices < 0, indices + x.shape[axis], indices).long())


@op("GatherND", since=11)
def gather_nd(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, indices = inputs
    b, k = attrs.get("batch_dims", 0), indices.shape[-1]
    sizes = torch.tensor(x.shape[b : b + k], dtype=torch.int64)
    indices = torch.where(indices < 0, indices + sizes, indices).long()
    batch = 1
    for d in x.shape[:b]:
        batch *= d
    flat = indices.reshape(batch, -1, k)  # [batch, lookups, k]
    rows = torch.arange(batch).unsqueeze(1).expand(batch, flat.shape[1])
    out = x.reshape(batch, *x.shape[b:])[(rows, *flat.unbind(-1))]  # [batch, lookups, *x.shape[b + k :]]
    return out.reshape(*indices.shape[:-1], *x.shape[b + k :])


@op("Expand")
def expand(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, target = inputs[0], _ints(inputs[1])
    shape = torch.broadcast_shapes(tuple(x.shape), tuple(target))
    return x.expand(shape)


@op("Tile")
def tile(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    return inputs[0].repeat(_ints(inputs[1]))


@op("Pad", since=11)
def pad(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x, pads = inputs[0], _ints(inputs[1])
    value = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(x.dim()))
    return _pad(x, pads, axes, attrs.get("mode", "constant"), float(value) if value is not None else 0.0)


@op("Pad")
def pad_v2(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    return _pad(x, attrs["pads"], list(range(x.dim())), attrs.get("mode", "constant"), attrs.get("value", 0.0))


def _pad(x: torch.Tensor, pads: list[int], axes: list[int], mode: str, value: float) -> torch.Tensor:
    n = len(axes)
    full = [0] * (2 * x.dim())
    for i, axis in enumerate(axes):
        axis %= x.dim()
        full[axis], full[axis + x.dim()] = pads[i], pads[i + n]
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):
        torch_pads += [full[axis], full[axis + x.dim()]]
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    return torch.nn.functional.pad(x, torch_pads, mode=torch_mode, value=value if mode == "constant" else None)


@op("Constant")
def constant(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", torch.float32), ("value_int", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    for key, dtype in (("value_floats", torch.float32), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(list(attrs[key]), dtype=dtype)
    raise NotImplementedError(f"Constant with attributes {sorted(attrs)}")


@op("ConstantOfShape", since=9)
def constant_of_shape(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    value = attrs.get("value")
    fill = value.reshape(-1)[0] if value is not None else torch.tensor(0.0)
    return torch.full(_ints(inputs[0]), fill.item(), dtype=fill.dtype)


@op("Range", since=11)
def range_(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    start, limit, delta = inputs
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@op("Trilu", since=14)
def trilu(inputs: list[Any], attrs: dict[str, Any]) -> torch.Tensor:
    x = inputs[0]
    k = int(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else 0
    return torch.triu(x, k) if attrs.get("upper", 1) else torch.tril(x, k)
