"""MTCNN's proposal network (PNet) from facenet-pytorch 2.6.0, with its two heads joined into ONE output.

The layers are PNet's as facenet-pytorch defines them (MIT licence, Tim Esler), so the package's own
``facenet_pytorch/data/pnet.pt`` state dict loads unchanged. The joining is ours, not the package's:
PNet returns box offsets ``[1, 4, h, w]`` and face probabilities ``[1, 2, h, w]`` separately; here the
offsets are turned into pixel boxes the way MTCNN does (each output cell is a 12x12 window at stride 2,
offsets are in window units) and concatenated with the face probability into one ``[1, 5, h*w]``
tensor, YOLO-style: 4 box coordinates in pixels (x1, y1, x2, y2), then 1 class score in 0..1. That is
the layout whose small-range score part a per-tensor int8 output scale destroys.
"""
import torch
from torch import nn

STRIDE, WINDOW = 2, 12


class PNet(nn.Module):
    """12x12 sliding-window face classifier and box regressor (fully convolutional)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def heads(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class PNetDetections(PNet):
    """PNet with one YOLO-style output: ``[1, 5, h*w]`` = pixel box (x1, y1, x2, y2) + face probability."""

    def forward(self, x):
        offsets, probs = self.heads(x)
        n, _, h, w = offsets.shape
        xs = (torch.arange(w, dtype=x.dtype) * STRIDE).view(1, w).expand(h, w)
        ys = (torch.arange(h, dtype=x.dtype) * STRIDE).view(h, 1).expand(h, w)
        origin = torch.stack([xs, ys, xs + WINDOW, ys + WINDOW]).unsqueeze(0)  # [1, 4, h, w]
        boxes = origin + offsets * WINDOW
        face = probs[:, 1:2]
        return torch.cat([boxes.reshape(n, 4, h * w), face.reshape(n, 1, h * w)], dim=1)
