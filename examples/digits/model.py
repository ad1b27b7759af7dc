"""Small CNN for 8x8 sklearn digits, the real trained example model for mbuild.

It is large enough (~236k parameters) to make quantization and size reports
meaningful, yet trains in seconds on a CPU, and uses only plain mobile-friendly
ops (3x3 Conv2d, BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear, Dropout) with
no data-dependent control flow, so every exporter and backend can handle it.
"""

from torch import Tensor, nn


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """Builds the conv block so every layer uses the same fusable pattern."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DigitsCNN(nn.Module):
    """Maps `image` [N, 1, 8, 8] in [0, 1] to digit logits [N, 10]."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 32),
            _conv_bn_relu(32, 32),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            _conv_bn_relu(32, 64),
            _conv_bn_relu(64, 128),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 2 * 2, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, image: Tensor) -> Tensor:
        """Returns logits; kept branch-free so tracing and export are exact."""
        return self.classifier(self.features(image))
