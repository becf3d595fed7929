"""The harness's models, written once and used by every paper.

Every builder takes the data set's ``input_shape`` (C, H, W) and ``num_classes`` so that a model runs on
any harness data set (the 8x8 digits as well as 32x32 CIFAR). Build one by name with :func:`build`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """A fully-connected ReLU network: flatten, then ``hidden`` layers, then the classifier."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int],
                 dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(input_shape).prod())
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's example (the variant Han et al. 2015 prune): conv 20@5x5, pool,
    conv 50@5x5, pool, fc 500, fc 10 (431K parameters on 28x28 input). ``width`` scales the three
    hidden widths (0.5: 10-25-250, about a third of the compute)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        c, h, w = input_shape
        c1, c2, f1 = (max(1, round(k * width)) for k in (20, 50, 500))
        pad = 2 if min(h, w) < 16 else 0  # 8x8 digits: pad so that both pools have something to pool
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 5, padding=pad), nn.MaxPool2d(2), nn.Conv2d(c1, c2, 5, padding=pad), nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).numel()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, f1), nn.ReLU(), nn.Linear(f1, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvNet(nn.Module):
    """A plain conv net in stages: each stage is ``per_stage`` 3x3 conv-BN-ReLU layers of ``chans[i]``
    channels, then a 2x2 max pool; global average pooling and a linear classifier. Thin (few
    channels) and deep (many layers per stage) it is a FitNet; with one layer per stage, the shallow
    student of the attention-transfer papers."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, chans: Sequence[int] = (8, 16, 32),
                 per_stage: int = 3) -> None:
        super().__init__()
        c = input_shape[0]
        layers: list[nn.Module] = []
        for out in chans:
            for _ in range(per_stage):
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                c = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def vgg_small(input_shape: Sequence[int], num_classes: int, width: float = 1.0) -> ConvNet:
    """A small VGG-style CIFAR network: three stages of two 3x3 conv-BN-ReLU layers and a max pool,
    then a linear classifier (a :class:`ConvNet` with two layers per stage). ``width`` scales the
    channels (64-128-256 at width 1)."""
    chans = [max(4, int(round(k * width))) for k in (64, 128, 256)]
    return ConvNet(input_shape, num_classes, chans=chans, per_stage=2)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers; n=3 is ResNet-20, 0.27M parameters), with 1x1
    projection shortcuts where the shape changes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 20, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


#: name -> builder(input_shape, num_classes, **kwargs). Paper names as the literature uses them.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet-300-100": lambda shape, k, **kw: MLP(shape, k, (300, 100), **kw),
    "lenet-5": LeNet5,
    "hinton-teacher": lambda shape, k, **kw: MLP(shape, k, (1200, 1200), **kw),  # 784-1200-1200-10
    "hinton-student": lambda shape, k, **kw: MLP(shape, k, (800, 800), **kw),  # 784-800-800-10
    "mlp": MLP,
    "vgg-small": vgg_small,
    "staged-conv": ConvNet,  # the thin / shallow students of the feature-based distillation papers
    "resnet-20": lambda shape, k, **kw: ResNetCifar(shape, k, depth=20, **kw),
    "resnet": ResNetCifar,
}


def build(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Build a harness model by name, e.g. ``build("lenet-5", (1, 28, 28), 10)``."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    return MODELS[name](tuple(input_shape), num_classes, **kwargs)
