"""torchvision-faithful ResNet-18, MobileNetV2 and EfficientNet-B0, exported the ways real exports look.

The issue this zoo answers: structured pruning crashed on the most common exports (torch's default
dynamo exporter on torchvision/timm models), because those graphs hold 2-input Convs and Gemms that
the hand-picked test models never had.  Each model here is the torchvision architecture in plain torch
(:class:`~tests.models.torch_modules` ``ResNet18Like``/``MobileNetV2Like`` and the structured zoo's
``EfficientNetB0Like``: bias-free convs + BatchNorm, BasicBlock with a 1x1 conv+BN downsample,
inverted residuals with depthwise convs and ReLU6, MBConv with depthwise + squeeze-excitation
(SiLU, Sigmoid, Mul), stochastic depth off in eval), in two sizes and two weight states, exported
three ways.

Sizes (:data:`SIZES`): ``small`` (a quarter/eighth of the channels, 32x32 input, 10 classes; every
block is still there) for the tests, ``full`` (torchvision's widths, 224x224, 1000 classes) for the
benchmark.  A dynamo export takes 5-20 s (tracing cost grows with the number of modules, not the width).

Weights (:data:`NORMS`): ``fresh`` is torchvision's own initialization (what ``weights=None`` gives,
and what a timm model without a checkpoint gives): BatchNorm gamma 1, beta 0, running mean 0 and
variance 1, conv biases (SE) zero, MobileNetV2/EfficientNet classifier bias zero.  ``trained`` gives
BatchNorm trained-looking statistics and keeps non-zero biases.

Exporters (:data:`EXPORTERS`), measured with torch 2.13 / onnxscript 0.7.2:

* ``dynamo`` (``torch.onnx.export(..., dynamo=True)``, the default exporter; opset 20): folds every
  Conv+BN pair into the Conv and **drops all-zero initializers**: with ``fresh`` weights every
  folded bias is exactly zero, so every Conv has 2 inputs (no bias), the SE convs lose their zero
  biases and a zero classifier bias gives a 2-input Gemm.  With ``trained`` weights every Conv has a
  bias.  Channels reach the classifier through ``ReduceMean`` + ``Reshape``.
* ``torchscript`` (``dynamo=False``, opset 13): folds Conv+BN as well but keeps zero biases; equal
  (e.g. all-zero) biases are de-duplicated into ``Identity`` aliases of one initializer.
  ``GlobalAveragePool`` + ``Flatten``; ReLU6 is ``Clip`` with ``Constant``-node bounds.
* ``torchscript-bn`` (``dynamo=False, do_constant_folding=False``, opset 13): what an export without
  constant folding (or in training mode) looks like: bias-free Convs each followed by a separate
  ``BatchNormalization`` node, as in the PaddleOCR models (Paddle2ONNX).
"""

from __future__ import annotations

from typing import Any

import onnx

from tests.models.export import torch_export
from tests.models.exported import _cached_export, seeded
from tests.models.torch_modules import _randomize_norms, module_class

__all__ = ["EXPORTERS", "NORMS", "SIZES", "VISION", "vision_input", "vision_module", "vision_onnx"]

VISION = ("resnet18", "mobilenetv2", "efficientnet_b0")
EXPORTERS = ("dynamo", "torchscript", "torchscript-bn")
NORMS = ("fresh", "trained")
#: size -> (image side, ResNet-18 base width, MobileNetV2 width_mult, EfficientNet-B0 width, classes)
SIZES: dict[str, tuple[int, int, float, float, int]] = {
    "small": (32, 8, 0.25, 0.25, 10),
    "full": (224, 64, 1.0, 1.0, 1000),
}


def _torchvision_init(module: Any, zero_classifier_bias: bool) -> None:
    """torchvision's initialization of these architectures (in place)."""
    import torch

    nn = torch.nn
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
            elif isinstance(m, nn.Linear) and zero_classifier_bias:
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


def _build(name: str, size: str) -> Any:
    image, base, mult, width, classes = SIZES[size]
    if name == "resnet18":
        return module_class("ResNet18Like")(classes, base, False)
    if name == "mobilenetv2":
        return module_class("MobileNetV2Like")(classes, mult, False)
    from tests.models.structured_zoo import _arch_class

    return _arch_class("efficientnet_b0_like")(image, classes, width)


def vision_module(name: str, *, size: str = "small", norms: str = "fresh", seed: int = 0) -> Any:
    """The eval-mode module *name* (one of :data:`VISION`) at *size* with *norms* weights, per *seed*."""
    if name not in VISION or size not in SIZES or norms not in NORMS:
        raise KeyError(f"unknown vision model {name!r}/{size!r}/{norms!r}: expected {VISION}, {tuple(SIZES)}, {NORMS}")

    def make() -> Any:
        module = _build(name, size)
        _torchvision_init(module, zero_classifier_bias=name != "resnet18")
        if norms == "trained":
            _randomize_norms(module)
            _nonzero_biases(module)
        return module.eval()

    return seeded(seed, make)


def _nonzero_biases(module: Any) -> None:
    import torch

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.normal_(0.0, 0.1)


def vision_input(name: str, *, size: str = "small", batch: int = 2, seed: int = 1) -> Any:
    """A seeded random image batch [batch, 3, side, side] for *name* at *size*."""
    import torch

    del name
    side = SIZES[size][0]
    return seeded(seed, lambda: torch.randn(batch, 3, side, side))


@_cached_export
def _vision_export(name: str, exporter: str, size: str, norms: str, seed: int) -> onnx.ModelProto:
    module = vision_module(name, size=size, norms=norms, seed=seed)
    x = vision_input(name, size=size, batch=2, seed=seed + 1)
    return torch_export(
        module, (x,), dynamo=exporter == "dynamo", dynamic_batch=True, constant_folding=exporter != "torchscript-bn"
    )


def vision_onnx(
    name: str, *, exporter: str, size: str = "small", norms: str = "fresh", seed: int = 0
) -> onnx.ModelProto:
    """*name* exported by *exporter* (one of :data:`EXPORTERS`; input ``"x"``, output ``"y"``, batch ``"N"``).

    Cached per process; every call returns an independent copy.
    """
    if exporter not in EXPORTERS:
        raise KeyError(f"unknown exporter {exporter!r}; expected one of {EXPORTERS}")
    return _vision_export(name, exporter, size, norms, seed)
