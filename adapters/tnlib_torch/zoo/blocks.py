"""The building blocks of the study's networks: conv + batch norm, the shortcuts, the residual blocks.

* :func:`conv_bn`: a bias-free conv (``padding = kernel_size // 2``) and its batch norm;
* :class:`ZeroPadShortcut` and :func:`shortcut_for`: "option A" (parameter-free) and "option B"
  (1x1 conv + batch norm) downsampling shortcuts of He et al. (2016), :data:`SHORTCUTS`;
* :class:`BasicBlock`, :class:`Bottleneck` and :func:`stage`: the residual blocks and a stage of them;
* :func:`head` and :func:`init_weights`: the classifier head and the Kaiming-normal initialization
  shared by every network of :mod:`tnlib_torch.zoo.models`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tnlib_torch._checks import check_count

__all__ = ["SHORTCUTS", "BasicBlock", "Block", "Bottleneck", "ZeroPadShortcut", "check_shortcut", "check_sizes",
           "conv_bn", "head", "init_weights", "shortcut_for", "stage"]

#: The downsampling shortcuts of a residual block: "option A" (``"zero_pad"``) and "option B" (``"projection"``).
SHORTCUTS: tuple[str, ...] = ("zero_pad", "projection")


# -- validation ------------------------------------------------------------------------------------------------------


def check_sizes(values: object, name: str, count: int | None = None) -> tuple[int, ...]:
    expected = f"a sequence of {count or 'one or more'} positive ints"
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be {expected}, got {values!r}")
    if not values or (count is not None and len(values) != count):
        raise ValueError(f"{name} must be {expected}, got {len(values)}: {tuple(values)!r}")
    return tuple(check_count(value, f"{name}[{i}]", 1) for i, value in enumerate(values))


def check_shortcut(shortcut: object) -> str:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {', '.join(map(repr, SHORTCUTS))}, got {shortcut!r}")
    return shortcut  # type: ignore[return-value]


# -- building blocks -------------------------------------------------------------------------------------------------


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan-in, ReLU gain) conv and linear weights, as akamaster's CIFAR ResNets."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")


def head(features: int, num_classes: int) -> OrderedDict[str, nn.Module]:
    """Global average pooling to 1x1, flattening and the linear classifier."""
    return OrderedDict(avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), linear=nn.Linear(features, num_classes))


def conv_bn(in_planes: int, out_planes: int, kernel_size: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free conv, ``padding = kernel_size // 2``, and the batch norm after it."""
    conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return conv, nn.BatchNorm2d(out_planes)


class ZeroPadShortcut(nn.Module):
    """The parameter-free "option A" shortcut of He et al. (2016): subsample, then zero-pad the channels.

    ``x[:, :, ::stride, ::stride]`` with ``(out_planes - in_planes) // 2`` zero
    channels in front and the rest behind; for the CIFAR ResNets (``out_planes =
    2 in_planes = planes``) that is ``planes // 4`` zero channels on each side.

    Parameters
    ----------
    in_planes, out_planes : int
        Channels in and out, ``out_planes >= in_planes``.
    stride : int
        The subsampling step along both spatial axes.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 2) -> None:
        super().__init__()
        in_planes = check_count(in_planes, "in_planes", 1)
        out_planes = check_count(out_planes, "out_planes", in_planes)
        self.stride = check_count(stride, "stride", 1)
        self.front = (out_planes - in_planes) // 2
        self.back = out_planes - in_planes - self.front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.front, self.back))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.front}, {self.back})"


def shortcut_for(in_planes: int, out_planes: int, stride: int, kind: str) -> nn.Module:
    """The identity where shapes agree; otherwise option A (zero pad) or B (1x1 conv + batch norm)."""
    kind = check_shortcut(kind)
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if kind == "zero_pad":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    return nn.Sequential(*conv_bn(in_planes, out_planes, 1, stride))


class _Residual(nn.Module):
    """What the residual blocks share: ``relu(residual(x) + shortcut(x))``.

    A subclass makes its convs in :meth:`build` (registered first, so the state-dict keys are
    ``conv1``, ``bn1``, ..., ``shortcut``) and chains them in :meth:`residual`; its output has
    ``planes * expansion`` channels.

    Parameters
    ----------
    in_planes, planes : int
        Channels in, and the width of the block (its output has ``planes * expansion``).
    stride : int
        The stride of the block's strided conv (and of the shortcut).
    shortcut : {"zero_pad", "projection"}
        The shortcut where the shapes change (see :data:`SHORTCUTS`); the identity elsewhere.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "projection") -> None:
        super().__init__()
        self.build(in_planes, planes, stride)
        self.shortcut = shortcut_for(in_planes, planes * self.expansion, stride, shortcut)

    def build(self, in_planes: int, planes: int, stride: int) -> None:
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class BasicBlock(_Residual):
    """The residual block of two 3x3 convs: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``conv1`` carries the stride; the output has ``planes`` channels.  Parameters: ``in_planes``,
    ``planes``, ``stride``, ``shortcut``, as the residual blocks' base class documents them.
    """

    expansion = 1

    def build(self, in_planes: int, planes: int, stride: int) -> None:
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 3, stride)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_Residual):
    """The bottleneck block: 1x1 ``in -> planes``, 3x3 ``planes -> planes``, 1x1 ``planes -> 4 planes``.

    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``;
    the 3x3 conv ``conv2`` carries the stride (as torchvision's ResNet v1.5).  Parameters:
    ``in_planes``, ``planes`` (of the 3x3 conv; the output has ``4 planes``), ``stride``,
    ``shortcut``, as the residual blocks' base class documents them.
    """

    expansion = 4

    def build(self, in_planes: int, planes: int, stride: int) -> None:
        self.conv1, self.bn1 = conv_bn(in_planes, planes, 1)
        self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = conv_bn(planes, planes * self.expansion, 1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


Block = type[BasicBlock] | type[Bottleneck]


def stage(block: Block, in_planes: int, planes: int, num_blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    """``num_blocks`` blocks of width ``planes``; the first has the stride (and the shortcut that changes shape)."""
    blocks = []
    for block_stride in (stride, *(1,) * (num_blocks - 1)):
        blocks.append(block(in_planes, planes, block_stride, shortcut))
        in_planes = planes * block.expansion
    return nn.Sequential(*blocks)
