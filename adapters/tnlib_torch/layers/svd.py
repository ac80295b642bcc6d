"""The layers split along one cut by a truncated SVD: :class:`SVDConv2d` and :class:`SVDLinear`.

Both are two thin layers ``in -> r -> out`` whose product is the best rank-``r``
approximation of the dense weight (Eckart-Young), fitted by the core's
:func:`~tnlib.decompositions.base.truncate_keeping_one`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import tnlib
from tnlib._validation import check_array, check_choice, check_seed
from tnlib.decompositions.base import truncate_keeping_one
from tnlib.svd import SVD_METHODS
from tnlib.truncation import TruncationSpec
from tnlib_torch._checks import check_count
from tnlib_torch.layers.chain import FactorizedConv2d, FactorizedModule, Fit
from tnlib_torch.layers.geometry import ConvGeometry
from tnlib_torch.layers.reports import as_stored, truncation_report

__all__ = ["SVDConv2d", "SVDLinear"]


def _svd_sides(cut: Any) -> tuple[str, str, str]:
    """The cut as written and the spatial axes on its input side and on its output side."""
    c = tnlib.Cut(cut).check("oihw")
    inside, outside = (c.left, c.right) if "i" in c.left else (c.right, c.left)
    if "o" in inside:
        raise ValueError(f"cut {str(c)!r} puts o and i on the same side; a two-conv split needs a cut between the "
                         f"input and the output channels: 'o|ihw', 'i|ohw', 'oh|iw' or 'ow|ih'")
    return str(c), "".join(a for a in "hw" if a in inside), "".join(a for a in "hw" if a in outside)


def _svd_split(matrix: Tensor, max_rank: int | None, rel_error: float | None, cutoff: float | None, method: str,
               seed: Any) -> tuple[Tensor, Tensor, tnlib.TruncationInfo]:
    """``M ~= A B`` with ``A = U sqrt(S)``, ``B = sqrt(S) V^H``: the core's :func:`truncate_keeping_one`.

    At least one singular triplet is kept (a zero matrix, ``rel_error=1``): a
    layer keeps one channel, as an MPS bond or a Tucker mode keeps one value.
    The arguments are checked as :func:`tnlib.truncated_svd` checks them.
    """
    spec = TruncationSpec.from_kwargs(max_rank, rel_error, cutoff)
    check_choice(method, "method", ("auto", *SVD_METHODS))
    u, s, vh, info = truncate_keeping_one(check_array(matrix, "weight", ndim=2), spec, method, check_seed(seed))
    root = s.sqrt()
    return u * root, root[:, None] * vh, info


class SVDConv2d(FactorizedConv2d):
    """A conv as two convs, split along a cut of its kernel by a truncated SVD.

    With the cut ``O|I`` (``o`` in ``O``, ``i`` in ``I``; the spatial axes on
    either side), ``K_(O|I) = A B`` with ``r`` columns of ``A``, i.e.
    ``K[o, i, h, w] = sum_r A[(o, O's axes), r] B[r, (i, I's axes)]``: the first
    conv ``in -> r`` has kernel ``B`` over ``I``'s axes, the second ``r -> out``
    kernel ``A`` over ``O``'s axes, each owning its axes.

    ==========  ==================================  ==================================
    cut         first conv (``in -> r``)            second conv (``r -> out``, bias)
    ==========  ==================================  ==================================
    ``o|ihw``   ``kh x kw``                          1x1
    ``i|ohw``   1x1                                  ``kh x kw``
    ``oh|iw``   ``1 x kw``                           ``kh x 1``
    ``ow|ih``   ``kh x 1``                           ``1 x kw``
    ==========  ==================================  ==================================

    The cuts with ``o`` and ``i`` on one side (``oi|hw``, ``h|oiw``, ``w|oih``)
    are refused.  A 1x1 conv is split into two 1x1 convs by any cut.  Both convs
    have ``groups=G``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        As in ``nn.Conv2d``.
    rank
        ``r`` per group, at most the smaller side of the group kernel's matricization.
    cut
        ``"o|ihw"`` (default), ``"i|ohw"``, ``"oh|iw"`` or ``"ow|ih"`` (any spelling of these cuts).

    Attributes
    ----------
    rank, cut
        As given.
    info
        The :class:`tnlib.TruncationInfo` after :meth:`from_conv`, else ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], rank: int,
                 cut: str | tnlib.Cut = "o|ihw", *, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, dilation: int | tuple[int, int] = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        geometry = ConvGeometry.build(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                      padding_mode)
        cut, inside, outside = _svd_sides(cut)
        sizes = dict(zip("oihw", geometry.group_shape))
        rows, cols = (math.prod(sizes[a] for a in side) for side in ("o" + outside, "i" + inside))
        rank = check_count(rank, "rank", 1, min(rows, cols),
                           f"the cut {cut!r} of a group kernel of shape {geometry.group_shape} allows")
        super().__init__(geometry, ["i" + inside, "o" + outside], [sizes["i"], rank, sizes["o"]], [inside, outside],
                         bias, device=device, dtype=dtype)
        self.rank, self.cut = rank, cut

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cut={self.cut!r}, rank={self.rank}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, cut: str | tnlib.Cut = "o|ihw", max_rank: int | None = None,
                  rel_error: float | None = None, cutoff: float | None = None, method: str = "auto",
                  seed: int | np.random.Generator | None = None) -> SVDConv2d:
        """The two-conv split of a trained conv: :func:`tnlib.truncated_svd` of ``tnlib.matricize(kernel, cut)``.

        ``max_rank``, ``rel_error``, ``cutoff``, ``method`` and ``seed`` are those
        of :func:`tnlib.truncated_svd` (at least one value is kept; ``max_rank``
        above the full rank does not bind).  Without them the split is exact.
        """
        cut, inside, outside = _svd_sides(cut)

        def decompose(kernel: Tensor, common: tuple[int, ...] | None) -> Fit:
            matrix = tnlib.matricize(kernel, f"o{outside}|i{inside}")
            keep = (max_rank, rel_error, cutoff) if common is None else (common[0], None, None)
            a, b, info = _svd_split(matrix, *keep, method, seed)
            r, (out_g, in_g, kh, kw) = b.shape[0], kernel.shape
            first = b.reshape(r, in_g, kh if "h" in inside else 1, kw if "w" in inside else 1)
            second = a.reshape(out_g, kh if "h" in outside else 1, kw if "w" in outside else 1, r).permute(0, 3, 1, 2)
            return (r,), [first, second], replace(info, cut=cut)

        return cls._fitted(conv, decompose, lambda ranks: {"rank": ranks[0], "cut": cut},
                           lambda infos, ranks, kernel, stored: truncation_report(infos, ranks, kernel, cut))


