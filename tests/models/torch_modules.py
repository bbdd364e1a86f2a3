"""Plain torch ``nn.Module`` classes for the exported test models.

The classes are built on first use by :func:`module_class` (which imports torch), so
importing this module does not import torch; ``tests.models`` exposes them lazily as
``TinyCNN``, ``ResNet18Like``, ``MobileNetV2Like`` and ``BertLikeEncoder``.  All are
constructed in eval mode and, with ``random_norm_stats=True`` (the default), get
trained-looking BatchNorm/LayerNorm statistics and affine parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["CLASS_NAMES", "module_class"]


def _torch_nn() -> Any:
    import torch.nn as nn

    return nn


def _randomize_norms(module: Any) -> None:
    """Give BatchNorm/LayerNorm 'trained-looking' non-trivial stats/affine params (in place)."""
    import torch

    nn = _torch_nn()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.05)
                m.bias.normal_(0.0, 0.05)


def _build_tiny_cnn(torch: Any, nn: Any) -> type:
    class TinyCNN(nn.Module):
        """Conv(3->8)+BN+ReLU, Conv(8->16,s2)+BN+ReLU, avgpool, Linear(16->32)+ReLU, Linear(32->classes).

        Input [N,3,H,W] (16x16 in the builders).  Constructed in eval mode.
        """

        def __init__(self, num_classes: int = 10, random_norm_stats: bool = True) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, bias=False),
                nn.BatchNorm2d(8),
                nn.ReLU(inplace=True),
                nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(16),
                nn.ReLU(inplace=True),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Linear(16, 32)
            self.fc2 = nn.Linear(32, num_classes)
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, x: Any) -> Any:
            x = torch.flatten(self.pool(self.features(x)), 1)
            return self.fc2(torch.relu(self.fc1(x)))

    return TinyCNN


def _build_resnet18(torch: Any, nn: Any) -> type:
    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18Like(nn.Module):
        """torchvision-style ResNet-18 ([2,2,2,2] BasicBlocks) with configurable base width.

        Stem conv7x7/2 + BN + ReLU + maxpool3x3/2; stages of width w,2w,4w,8w;
        1x1 conv+BN downsample; global avgpool; fc.  Constructed in eval mode.
        """

        def __init__(self, num_classes: int = 10, width: int = 64, random_norm_stats: bool = True) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            layers = []
            inplanes = width
            for i, blocks in enumerate([2, 2, 2, 2]):
                planes = width * 2**i
                stride = 1 if i == 0 else 2
                stage = [BasicBlock(inplanes, planes, stride)]
                stage += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
                layers.append(nn.Sequential(*stage))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18Like


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _build_mobilenetv2(torch: Any, nn: Any) -> type:
    def conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1) -> Any:
        return nn.Sequential(
            nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
            super().__init__()
            hidden = int(round(inp * expand_ratio))
            self.use_res_connect = stride == 1 and inp == oup
            layers = []
            if expand_ratio != 1:
                layers.append(conv_bn_relu6(inp, hidden, 1))
            layers += [
                conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),  # depthwise
                nn.Conv2d(hidden, oup, 1, bias=False),  # linear bottleneck
                nn.BatchNorm2d(oup),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2Like(nn.Module):
        """torchvision-style MobileNetV2 (standard t,c,n,s table, ReLU6, depthwise convs).

        Constructed in eval mode (Dropout inactive, BN uses running stats).
        """

        SETTINGS = [
            # t, c, n, s
            [1, 16, 1, 1],
            [6, 24, 2, 2],
            [6, 32, 3, 2],
            [6, 64, 4, 2],
            [6, 96, 3, 1],
            [6, 160, 3, 2],
            [6, 320, 1, 1],
        ]

        def __init__(self, num_classes: int = 10, width_mult: float = 1.0, random_norm_stats: bool = True) -> None:
            super().__init__()
            input_channel = _make_divisible(32 * width_mult)
            self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
            features = [conv_bn_relu6(3, input_channel, 3, stride=2)]
            for t, c, n, s in self.SETTINGS:
                output_channel = _make_divisible(c * width_mult)
                for i in range(n):
                    features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                    input_channel = output_channel
            features.append(conv_bn_relu6(input_channel, self.last_channel, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, x: Any) -> Any:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2Like


def _build_bert(torch: Any, nn: Any) -> type:
    import math

    class SelfAttention(nn.Module):
        def __init__(self, hidden: int, heads: int) -> None:
            super().__init__()
            self.heads, self.head_dim = heads, hidden // heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.out = nn.Linear(hidden, hidden)

        def _split(self, t: Any) -> Any:
            n, s, _ = t.shape
            return t.reshape(n, s, self.heads, self.head_dim).transpose(1, 2)

        def forward(self, x: Any) -> Any:
            n, s, h = x.shape
            q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
            return self.out(ctx.transpose(1, 2).reshape(n, s, h))

    class EncoderLayer(nn.Module):
        def __init__(self, hidden: int, heads: int, intermediate: int) -> None:
            super().__init__()
            self.attention = SelfAttention(hidden, heads)
            self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
            self.fc1 = nn.Linear(hidden, intermediate)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(intermediate, hidden)
            self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x: Any) -> Any:
            x = self.ln1(x + self.attention(x))
            return self.ln2(x + self.fc2(self.act(self.fc1(x))))

    class BertLikeEncoder(nn.Module):
        """BERT-style encoder: token+position embeddings, LayerNorm, N post-LN layers.

        Input int64 token ids [N, seq]; output hidden states [N, seq, hidden].
        Attention is written by hand (Linear q/k/v, matmul/softmax, output Linear).
        Constructed in eval mode.
        """

        def __init__(
            self,
            vocab: int = 1000,
            hidden: int = 256,
            layers: int = 4,
            heads: int = 4,
            intermediate: int = 1024,
            seq: int = 128,
            random_norm_stats: bool = True,
        ) -> None:
            super().__init__()
            self.seq = seq
            self.word_embeddings = nn.Embedding(vocab, hidden)
            self.position_embeddings = nn.Embedding(seq, hidden)
            self.emb_ln = nn.LayerNorm(hidden, eps=1e-12)
            self.layers = nn.ModuleList(EncoderLayer(hidden, heads, intermediate) for _ in range(layers))
            with torch.no_grad():
                self.word_embeddings.weight.normal_(0.0, 0.02)
                self.position_embeddings.weight.normal_(0.0, 0.02)
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, input_ids: Any) -> Any:
            # the whole table: input length must equal ``seq`` (keeps the graph free of
            # Shape/Slice ops and the sequence dim static in both exporters)
            pos = self.position_embeddings.weight
            x = self.emb_ln(self.word_embeddings(input_ids) + pos)
            for layer in self.layers:
                x = layer(x)
            return x

    return BertLikeEncoder


_FACTORIES: dict[str, Callable[[Any, Any], type]] = {
    "TinyCNN": _build_tiny_cnn,
    "ResNet18Like": _build_resnet18,
    "MobileNetV2Like": _build_mobilenetv2,
    "BertLikeEncoder": _build_bert,
}
_CLASS_CACHE: dict[str, type] = {}


def module_class(name: str) -> type:
    """The (cached) nn.Module subclass *name*; imports torch on first use."""
    if name not in _CLASS_CACHE:
        import torch

        _CLASS_CACHE[name] = _FACTORIES[name](torch, torch.nn)
    return _CLASS_CACHE[name]


#: names of the lazily built module classes
CLASS_NAMES = tuple(_FACTORIES)
