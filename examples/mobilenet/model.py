"""MobileNetV2-style network defined from scratch, a realistic ~3.5M-parameter mbuild example.

It mirrors the MobileNetV2 1.0 layout (inverted residuals, depthwise 3x3 convs,
ReLU6, BatchNorm) without a torchvision dependency, so mbuild can exercise
size, latency and quantization paths on a production-shaped mobile network.
"""

from torch import Tensor, nn

# (expansion t, output channels c, repeats n, first stride s) from the paper.
_CONFIG = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds channels to a multiple of 8 like the reference, for SIMD-friendly widths."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    """Builds Conv-BN(-ReLU6), the fusable unit every backend handles."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), with skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_skip = stride == 1 and cin == cout
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   _conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Adds the skip; `use_skip` is fixed at build time, so export stays static."""
        return x + self.block(x) if self.use_skip else self.block(x)


class MobileNetV2Small(nn.Module):
    """Maps images [N, 3, 224, 224] to class logits [N, num_classes]."""

    def __init__(self, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        cin = _make_divisible(32 * width)
        last = _make_divisible(1280 * max(1.0, width))
        layers = [_conv_bn(3, cin, 3, stride=2)]
        for t, c, n, s in _CONFIG:
            cout = _make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(last, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Returns logits for a batch of normalized RGB images."""
        return self.classifier(self.pool(self.features(x)))