class SVDLinear(FactorizedModule):
    """A linear layer as two thin ones: ``W ~= A B``, ``in -> r`` (weight ``B``) then ``r -> out`` (``A``, bias).

    Parameters
    ----------
    in_features, out_features, bias, device, dtype
        As in ``nn.Linear``.
    rank
        ``r``, at most ``min(in_features, out_features)``.

    Attributes
    ----------
    rank, in_features, out_features
        As given.
    info
        The :class:`tnlib.TruncationInfo` after :meth:`from_linear`, else ``None``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        in_features = check_count(in_features, "in_features")
        out_features = check_count(out_features, "out_features")
        rank = check_count(rank, "rank", 1, min(in_features, out_features),
                           f"a {out_features} x {in_features} weight allows")
        layers = OrderedDict(i=nn.Linear(in_features, rank, False, device, dtype),
                             o=nn.Linear(rank, out_features, bias, device, dtype))
        super().__init__(nn.Sequential(layers), in_features)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"

    @classmethod
    def from_linear(cls, linear: nn.Linear, max_rank: int | None = None, rel_error: float | None = None,
                    cutoff: float | None = None, method: str = "auto",
                    seed: int | np.random.Generator | None = None) -> SVDLinear:
        """The split of a trained linear layer by :func:`tnlib.truncated_svd` of its weight (in float64).

        The factors are stored in the layer's dtype; below float64 ``info``
        reports the errors of the stored product against the original weight.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear (SVDConv2d.from_conv and the other factorized conv "
                            f"layers take nn.Conv2d), got {type(linear).__name__}")
        weight = linear.weight.detach()
        if weight.ndim != 2:
            raise ValueError(f"linear.weight must have 2 dimensions (out, in), got shape {tuple(weight.shape)}")
        matrix = weight.to(torch.float64)
        a, b, info = _svd_split(matrix, max_rank, rel_error, cutoff, method, seed)
        layer = cls(weight.shape[1], weight.shape[0], info.rank, linear.bias is not None, weight.device, weight.dtype)
        layer.load_factors([b, a], linear.bias)
        stored = layer.layers[1].weight.detach().double() @ layer.layers[0].weight.detach().double()
        layer.info = info if weight.dtype == matrix.dtype else as_stored(info, matrix, stored)
        return layer

    def folded_weight(self) -> Tensor:
        """The dense weight ``A B`` (differentiable)."""
        return self.layers[1].weight @ self.layers[0].weight

    def to_linear(self) -> nn.Linear:
        """A dense ``nn.Linear`` computing the same function (same dtype and device, with the bias)."""
        weight, bias = self.layers[0].weight, self.layers[1].bias
        linear = nn.Linear(self.in_features, self.out_features, bias is not None, weight.device, weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.folded_weight())
            if bias is not None:
                linear.bias.copy_(bias)
        return linear
