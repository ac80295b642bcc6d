"""The networks of the compressibility study, and loading their checkpoints.

* :func:`vanilla_cnn` (:class:`VanillaCNN`): the four-conv-layer CNN of Singh,
  Jahromi & Orus (2024), "Tensor network compressibility of convolutional
  models", with configurable widths (the paper does not publish them);
* :func:`cifar_resnet`: the CIFAR ResNets of He et al. (2016), depth ``6n + 2``,
  16/32/64 channels and parameter-free "option A" shortcuts, whose state-dict
  keys are those of the published checkpoints of akamaster/pytorch_resnet_cifar10;
* :func:`resnet18_cifar`, :func:`resnet50_cifar`: the ImageNet ResNet-18/50 with
  a 3x3 stride-1 stem and no max-pool, for 32x32 inputs;
* :func:`load_checkpoint` (from :mod:`tnlib_torch.zoo.weights`): a checkpoint into a
  model, by ``torch.load(..., weights_only=True)`` only, checked against the model
  before anything is copied;
* :data:`MODELS` and :func:`build_model`: the models by name.

Their building blocks (:class:`BasicBlock`, :class:`Bottleneck`, :class:`ZeroPadShortcut`) are
those of :mod:`tnlib_torch.zoo.blocks`, importable from here too.

Every model is an ``nn.Sequential`` of named layers (its ``forward`` is the
chain), so the state-dict keys are the layer names (``conv1.weight``,
``layer2.0.bn1.running_mean``, ``linear.bias``), and the models script
(``torch.jit.script``) and export (``torch.export``).  Conv and linear weights are
drawn Kaiming-normal (fan-in, ReLU gain), as in akamaster's CIFAR ResNets; batch
norms start at weight 1, bias 0; linear biases keep PyTorch's default.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from tnlib_torch._checks import check_count
from tnlib_torch.zoo.blocks import (
    SHORTCUTS,
    BasicBlock,
    Block,
    Bottleneck,
    ZeroPadShortcut,
    check_shortcut,
    check_sizes,
    conv_bn,
    head,
    init_weights,
    stage,
)
from tnlib_torch.zoo.weights import load_checkpoint

__all__ = [
    "CIFAR_RESNET_DEPTHS",
    "CIFAR_RESNET_NORMALIZATION",
    "MODELS",
    "SHORTCUTS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "VanillaCNN",
    "ZeroPadShortcut",
    "build_model",
    "cifar_resnet",
    "load_checkpoint",
    "resnet18_cifar",
    "resnet50_cifar",
    "vanilla_cnn",
]

#: The input normalisation (per channel, on [0, 1] pixels) the published CIFAR ResNet checkpoints were trained with.
CIFAR_RESNET_NORMALIZATION: dict[str, tuple[float, float, float]] = {
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}
#: The depths of the CIFAR ResNets of He et al. (2016) that :data:`MODELS` names; any ``6n + 2 >= 8`` builds.
CIFAR_RESNET_DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110)

#: The default widths of :class:`VanillaCNN` and the blocks it max-pools after.
_VANILLA_WIDTHS = (32, 64, 128, 128)
_VANILLA_POOL_AFTER = (2, 4)


# -- networks --------------------------------------------------------------------------------------------------------


class VanillaCNN(nn.Sequential):
    """The four-conv-layer CNN of Singh, Jahromi & Orus (2024).

    Layers (``nn.Sequential`` children, by name): for ``k = 1..4``, ``conv{k}``
    (3x3, padding 1, no bias, ``widths[k-1]`` channels), ``bn{k}``, ``relu{k}``,
    and ``pool2``, ``pool4`` (2x2 max-pooling) after blocks 2 and 4; then
    ``avgpool`` (adaptive, to 1x1), ``flatten`` and ``linear`` (``widths[3] ->
    num_classes``).  Any input of at least 4x4 works (8x8 digits become 2x2
    before the average pooling, 32x32 CIFAR images 8x8).

    The paper does not publish the widths.  The default ``(32, 64, 128, 128)``
    doubles the width at each of the first three blocks, the usual pattern, and
    holds 242,474 parameters for CIFAR-10, the same order as ResNet-20's
    269,722, so the two are compared at a similar size.

    Parameters
    ----------
    num_classes : int
        Outputs of the classifier, at least 2.
    in_channels : int
        Channels of the input images (3 for CIFAR, 1 for grayscale digits).
    widths : sequence of 4 ints
        Output channels of the four convs.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = _VANILLA_WIDTHS) -> None:
        num_classes = check_count(num_classes, "num_classes", 2)
        in_channels = check_count(in_channels, "in_channels", 1)
        widths = check_sizes(widths, "widths", 4)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for k, (c_in, c_out) in enumerate(zip((in_channels, *widths), widths), start=1):
            layers[f"conv{k}"], layers[f"bn{k}"] = conv_bn(c_in, c_out, 3)
            layers[f"relu{k}"] = nn.ReLU()
            if k in _VANILLA_POOL_AFTER:
                layers[f"pool{k}"] = nn.MaxPool2d(2)
        layers.update(head(widths[-1], num_classes))
        super().__init__(layers)
        init_weights(self)


