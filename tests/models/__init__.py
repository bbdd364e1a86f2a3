"""Small, deterministic ONNX model builders for the onnxprune test-suite and benchmarks.

Two families of builders live here:

* Hand-built graphs (``onnx.helper``; no torch needed, :mod:`tests.models.handbuilt`):
  :func:`mlp_model`, :func:`conv_model`, :func:`shared_weight_model`,
  :func:`lstm_model`, :func:`gru_model`, :func:`if_loop_model`, :func:`qdq_model`,
  :func:`opset18_model` (all listed in :data:`HELPER_BUILDERS`): fully checked,
  runnable in onnxruntime, symbolic batch dim ``"N"``, byte-identical per seed.

* Models exported from plain torch modules: :class:`TinyCNN`,
  :class:`ResNet18Like`, :class:`MobileNetV2Like`, :class:`BertLikeEncoder`
  (real ``nn.Module`` subclasses from :mod:`tests.models.torch_modules`, created
  lazily through this package's ``__getattr__`` so that importing it does not
  import torch), the generic :func:`torch_export` helper
  (:mod:`tests.models.export`, whose docstring records what the TorchScript and
  dynamo exporters actually emit) and the cached convenience builders
  :func:`tiny_cnn_onnx`, :func:`resnet18_like_onnx`,
  :func:`mobilenetv2_like_onnx`, :func:`bert_like_onnx`
  (:mod:`tests.models.exported`).

:func:`random_inputs` (:mod:`tests.models.inputs`) builds feeds for any of these
from the graph input specs.

* The structured-pruning zoo (:mod:`tests.models.structured_zoo`): eleven small
  plain-torch architectures named in :data:`ARCHS` (ResNet basic/bottleneck,
  MobileNetV2 inverted residuals, EfficientNet SE blocks, VGG, DenseNet,
  Inception, UNet, ShuffleNet, a transformer MLP, an EfficientNet-B0-shaped net)
  with :func:`build_module`, :func:`example_input` and the cached exporter
  :func:`zoo_onnx` (torch imported lazily).

* The exporter zoo (:mod:`tests.models.vision_zoo`): torchvision-faithful ResNet-18, MobileNetV2 and
  EfficientNet-B0 (small and full size, fresh or trained weights) exported by dynamo, TorchScript and
  TorchScript without constant folding -- bias-free Convs/Gemms, Identity-aliased zero biases, separate
  BatchNorm nodes -- via :func:`vision_onnx`; :mod:`tests.models.paddleocr` finds the PaddleOCR models
  of the ``rapidocr_onnxruntime`` wheel.

* The transformer zoo (:mod:`tests.models.transformer_zoo`): BERT, ViT, Llama (GQA, RoPE) and Llama
  with a KV cache, written like HF/timm, exported by TorchScript (opset 17) and dynamo with dynamic
  batch/sequence axes via :func:`transformer_onnx` (:data:`TRANSFORMERS`, :func:`transformer_inputs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.models.export import torch_export
from tests.models.exported import bert_like_onnx, mobilenetv2_like_onnx, resnet18_like_onnx, seeded, tiny_cnn_onnx
from tests.models.handbuilt import (
    HELPER_BUILDERS,
    conv_model,
    gru_model,
    if_loop_model,
    lstm_model,
    mlp_model,
    opset18_model,
    qdq_model,
    shared_weight_model,
)
from tests.models.inputs import random_inputs
from tests.models.structured_zoo import ARCHS, build_module, example_input, zoo_onnx
from tests.models.torch_modules import CLASS_NAMES as _LAZY_CLASSES
from tests.models.torch_modules import module_class as _module_class
from tests.models.transformer_zoo import TRANSFORMERS, build_transformer, transformer_inputs, transformer_onnx

__all__ = [
    "ARCHS",
    "HELPER_BUILDERS",
    "BertLikeEncoder",
    "MobileNetV2Like",
    "ResNet18Like",
    "TRANSFORMERS",
    "TinyCNN",
    "bert_like_onnx",
    "build_module",
    "build_transformer",
    "conv_model",
    "example_input",
    "gru_model",
    "if_loop_model",
    "lstm_model",
    "mlp_model",
    "mobilenetv2_like_onnx",
    "opset18_model",
    "qdq_model",
    "random_inputs",
    "resnet18_like_onnx",
    "seeded",
    "shared_weight_model",
    "tiny_cnn_onnx",
    "torch_export",
    "transformer_inputs",
    "transformer_onnx",
    "zoo_onnx",
]

if TYPE_CHECKING:  # real nn.Module subclasses, built lazily by the module __getattr__ below
    TinyCNN: type
    ResNet18Like: type
    MobileNetV2Like: type
    BertLikeEncoder: type


def __getattr__(name: str) -> type:
    """PEP 562 hook: ``from tests.models import ResNet18Like`` builds the class lazily,
    so importing this package does not import torch."""
    if name in _LAZY_CLASSES:
        return _module_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
