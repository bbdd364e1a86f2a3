"""A zoo of small plain-torch architectures (no torchvision) for structured-pruning tests.

:data:`ARCHS` names eleven architectures covering the structural patterns a
channel pruner has to follow through an exported graph: residual adds
(``resnet_basic``, ``resnet_bottleneck``, ``mobilenetv2_ir``), depthwise and
grouped convs (``mobilenetv2_ir``, ``shufflenet``, ``efficientnet_*``),
Squeeze-Excitation gating (``efficientnet_se``, ``efficientnet_b0_like``),
flatten of a spatial map into a Linear (``vgg``), channel concatenation
(``densenet``, ``inception``, ``unet``), upsampling (``unet``), channel shuffle
(``shufflenet``) and a transformer MLP (``transformer_mlp``).  torch is imported
only inside functions, so importing this module does not import torch.

* :func:`build_module` -- the eval-mode ``nn.Module`` (deterministic per seed;
  BatchNorm/LayerNorm get trained-looking stats via
  :func:`tests.models.torch_modules._randomize_norms`; biases are non-zero).
* :func:`example_input` -- a matching random input ([N,3,H,W], or [N,16,32]
  for ``transformer_mlp``).
* :func:`zoo_onnx` -- the exported model (input ``"x"``, output ``"y"``,
  dynamic batch ``"N"``), cached per process.
* :mod:`tests.models.tied` -- a module that reproduces exporter tying of equal tensors.

What the exporters emit (measured with torch 2.13 / onnxscript 0.7.2 / onnx 1.23;
TorchScript at opset 13, dynamo at its default opset 20).  Every architecture
exports with both and matches torch in onnxruntime to < 1e-6 (batch 2 and 3).
Export times on a 2-core CPU: TorchScript 0.01-0.06 s, dynamo 0.75-1.4 s (about 5 s for
``efficientnet_b0_like`` at 224 px; the first dynamo export of a process adds ~2 s).

* Conv+BN pairs are folded into Conv by both exporters; pre-activation BN
  (``densenet``: BN -> ReLU -> Conv) stays a ``BatchNormalization`` node.
* ``torch.flatten(x, 1)``: TorchScript -> ``Flatten(axis=1)``; dynamo ->
  ``Reshape(x, [-1, C*H*W])`` with a constant shape initializer and
  ``allowzero=1`` (``vgg``; likewise after global pooling, where TorchScript
  emits ``GlobalAveragePool`` and dynamo ``ReduceMean(axes input)``).
* Channel shuffle (``shufflenet``): written with ``int()`` sizes and ``-1`` for
  the batch so both exporters give ``Reshape -> Transpose(perm=[0,2,1,3,4]) ->
  Reshape`` with constant shapes (TorchScript: ``Constant`` nodes
  ``[-1, g, c/g, h, w]``; dynamo: initializers, ``allowzero=1``).  Using the
  traced ``x.shape`` directly instead makes TorchScript emit
  Shape/Gather/Div/Unsqueeze/Concat chains (dynamo still folds them).
* ``nn.Upsample(scale_factor=2, mode="nearest")`` (``unet``): ``Resize`` with
  a constant *scales* input ``[1, 1, 2, 2]`` in both exporters (TorchScript:
  ``Constant`` node, ``coordinate_transformation_mode="asymmetric"``,
  ``nearest_mode="floor"``; dynamo: initializer, empty roi).
* ``nn.SiLU``: ``Sigmoid`` + ``Mul`` with both exporters (no Swish/HardSwish
  op); SE gating is ``GlobalAveragePool``/``ReduceMean`` -> Conv -> Sigmoid+Mul
  -> Conv -> ``Sigmoid`` -> ``Mul``.
* ``nn.ReLU6`` -> ``Clip`` (TorchScript: two ``Constant`` scalar inputs per
  Clip; dynamo: shared initializers); ``nn.GELU`` -> ``Erf`` formula
  (TorchScript@13) / ``Gelu`` (dynamo@20); ``nn.LayerNorm`` -> decomposed
  ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add (TorchScript@13) /
  ``LayerNormalization`` (dynamo); Linear on [N,T,D] -> ``MatMul`` with a
  pre-transposed initializer + ``Add`` (both), on [N,D] -> ``Gemm``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx

from tests.models.export import torch_export
from tests.models.exported import _cached_export, seeded
from tests.models.torch_modules import _make_divisible, _randomize_norms

__all__ = ["ARCHS", "build_module", "example_input", "zoo_onnx"]

#: sequence length / model dim of the ``transformer_mlp`` input [N, T, D]
TRANSFORMER_T, TRANSFORMER_D = 16, 32


def _conv_bn(nn: Any, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: Any = None) -> Any:
    """Conv(bias=False) + BatchNorm2d (+ activation module class *act*)."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def _build_resnet_basic(torch: Any, nn: Any) -> type:
    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNetBasic(nn.Module):
        """Stem conv+BN+ReLU (16), BasicBlock(16->16), BasicBlock(16->32, s2, 1x1 downsample), avgpool, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            self.stem = _conv_bn(nn, 3, 16, 3, act=nn.ReLU)
            self.layer1 = BasicBlock(16, 16)
            self.layer2 = BasicBlock(16, 32, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.layer2(self.layer1(self.stem(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNetBasic


def _build_resnet_bottleneck(torch: Any, nn: Any) -> type:
    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            cout = planes * self.expansion
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)  # reduce
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)  # expand x4
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNetBottleneck(nn.Module):
        """Stem (16), Bottleneck(16, 8 -> 32, s1, downsample), Bottleneck(32, 8) identity,
        Bottleneck(32, 16 -> 64, s2, downsample), avgpool, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            self.stem = _conv_bn(nn, 3, 16, 3, act=nn.ReLU)
            self.layer1 = nn.Sequential(Bottleneck(16, 8), Bottleneck(32, 8))
            self.layer2 = Bottleneck(32, 16, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.layer2(self.layer1(self.stem(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNetBottleneck


def _build_mobilenetv2_ir(torch: Any, nn: Any) -> type:
    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            self.conv = nn.Sequential(
                _conv_bn(nn, cin, hidden, 1, act=nn.ReLU6),  # expand
                _conv_bn(nn, hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),  # depthwise
                _conv_bn(nn, hidden, cout, 1),  # linear projection
            )

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2IR(nn.Module):
        """Stem (16, ReLU6), IR(16->16, t4, residual), IR(16->24, t4, s2), IR(24->24, t2, residual),
        1x1 head (64, ReLU6), avgpool, dropout, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            self.features = nn.Sequential(
                _conv_bn(nn, 3, 16, 3, act=nn.ReLU6),
                InvertedResidual(16, 16, 1, 4),
                InvertedResidual(16, 24, 2, 4),
                InvertedResidual(24, 24, 1, 2),
                _conv_bn(nn, 24, 64, 1, act=nn.ReLU6),
            )
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

        def forward(self, x: Any) -> Any:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2IR


def _mbconv_classes(torch: Any, nn: Any) -> tuple[type, type]:
    """(SqueezeExcitation, MBConv) classes shared by the EfficientNet-style archs."""

    class SqueezeExcitation(nn.Module):
        def __init__(self, channels: int, squeeze: int) -> None:
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(channels, squeeze, 1)  # reduce
            self.act = nn.SiLU()
            self.fc2 = nn.Conv2d(squeeze, channels, 1)  # expand
            self.gate = nn.Sigmoid()

        def forward(self, x: Any) -> Any:
            scale = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
            return x * scale

    class MBConv(nn.Module):
        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, squeeze: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            layers = []
            if expand != 1:
                layers.append(_conv_bn(nn, cin, hidden, 1, act=nn.SiLU))
            layers += [
                _conv_bn(nn, hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),  # depthwise
                SqueezeExcitation(hidden, squeeze),
                _conv_bn(nn, hidden, cout, 1),  # linear projection
            ]
            self.block = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.block(x) if self.use_res else self.block(x)

    return SqueezeExcitation, MBConv


def _build_efficientnet_se(torch: Any, nn: Any) -> type:
    _, MBConv = _mbconv_classes(torch, nn)

    class EfficientNetSE(nn.Module):
        """Stem (16, s2, SiLU), MBConv(16->16, t4, k3, SE 8, residual), MBConv(16->24, t4, k5, s2, SE 8),
        MBConv(24->24, t2, k3, SE 8, residual), 1x1 head (64, SiLU), avgpool, dropout, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            self.features = nn.Sequential(
                _conv_bn(nn, 3, 16, 3, 2, act=nn.SiLU),
                MBConv(16, 16, 3, 1, 4, 8),
                MBConv(16, 24, 5, 2, 4, 8),
                MBConv(24, 24, 3, 1, 2, 8),
                _conv_bn(nn, 24, 64, 1, act=nn.SiLU),
            )
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

        def forward(self, x: Any) -> Any:
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return EfficientNetSE


def _build_vgg(torch: Any, nn: Any) -> type:
    class VGG(nn.Module):
        """[conv-BN-ReLU x2 (16), maxpool, conv-BN-ReLU x2 (32), maxpool], flatten of the
        [N,32,H/4,W/4] map, fc(32*(H/4)^2 -> 64), ReLU, dropout, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            if image % 4:
                raise ValueError(f"vgg needs an image size divisible by 4, got {image}")
            self.features = nn.Sequential(
                _conv_bn(nn, 3, 16, 3, act=nn.ReLU),
                _conv_bn(nn, 16, 16, 3, act=nn.ReLU),
                nn.MaxPool2d(2),
                _conv_bn(nn, 16, 32, 3, act=nn.ReLU),
                _conv_bn(nn, 32, 32, 3, act=nn.ReLU),
                nn.MaxPool2d(2),
            )
            side = image // 4
            self.classifier = nn.Sequential(
                nn.Linear(32 * side * side, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, num_classes)
            )

        def forward(self, x: Any) -> Any:
            return self.classifier(torch.flatten(self.features(x), 1))

    return VGG


def _build_densenet(torch: Any, nn: Any) -> type:
    class DenseLayer(nn.Module):
        def __init__(self, cin: int, growth: int, bn_size: int = 4) -> None:
            super().__init__()
            self.layer = nn.Sequential(
                nn.BatchNorm2d(cin),
                nn.ReLU(),
                nn.Conv2d(cin, bn_size * growth, 1, bias=False),
                nn.BatchNorm2d(bn_size * growth),
                nn.ReLU(),
                nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False),
            )

        def forward(self, x: Any) -> Any:
            return torch.cat([x, self.layer(x)], 1)

    class DenseNet(nn.Module):
        """Stem conv (16), dense block of 3 layers (growth 8: 16->24->32->40 via torch.cat),
        transition BN-ReLU-1x1 conv(40->24)-avgpool2, BN-ReLU, avgpool, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.block = nn.Sequential(DenseLayer(16, 8), DenseLayer(24, 8), DenseLayer(32, 8))
            self.transition = nn.Sequential(
                nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 24, 1, bias=False), nn.AvgPool2d(2)
            )
            self.norm = nn.Sequential(nn.BatchNorm2d(24), nn.ReLU())
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(24, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.norm(self.transition(self.block(self.stem(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return DenseNet


def _build_inception(torch: Any, nn: Any) -> type:
    class InceptionBlock(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.branch1 = _conv_bn(nn, cin, 8, 1, act=nn.ReLU)
            self.branch3 = nn.Sequential(_conv_bn(nn, cin, 8, 1, act=nn.ReLU), _conv_bn(nn, 8, 16, 3, act=nn.ReLU))
            self.branch5 = nn.Sequential(_conv_bn(nn, cin, 8, 1, act=nn.ReLU), _conv_bn(nn, 8, 8, 5, act=nn.ReLU))
            self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv_bn(nn, cin, 8, 1, act=nn.ReLU))

        def forward(self, x: Any) -> Any:
            return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)

    class Inception(nn.Module):
        """Stem (16), Inception block [1x1 (8); 1x1 (8) -> 3x3 (16); 1x1 (8) -> 5x5 (8);
        maxpool3 -> 1x1 (8)] concatenated to 40, conv3x3 s2 (32), avgpool, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            self.stem = _conv_bn(nn, 3, 16, 3, act=nn.ReLU)
            self.mixed = InceptionBlock(16)
            self.conv = _conv_bn(nn, 40, 32, 3, 2, act=nn.ReLU)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.conv(self.mixed(self.stem(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Inception


def _build_unet(torch: Any, nn: Any) -> type:
    def double_conv(cin: int, cout: int) -> Any:
        return nn.Sequential(_conv_bn(nn, cin, cout, 3, act=nn.ReLU), _conv_bn(nn, cout, cout, 3, act=nn.ReLU))

    class UNet(nn.Module):
        """Encoder double-convs 3->8 (H), 8->16 (H/2) with maxpool, bottleneck 16->32 (H/4);
        decoder: Upsample x2 (nearest) + torch.cat skip -> double conv (48->16, 24->8);
        1x1 conv (8->num_classes) -> per-pixel output [N,num_classes,H,W]."""

        def __init__(self, image: int, num_classes: int = 2) -> None:
            super().__init__()
            if image % 4:
                raise ValueError(f"unet needs an image size divisible by 4, got {image}")
            self.enc1 = double_conv(3, 8)
            self.enc2 = double_conv(8, 16)
            self.pool = nn.MaxPool2d(2)
            self.bottleneck = double_conv(16, 32)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.dec2 = double_conv(32 + 16, 16)
            self.dec1 = double_conv(16 + 8, 8)
            self.head = nn.Conv2d(8, num_classes, 1)

        def forward(self, x: Any) -> Any:
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            b = self.bottleneck(self.pool(e2))
            d2 = self.dec2(torch.cat([self.up(b), e2], 1))
            d1 = self.dec1(torch.cat([self.up(d2), e1], 1))
            return self.head(d1)

    return UNet


def _build_shufflenet(torch: Any, nn: Any) -> type:
    def channel_shuffle(x: Any, groups: int) -> Any:
        # int() sizes + -1 batch: constant Reshape shapes in both exporters (dims 1..3 are static)
        c, h, w = (int(v) for v in x.shape[1:])
        x = x.view(-1, groups, c // groups, h, w).transpose(1, 2).contiguous()
        return x.view(-1, c, h, w)

    class ShuffleUnit(nn.Module):
        """ShuffleNet-v1 unit: grouped 1x1 -> BN-ReLU -> shuffle -> depthwise 3x3 -> BN -> grouped 1x1 -> BN;
        stride 1: add + ReLU; stride 2: concat with avgpool3/2 of the input, ReLU."""

        def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
            super().__init__()
            self.stride, self.groups = stride, groups
            mid = cout // 4
            branch_out = cout - cin if stride == 2 else cout
            self.gconv1 = _conv_bn(nn, cin, mid, 1, groups=groups, act=nn.ReLU)
            self.dwconv = _conv_bn(nn, mid, mid, 3, stride, groups=mid)
            self.gconv2 = _conv_bn(nn, mid, branch_out, 1, groups=groups)
            self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            out = channel_shuffle(self.gconv1(x), self.groups)
            out = self.gconv2(self.dwconv(out))
            if self.shortcut is None:
                return self.relu(x + out)
            return self.relu(torch.cat([self.shortcut(x), out], 1))

    class ShuffleNet(nn.Module):
        """Stem (24), ShuffleUnit(24->48, s2, g2), ShuffleUnit(48->48, s1, g2, residual),
        avgpool, fc."""

        def __init__(self, image: int, num_classes: int = 10) -> None:
            super().__init__()
            self.stem = _conv_bn(nn, 3, 24, 3, act=nn.ReLU)
            self.stage = nn.Sequential(ShuffleUnit(24, 48, 2, 2), ShuffleUnit(48, 48, 1, 2))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(48, num_classes)

        def forward(self, x: Any) -> Any:
            return self.fc(torch.flatten(self.avgpool(self.stage(self.stem(x))), 1))

    return ShuffleNet


def _build_transformer_mlp(torch: Any, nn: Any) -> type:
    class TransformerMLP(nn.Module):
        """Pre-LN MLP block on [N,T,D]: x + fc2(GELU(fc1(LN(x)))) (hidden 4D), final LN,
        mean over T, Linear head -> [N,num_classes]."""

        def __init__(self, image: int, num_classes: int = 10, dim: int = TRANSFORMER_D) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, 4 * dim)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(4 * dim, dim)
            self.ln_f = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, x: Any) -> Any:
            x = x + self.fc2(self.act(self.fc1(self.ln1(x))))
            return self.head(self.ln_f(x).mean(dim=1))

    return TransformerMLP


def _build_efficientnet_b0_like(torch: Any, nn: Any) -> type:
    _, MBConv = _mbconv_classes(torch, nn)

    class EfficientNetB0Like(nn.Module):
        """EfficientNet-B0 layout: stem 32 (s2), the standard 7 MBConv stages (expand 1/6,
        kernels 3/5, SE with squeeze = block input // 4, SiLU), 1x1 head (4 x last = 1280),
        avgpool, dropout, fc.  Channels are scaled by *width* (multiples of 8)."""

        # expand, kernel, stride, channels, layers
        SETTINGS = [
            (1, 3, 1, 16, 1),
            (6, 3, 2, 24, 2),
            (6, 5, 2, 40, 2),
            (6, 3, 2, 80, 3),
            (6, 5, 1, 112, 3),
            (6, 5, 2, 192, 4),
            (6, 3, 1, 320, 1),
        ]

        def __init__(self, image: int, num_classes: int = 10, width: float = 1.0) -> None:
            super().__init__()
            cin = _make_divisible(32 * width)
            features = [_conv_bn(nn, 3, cin, 3, 2, act=nn.SiLU)]
            for expand, kernel, stride, channels, layers in self.SETTINGS:
                cout = _make_divisible(channels * width)
                for i in range(layers):
                    features.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand, max(1, cin // 4)))
                    cin = cout
            head = 4 * cin
            features.append(_conv_bn(nn, cin, head, 1, act=nn.SiLU))
            self.features = nn.Sequential(*features)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(head, num_classes))

        def forward(self, x: Any) -> Any:
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return EfficientNetB0Like


# name -> (class factory, default image size); order defines ARCHS
_SPECS: dict[str, tuple[Callable[[Any, Any], type], int]] = {
    "resnet_basic": (_build_resnet_basic, 32),
    "resnet_bottleneck": (_build_resnet_bottleneck, 32),
    "mobilenetv2_ir": (_build_mobilenetv2_ir, 32),
    "efficientnet_se": (_build_efficientnet_se, 32),
    "vgg": (_build_vgg, 32),
    "densenet": (_build_densenet, 32),
    "inception": (_build_inception, 32),
    "unet": (_build_unet, 32),
    "shufflenet": (_build_shufflenet, 32),
    "transformer_mlp": (_build_transformer_mlp, 0),
    "efficientnet_b0_like": (_build_efficientnet_b0_like, 224),
}

#: architecture names, in a fixed order
ARCHS: tuple[str, ...] = tuple(_SPECS)

_CLASS_CACHE: dict[str, type] = {}


def _arch_class(name: str) -> type:
    """The (cached) nn.Module subclass for architecture *name*; imports torch on first use."""
    if name not in _SPECS:
        raise KeyError(f"unknown architecture {name!r}; expected one of {ARCHS}")
    if name not in _CLASS_CACHE:
        import torch

        _CLASS_CACHE[name] = _SPECS[name][0](torch, torch.nn)
    return _CLASS_CACHE[name]


def _resolve_image(name: str, image: int | None) -> int:
    if name not in _SPECS:
        raise KeyError(f"unknown architecture {name!r}; expected one of {ARCHS}")
    if name == "transformer_mlp":
        return 0  # input is [N, T, D]; image is ignored
    return _SPECS[name][1] if image is None else int(image)


def _ctor_kwargs(name: str, width: float | None) -> dict[str, Any]:
    if width is None:
        return {}
    if name != "efficientnet_b0_like":
        raise ValueError(f"width is only supported for 'efficientnet_b0_like', not {name!r}")
    return {"width": float(width)}


def build_module(name: str, *, seed: int = 0, image: int | None = None, width: float | None = None) -> Any:
    """The eval-mode ``nn.Module`` for architecture *name* (one of :data:`ARCHS`).

    Deterministic per *seed* (built under :func:`tests.models.exported.seeded`);
    BatchNorm/LayerNorm stats and affine params are randomised to look trained.
    *image* (default 32; 224 for ``efficientnet_b0_like``) fixes sizes that
    depend on it (``vgg``'s first Linear) and is ignored by ``transformer_mlp``.
    *width* scales ``efficientnet_b0_like`` channels (e.g. 0.25 for a thin net).
    """
    cls = _arch_class(name)
    img = _resolve_image(name, image)
    kwargs = _ctor_kwargs(name, width)

    def make() -> Any:
        module = cls(img, **kwargs)
        _randomize_norms(module)
        return module.eval()

    return seeded(seed, make)


def example_input(name: str, *, batch: int = 2, image: int | None = None, seed: int = 1) -> Any:
    """A seeded random input for *name*: float [batch,3,image,image], or [batch,16,32] for ``transformer_mlp``."""
    import torch

    img = _resolve_image(name, image)
    shape = (batch, TRANSFORMER_T, TRANSFORMER_D) if name == "transformer_mlp" else (batch, 3, img, img)
    return seeded(seed, lambda: torch.randn(*shape))


@_cached_export
def _zoo_export(
    name: str, dynamo: bool, opset: int | None, image: int, seed: int, width: float | None
) -> onnx.ModelProto:
    module = build_module(name, seed=seed, image=image, width=width)
    x = example_input(name, batch=2, image=image, seed=seed + 1)
    return torch_export(module, (x,), dynamo=dynamo, opset=opset, dynamic_batch=True)


def zoo_onnx(
    name: str,
    *,
    dynamo: bool,
    opset: int | None = None,
    image: int | None = None,
    seed: int = 0,
    width: float | None = None,
) -> onnx.ModelProto:
    """Exported *name* (input ``"x"``, output ``"y"``, dynamic batch ``"N"``), cached per process.

    The module is ``build_module(name, seed=seed, image=image, width=width)``,
    exported with an ``example_input(..., batch=2, seed=seed + 1)``.
    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Every call returns an independent copy.
    """
    return _zoo_export(name, dynamo, opset, _resolve_image(name, image), seed, width)