class ResNet(nn.Sequential):
    """A ResNet with a 3x3 stride-1 stem and no max-pool, for small (CIFAR-sized) images.

    Layers (``nn.Sequential`` children, by name): ``conv1`` (3x3, stride 1,
    padding 1, no bias, ``in_channels -> widths[0]``), ``bn1``, ``relu``; one
    stage ``layer{k}`` per width (an ``nn.Sequential`` of ``num_blocks[k-1]``
    blocks, the first of stage ``k > 1`` with stride 2); ``avgpool`` (adaptive, to
    1x1), ``flatten``, ``linear`` (``widths[-1] * block.expansion ->
    num_classes``).

    Parameters
    ----------
    block : type
        :class:`BasicBlock` or :class:`Bottleneck` (or a subclass, with its ``expansion``).
    num_blocks : sequence of int
        Blocks per stage.
    widths : sequence of int
        ``planes`` of each stage, as many as ``num_blocks``.
    num_classes : int
        Outputs of the classifier, at least 2.
    in_channels : int
        Channels of the input images.
    shortcut : {"zero_pad", "projection"}
        The shortcut of the blocks that change shape (see :data:`SHORTCUTS`).
    """

    def __init__(self, block: Block, num_blocks: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 in_channels: int = 3, shortcut: str = "projection") -> None:
        if not (isinstance(block, type) and issubclass(block, (BasicBlock, Bottleneck))):
            raise TypeError(f"block must be BasicBlock or Bottleneck (or a subclass), got {block!r}")
        widths = check_sizes(widths, "widths")
        num_blocks = check_sizes(num_blocks, "num_blocks", len(widths))
        num_classes = check_count(num_classes, "num_classes", 2)
        in_channels = check_count(in_channels, "in_channels", 1)
        shortcut = check_shortcut(shortcut)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1"], layers["bn1"] = conv_bn(in_channels, widths[0], 3)
        layers["relu"] = nn.ReLU()
        in_planes = widths[0]
        for k, (planes, blocks) in enumerate(zip(widths, num_blocks), start=1):
            layers[f"layer{k}"] = stage(block, in_planes, planes, blocks, 1 if k == 1 else 2, shortcut)
            in_planes = planes * block.expansion
        layers.update(head(in_planes, num_classes))
        super().__init__(layers)
        init_weights(self)


def vanilla_cnn(num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = _VANILLA_WIDTHS) -> VanillaCNN:
    """The four-conv-layer CNN of Singh, Jahromi & Orus (2024); see :class:`VanillaCNN`.

    Parameters
    ----------
    num_classes : int
        Outputs of the classifier, at least 2.
    in_channels : int
        Channels of the input images.
    widths : sequence of 4 ints
        Output channels of the four convs.

    Returns
    -------
    VanillaCNN
    """
    return VanillaCNN(num_classes, in_channels, widths)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """The CIFAR ResNet of He et al. (2016) of a given depth, with "option A" shortcuts.

    Three stages of ``n = (depth - 2) / 6`` :class:`BasicBlock` each, of 16, 32
    and 64 channels, after a 3x3 stem conv of 16 channels; the first block of
    stages 2 and 3 has stride 2 and the parameter-free :class:`ZeroPadShortcut`.
    The state-dict keys are those of akamaster/pytorch_resnet_cifar10's
    checkpoints (without their ``module.`` prefix, which :func:`load_checkpoint`
    strips).  ResNet-20 has 269,722 parameters and ResNet-56 853,018 (10 classes).

    Parameters
    ----------
    depth : int
        ``6n + 2`` with ``n >= 1``; He et al. use 20, 32, 44, 56, 110 (and 1202).
    num_classes : int
        Outputs of the classifier, at least 2.
    in_channels : int
        Channels of the input images.

    Returns
    -------
    ResNet
    """
    depth = check_count(depth, "depth", 8)
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (He et al. use {', '.join(map(str, CIFAR_RESNET_DEPTHS))}"
                         f" and 1202), got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), (16, 32, 64), num_classes, in_channels, shortcut="zero_pad")


def resnet18_cifar(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-18 for CIFAR: :class:`BasicBlock` ``[2, 2, 2, 2]``, widths 64/128/256/512, projection shortcuts.

    The ImageNet ResNet-18 of He et al. (2016) with a 3x3 stride-1 stem conv of
    64 channels and no max-pool; 11,173,962 parameters for 10 classes.

    Parameters
    ----------
    num_classes : int
        Outputs of the classifier, at least 2.
    in_channels : int
        Channels of the input images.

    Returns
    -------
    ResNet
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels)


def resnet50_cifar(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-50 for CIFAR: :class:`Bottleneck` ``[3, 4, 6, 3]``, widths 64/128/256/512 (x4), projection shortcuts.

    The ImageNet ResNet-50 of He et al. (2016) with a 3x3 stride-1 stem conv of
    64 channels and no max-pool; 23,520,842 parameters for 10 classes.

    Parameters
    ----------
    num_classes : int
        Outputs of the classifier, at least 2.
    in_channels : int
        Channels of the input images.

    Returns
    -------
    ResNet
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels)


#: The models by name: each factory takes ``num_classes`` and ``in_channels``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "vanilla_cnn": vanilla_cnn,
    **{f"resnet{depth}": partial(cifar_resnet, depth) for depth in CIFAR_RESNET_DEPTHS},
    "resnet18": resnet18_cifar,
    "resnet50": resnet50_cifar,
}


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """The model :data:`MODELS` names, freshly initialized.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    num_classes, in_channels : int
        Passed to the factory.

    Returns
    -------
    nn.Module
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {', '.join(MODELS)}; got {type(name).__name__}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the available models are {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)
