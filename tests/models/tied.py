"""A module whose exports tie equal tensors, for the de-tying tests of structured pruning.

Four ``Conv2d(., 8)`` layers in different branches/stages with equal biases.  TorchScript@13 keeps one bias
initializer (``stem.bias``) and re-creates the other three as
``Identity(stem.bias)`` nodes whose outputs carry the duplicates' names
(``branch_a.bias`` ...): 3 Identity nodes, each Conv reads a distinct name.
Dynamo@20 emits no Identity: with all-zero biases (the default) it drops the
bias input altogether (four 2-input Convs, no bias initializer, like the
all-zero Linear bias -> 2-input Gemm); with a non-zero shared value
(``bias=0.1``) all four Convs read the one initializer ``stem.bias``.
"""

from __future__ import annotations

from typing import Any

from tests.models.exported import seeded

__all__ = ["tied_zero_bias_module"]


def tied_zero_bias_module(bias: float = 0.0) -> Any:
    """Four unrelated ``Conv2d(., 8)`` layers (stem, two parallel branches, a stride-2 stage)
    whose biases all equal *bias* (default all zero), then ReLU, avgpool and a
    Linear(8 -> 10) with a random non-zero bias.

    Input [N,3,16,16].  The TorchScript exporter keeps one bias initializer and adds
    ``Identity`` aliases for the other three; dynamo drops all-zero Conv biases
    (2-input Convs) and, for a non-zero *bias*, makes all four Convs read one
    initializer (see the module docstring).  Deterministic, eval mode.
    """
    import torch

    nn = torch.nn

    class TiedZeroBias(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.branch_a = nn.Conv2d(8, 8, 3, padding=1)
            self.branch_b = nn.Conv2d(8, 8, 1)
            self.stage2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.fc = nn.Linear(8, 10)
            with torch.no_grad():
                for conv in (self.stem, self.branch_a, self.branch_b, self.stage2):
                    conv.bias.fill_(bias)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.stem(x))
            x = torch.relu(self.branch_a(x)) + torch.relu(self.branch_b(x))
            x = torch.relu(self.stage2(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return seeded(0, TiedZeroBias).eval()
