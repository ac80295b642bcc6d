"""The layers split along one cut by a truncated SVD: :class:`SVDConv2d` and :class:`SVDLinear`.

Both are two thin layers ``in -> r -> out`` whose product is the best rank-``r``
approximation of the dense weight (Eckart-Young), fitted by the core's
:func:`~tnlib.decompositions.base.truncate_keeping_one`: in the Frobenius norm,
or in a data metric (:mod:`tnlib.metric`), where it is the best rank-``r``
approximation of the layer's outputs on the data.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import tnlib
from tnlib._validation import check_array, check_choice, check_seed
from tnlib.decompositions.base import truncate_keeping_one
from tnlib.metric import Metric, check_cuts
from tnlib.svd import SVD_METHODS
from tnlib.truncation import TruncationSpec
from tnlib_torch._checks import check_count
from tnlib_torch.layers.chain import FactorizedConv2d, FactorizedModule, Fit, GroupMetric, LayerMetric
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


def _metric_space(metric: GroupMetric | None, labels: str, weight: Tensor, cut: str) -> Metric | None:
    """The validated metric of ``weight`` (labels ``labels``), each group whole on one side of ``cut``; or None."""
    return Metric.build(metric, labels, weight, partial(check_cuts, cuts=[tnlib.Cut(cut)]))


def _svd_split(weight: Tensor, labels: str, cut: str, keep: tuple[Any, Any, Any], method: str, seed: Any,
               space: Metric | None) -> tuple[Tensor, Tensor, tnlib.TruncationInfo]:
    """``weight ~= second . first``, split across ``cut`` by the core's :func:`truncate_keeping_one`.

    ``weight`` has ``labels``, ``"oi"`` first (``"oihw"`` or ``"oi"``); ``cut``
    writes ``o`` first on its left, ``i`` first on its right and the other
    labels in the order of ``labels``.  With ``W' = W x L^T`` in metric space
    (``space``; ``W`` itself without one), ``W'_(cut) ~= A' B'``,
    ``A' = U sqrt(S)``, ``B' = sqrt(S) V^H``, at most ``keep = (max_rank,
    rel_error, cutoff)`` and at least one triplet (a layer keeps one channel,
    as an MPS bond or a Tucker mode keeps one value).  Each factor is mapped
    back with ``L^{-T}`` on the groups of its side, which every group lies on
    one side of: ``W~ = A B`` is the best rank-``r`` approximation of ``W`` in
    the metric's norm (Eckart-Young), whose ``info`` reports that norm's errors.

    The factors are returned with the labels of ``weight`` as the two layers'
    weights: ``first`` ``(r, in, ...)``, the bond in place of ``o``, and
    ``second`` ``(out, r, ...)``, the bond in place of ``i``; a label of the
    other side is an axis of size 1.  The arguments are checked as
    :func:`tnlib.truncated_svd` checks them.
    """
    spec = TruncationSpec.from_kwargs(*keep)
    check_choice(method, "method", ("auto", *SVD_METHODS))
    x = check_array(weight, "weight")
    x = x if space is None else space.to_metric_space(x)
    c = tnlib.Cut(cut)
    u, s, vh, info = truncate_keeping_one(tnlib.matricize(x, c, labels), spec, method, check_seed(seed))
    root, rank, dims = s.sqrt(), s.shape[0], dict(zip(labels, weight.shape))
    second = (u * root).reshape(*(dims[a] if a in c.left else 1 for a in labels if a != "i"), rank).movedim(-1, 1)
    first = (root[:, None] * vh).reshape(rank, *(dims[a] if a in c.right else 1 for a in labels[1:]))
    if space is None:
        return first, second, info
    outputs = [g for g in space.groups if set(g) <= set(c.left)]
    inputs = [g for g in space.groups if g not in outputs]
    return space.from_metric_space(first, inputs), space.from_metric_space(second, outputs), info


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
                  seed: int | np.random.Generator | None = None, *, metric: LayerMetric = None) -> SVDConv2d:
        """The two-conv split of a trained conv: :func:`tnlib.truncated_svd` of ``tnlib.matricize(kernel, cut)``.

        ``max_rank``, ``rel_error``, ``cutoff``, ``method`` and ``seed`` are those
        of :func:`tnlib.truncated_svd` (at least one value is kept; ``max_rank``
        above the full rank does not bind).  Without them the split is exact.

        ``metric`` (:mod:`tnlib.metric`; one mapping for every group, or one per
        conv group) fits each group kernel (labels ``"oihw"``) in the norm
        ``||W||_M``, each group of labels on one side of the cut: for ``o|ihw``
        the full ``{"ihw": M}`` (``LayerMoments.metric("svd")``), for which the
        split is the best rank-``r`` approximation of the layer's outputs on the
        data.  ``rel_error`` and ``info`` are then in that norm: ``info.rel_error``
        is ``||W - W~||_M / ||W||_M``, the relative error of the layer's outputs
        on the data whose second moment ``M`` is, bias excluded.
        """
        cut, inside, outside = _svd_sides(cut)
        split = f"o{outside}|i{inside}"

        def decompose(kernel: Tensor, common: tuple[int, ...] | None, metric: GroupMetric | None) -> Fit:
            keep = (max_rank, rel_error, cutoff) if common is None else (common[0], None, None)
            space = _metric_space(metric, "oihw", kernel, cut)
            first, second, info = _svd_split(kernel, "oihw", split, keep, method, seed, space)
            return (first.shape[0],), [first, second], replace(info, cut=cut)

        return cls._fitted(conv, decompose, lambda ranks: {"rank": ranks[0], "cut": cut},
                           lambda infos, ranks, kernel, stored: truncation_report(infos, ranks, kernel, cut), metric)


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
                    seed: int | np.random.Generator | None = None, *,
                    metric: GroupMetric | None = None) -> SVDLinear:
        """The split of a trained linear layer by :func:`tnlib.truncated_svd` of its weight (in float64).

        The factors are stored in the layer's dtype; below float64 ``info``
        reports the errors of the stored product against the original weight.

        ``metric`` ``{"i": M}`` (:mod:`tnlib.metric`, the weight's labels are
        ``"oi"``), ``M`` the second moment of the inputs
        (``LayerMoments.metric()``), fits in the norm ``||W||_M = ||W L||_F``:
        ``W~`` is the truncated SVD of ``W L`` mapped back with ``L^{-1}``, the
        best rank-``r`` approximation of the layer's outputs on the data.
        ``rel_error`` and ``info`` are then in that norm: ``info.rel_error`` is
        ``||W - W~||_M / ||W||_M``, the relative error of the layer's outputs on
        the data whose second moment ``M`` is, bias excluded.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear (SVDConv2d.from_conv and the other factorized conv "
                            f"layers take nn.Conv2d), got {type(linear).__name__}")
        weight = linear.weight.detach()
        if weight.ndim != 2:
            raise ValueError(f"linear.weight must have 2 dimensions (out, in), got shape {tuple(weight.shape)}")
        matrix = weight.to(torch.float64)
        space = _metric_space(metric, "oi", matrix, "o|i")
        first, second, info = _svd_split(matrix, "oi", "o|i", (max_rank, rel_error, cutoff), method, seed, space)
        layer = cls(weight.shape[1], weight.shape[0], info.rank, linear.bias is not None, weight.device, weight.dtype)
        layer.load_factors([first, second], linear.bias)
        stored = layer.layers[1].weight.detach().double() @ layer.layers[0].weight.detach().double()
        if weight.dtype != matrix.dtype:
            measured = (lambda x: x) if space is None else space.to_metric_space
            info = as_stored(info, measured(matrix), measured(stored))
        layer.info = info
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
