"""Conv semantics shared by the factorized layers: the geometry of a conv, its sub-convs and their folding.

A factorized conv is a chain of sub-convs without non-linearities between them.
Every spatial axis of the original conv is *owned* by exactly one sub-conv:
that sub-conv has the original kernel size, stride, dilation and padding along
the axis, and every other sub-conv has kernel size, stride and dilation 1 and
no padding along it.  The chain then computes exactly the dense conv whose
kernel is the contraction of the sub-kernels over the channels in between
(:func:`fold`), because

- a bias-free 1x1 conv mixes channels pixel by pixel, and a conv along one axis
  acts on every line of the other axis independently, so both commute with a
  padding along an axis they do not own: zero padding (they map zeros to
  zeros) as well as reflect, replicate and circular padding (index maps along
  that axis);
- the owner of an axis sees that axis at its original resolution, since every
  sub-conv before it has stride 1 along it.

Groups are kept as a block-diagonal structure: the channels of every
sub-conv are arranged group by group, and each sub-conv has ``groups = G``
(or a multiple of it, for depthwise sub-convs inside a group), so group ``g``
of the output only ever sees group ``g`` of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tnlib_torch._checks import check_count

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
AXES = "hw"


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return check_count(pair[0], name, minimum), check_count(pair[1], name, minimum)


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a 2-D conv but its weights: channels, kernel size, stride, padding, dilation, groups.

    ``padding`` is a pair of ints or one of the strings ``"same"`` and ``"valid"``, as in ``nn.Conv2d``.
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"

    @classmethod
    def build(cls, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
              stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
              dilation: int | tuple[int, int] = 1, groups: int = 1, padding_mode: str = "zeros") -> ConvGeometry:
        """Check ``nn.Conv2d``'s arguments (with messages naming each) and normalize them to pairs."""
        in_channels = check_count(in_channels, "in_channels")
        out_channels = check_count(out_channels, "out_channels")
        groups = check_count(groups, "groups")
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(f"{name} = {channels} must be divisible by groups = {groups}")
        stride = _pair(stride, "stride", 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid'; got {padding!r}")
            if padding == "same" and stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1 (as in nn.Conv2d), got stride {stride}")
        else:
            padding = _pair(padding, "padding", 0)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}; got {padding_mode!r}")
        return cls(in_channels, out_channels, _pair(kernel_size, "kernel_size", 1), stride, padding,
                   _pair(dilation, "dilation", 1), groups, padding_mode)

    @classmethod
    def of(cls, conv: Any, name: str = "conv") -> ConvGeometry:
        """The geometry of an ``nn.Conv2d`` whose weight is 4-D."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"{name} must be a torch.nn.Conv2d (the factorized conv layers take nn.Conv2d; "
                            f"SVDLinear.from_linear takes nn.Linear), got {type(conv).__name__}")
        if conv.weight.ndim != 4:
            raise ValueError(f"{name}.weight must have 4 dimensions (out, in/groups, kh, kw), "
                             f"got shape {tuple(conv.weight.shape)}")
        return cls.build(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.padding_mode)

    @property
    def group_shape(self) -> tuple[int, int, int, int]:
        """Shape ``(out/G, in/G, kh, kw)`` of one group's kernel, the tensor that gets factorized."""
        return (self.out_channels // self.groups, self.in_channels // self.groups, *self.kernel_size)

    @property
    def fan_in(self) -> int:
        """``in/G * kh * kw``, the fan-in of PyTorch's default conv initialization."""
        return self.group_shape[1] * self.kernel_size[0] * self.kernel_size[1]

    def kwargs(self) -> dict[str, Any]:
        """The constructor arguments of the layers that share this geometry."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
                "padding_mode": self.padding_mode}

    def sub_conv(self, in_channels: int, out_channels: int, axes: str, groups: int, bias: bool,
                 device: Any = None, dtype: Any = None) -> nn.Conv2d:
        """The sub-conv that owns the spatial ``axes`` (``""``, ``"h"``, ``"w"`` or ``"hw"``) of this geometry."""

        def along(values: tuple[int, int], rest: int) -> tuple[int, int]:
            return (values[0] if "h" in axes else rest, values[1] if "w" in axes else rest)

        if isinstance(self.padding, str):
            padding: tuple[int, int] | str = self.padding if axes else (0, 0)
        else:
            padding = along(self.padding, 0)
        return nn.Conv2d(in_channels, out_channels, along(self.kernel_size, 1), along(self.stride, 1), padding,
                         along(self.dilation, 1), groups, bias, self.padding_mode if axes else "zeros",
                         device=device, dtype=dtype)

    def conv(self, bias: bool, device: Any = None, dtype: Any = None) -> nn.Conv2d:
        """A dense ``nn.Conv2d`` of this geometry."""
        return self.sub_conv(self.in_channels, self.out_channels, AXES, self.groups, bias, device, dtype)

    def group_kernels(self, weight: Tensor) -> Tensor:
        """The kernel ``(out, in/G, kh, kw)`` as ``G`` group kernels, shape ``(G, out/G, in/G, kh, kw)``."""
        return weight.reshape(self.groups, *self.group_shape)


def fold(stages: Sequence[tuple[Tensor, int]], groups: int) -> Tensor:
    """The dense kernel ``(out, in/groups, kh, kw)`` of a chain of sub-convs ``(weight, groups)``, first to last.

    Every sub-conv's ``groups`` is a multiple ``m G`` of the chain's ``G = groups``;
    inside a group its weight is block-diagonal with ``m`` blocks.  With
    sub-kernels ``W_s`` (dense within each group) the folded kernel is

        K[o, i, h, w] = sum_{c_1..c_(n-1)} W_n[o, c_(n-1), h_n, w_n] ... W_1[c_1, i, h_1, w_1],

    where ``h`` is the index of the one sub-conv that owns the axis (all others
    have size 1 along it), and likewise ``w``.  Differentiable.
    """
    kernel = None
    for weight, stage_groups in stages:
        out, width, kh, kw = weight.shape
        m = stage_groups // groups
        blocks = weight.reshape(groups, m, out // stage_groups, width, kh, kw)
        eye = torch.eye(m, dtype=weight.dtype, device=weight.device)
        dense = torch.einsum("gmabyx,mn->gmanbyx", blocks, eye).reshape(groups, out // groups, m * width, kh, kw)
        if kernel is None:
            kernel = dense
        else:
            g, o, _, h2, w2 = dense.shape
            _, _, i, h1, w1 = kernel.shape
            kernel = torch.einsum("gocyx,gciab->goiyaxb", dense, kernel).reshape(g, o, i, h2 * h1, w2 * w1)
    assert kernel is not None, "a chain has at least one sub-conv"
    return kernel.reshape(-1, *kernel.shape[2:])
