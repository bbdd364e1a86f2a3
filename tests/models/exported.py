"""Convenience builders that export the plain torch test modules to ONNX (cached per process)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import onnx

from tests.models.export import torch_export
from tests.models.torch_modules import module_class

__all__ = ["bert_like_onnx", "mobilenetv2_like_onnx", "resnet18_like_onnx", "seeded", "tiny_cnn_onnx"]


def seeded(seed: int, make: Callable[[], Any]) -> Any:
    """Run *make* under ``torch.manual_seed(seed)`` without disturbing the global RNG.

    ``seeded(0, lambda: ResNet18Like(10, 64))`` re-creates exactly the module that
    ``resnet18_like_onnx(seed=0)`` exported (for comparisons against torch).
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


_EXPORT_CACHE: dict[tuple[Any, ...], onnx.ModelProto] = {}


def _cached_export(builder: Callable[..., onnx.ModelProto]) -> Callable[..., onnx.ModelProto]:
    """Memoise an export builder per process; every call returns an independent copy."""
    sig = inspect.signature(builder)

    @functools.wraps(builder)
    def wrapper(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        key = (builder.__name__, *sorted(bound.arguments.items()))
        if key not in _EXPORT_CACHE:
            _EXPORT_CACHE[key] = builder(*bound.args, **bound.kwargs)
        model = onnx.ModelProto()
        model.CopyFrom(_EXPORT_CACHE[key])
        return model

    return wrapper


def _image_export(
    cls_name: str,
    ctor_args: tuple[Any, ...],
    dynamo: bool,
    opset: int | None,
    image: int,
    batch: int,
    seed: int,
    dynamic_batch: bool,
) -> onnx.ModelProto:
    import torch

    module = seeded(seed, lambda: module_class(cls_name)(*ctor_args))
    x = seeded(seed + 1, lambda: torch.randn(batch, 3, image, image))
    return torch_export(module, (x,), dynamo=dynamo, opset=opset, dynamic_batch=dynamic_batch)


@_cached_export
def tiny_cnn_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    image: int = 16,
    *,
    num_classes: int = 10,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`TinyCNN`, input "x" [N,3,image,image] -> "y" [N,num_classes].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    return _image_export("TinyCNN", (num_classes,), dynamo, opset, image, batch, seed, dynamic_batch)


@_cached_export
def resnet18_like_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    image: int = 224,
    *,
    num_classes: int = 10,
    width: int = 64,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`ResNet18Like`, input "x" [N,3,image,image] -> "y" [N,num_classes].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    return _image_export("ResNet18Like", (num_classes, width), dynamo, opset, image, batch, seed, dynamic_batch)


@_cached_export
def mobilenetv2_like_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    image: int = 224,
    *,
    num_classes: int = 10,
    width_mult: float = 1.0,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`MobileNetV2Like`, input "x" [N,3,image,image] -> "y" [N,num_classes].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    return _image_export("MobileNetV2Like", (num_classes, width_mult), dynamo, opset, image, batch, seed, dynamic_batch)


@_cached_export
def bert_like_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    *,
    vocab: int = 1000,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    intermediate: int = 1024,
    seq: int = 128,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`BertLikeEncoder`, input "input_ids" int64 [N,seq] -> "hidden" [N,seq,hidden].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    import torch

    module = seeded(seed, lambda: module_class("BertLikeEncoder")(vocab, hidden, layers, heads, intermediate, seq))
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen, dtype=torch.int64)
    return torch_export(
        module,
        (ids,),
        dynamo=dynamo,
        opset=opset,
        input_names=["input_ids"],
        output_names=["hidden"],
        dynamic_batch=dynamic_batch,
    )
