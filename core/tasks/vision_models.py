"""Image models: an MLP on flattened pixels, a small CNN, and ResNet-18 for 32×32 inputs.

ResNet-18 here is the usual CIFAR variant (ResNet-18's widths with the small-image stem
He et al. 2016 use on CIFAR, as in the pytorch-cifar code): one 3×3 stride-1 convolution
and no max-pool, so the
first stage works on 32×32 maps and the last on 4×4, and the head has one output per class
(10). It has BatchNorm after every convolution.

The Feasible Learning paper's code (``ResNet18CIFAR`` in its ``src/models/resnet.py``) builds
torchvision's ImageNet ResNet-18, swaps in the same 3×3 stride-1 stem, but keeps the 3×3
stride-2 max-pool (a 32×32 image is 16×16 in the first stage and 2×2 in the last) and, because
it re-creates the network after replacing the head, ends with torchvision's 1000-way head, of
which only the first ten logits carry labels. We do not copy that quirk: the max-pool
halves the resolution of an already small image, and 990 unused logits inside the softmax
change every per-sample loss. Numbers from the two models are not comparable; compare
methods within one model only.

BatchNorm makes a sample's training-mode output depend on the rest of its batch; the
per-sample losses the evaluation reports are computed in eval mode (running statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from dualtune.core.tasks.models import mlp


def image_mlp(shape: Sequence[int], hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """Flatten a (C, H, W) image, then ReLU layers of the ``hidden`` widths."""
    features = 1
    for size in shape:
        features *= size
    return nn.Sequential(nn.Flatten(), *mlp(features, list(hidden), num_classes))


def small_cnn(channels: int, size: int, num_classes: int) -> nn.Sequential:
    """Two conv(3×3, pad 1) + ReLU + max-pool(2) blocks (32 and 64 channels), then a
    128-unit ReLU layer and the class logits; ``size`` (the image side) must be divisible
    by 4."""
    if size % 4:
        raise ValueError(f"small_cnn needs an image side divisible by 4, got {size}")
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (size // 4) ** 2, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class BasicBlock(nn.Module):
    """Two 3×3 conv + BatchNorm layers with an identity (or 1×1 conv) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32×32 images: 3×3 stride-1 stem, no max-pool, stages of 64, 128, 256
    and 512 channels (two basic blocks each), global average pool, ``num_classes`` logits."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            )
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.stages(F.relu(self.bn1(self.conv1(x))))
        logits: Tensor = self.fc(F.adaptive_avg_pool2d(features, 1).flatten(1))
        return logits
