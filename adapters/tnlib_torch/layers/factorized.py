"""Factorized conv and linear layers: a trained layer as a chain of thin ones, and back.

Every layer here is a chain of sub-layers with no non-linearity between them
(:class:`FactorizedConv2d`, :class:`SVDLinear`), built from a trained layer by a
``from_*`` classmethod (which runs a decomposition of the core on the weight)
or from scratch by its constructor (trainable factors whose product has the
variance of PyTorch's default init), and folded back to the dense layer by
``to_conv()``/``to_linear()``.  A ``from_*`` fit minimizes the error of the
kernel in the Frobenius norm, or, given ``metric`` (the second moments of the
layer's inputs, :meth:`tnlib_torch.compression.calibration.LayerMoments.metric`),
in the data metric of :mod:`tnlib.metric`: the error of the layer's outputs on
that data.  The structures:

=================  ==================================================================  ==============
layer              chain (per group)                                                    decomposition
=================  ==================================================================  ==============
``CPConv2d``       1x1 ``in->R``, depthwise ``kh x 1``, depthwise ``1 x kw``, 1x1 ``R->out``  ``tnlib.cp``
``Tucker2Conv2d``  1x1 ``in->R_i``, ``kh x kw`` ``R_i->R_o``, 1x1 ``R_o->out``              ``tnlib.tucker``
``MPSConv2d``      1x1 ``in->b_1``, ``kh x 1`` ``b_1->b_2``, ``1 x kw`` ``b_2->b_3``, 1x1 ``b_3->out``  ``tnlib.mps``
``SVDConv2d``      the input side of a cut ``in->r``, the output side ``r->out``        ``tnlib.truncated_svd``
``SVDLinear``      ``in->r``, ``r->out``                                                ``tnlib.truncated_svd``
=================  ==================================================================  ==============

The stride, padding (ints, pairs, ``"same"``, ``"valid"``; every
``padding_mode``) and dilation along each axis go to the one sub-conv that
owns the axis; grouped and depthwise convs are factorized group by group (see
:mod:`tnlib_torch.layers.geometry`).  The bias goes on the last sub-layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

import tnlib
from tnlib_torch._checks import check_count
from tnlib_torch.layers.chain import FactorizedConv2d, FactorizedModule, Fit, GroupMetric, LayerMetric
from tnlib_torch.layers.cp import CPConv2d, CPFitInfo
from tnlib_torch.layers.geometry import ConvGeometry
from tnlib_torch.layers.reports import truncation_report
from tnlib_torch.layers.svd import SVDConv2d, SVDLinear

__all__ = ["CPConv2d", "CPFitInfo", "FactorizedConv2d", "FactorizedModule", "MPSConv2d", "SVDConv2d", "SVDLinear",
           "Tucker2Conv2d"]

#: The MPS orders that make a chain of convs: the input channels at one end, the output channels at the other.
MPS_ORDERS = ("ihwo", "iwho", "ohwi", "owhi")

class Tucker2Conv2d(FactorizedConv2d):
    """A conv as a Tucker-2 chain (Kim et al. 2015): 1x1 ``in -> R_i``, ``kh x kw`` ``R_i -> R_o``, 1x1 ``R_o -> out``.

    Computes ``K[o, i, h, w] = sum_{a, b} U_o[o, a] G[a, b, h, w] U_i[i, b]`` per
    group: the first 1x1 conv has weight ``U_i^T``, the middle conv (which owns
    stride, padding and dilation) the core ``G``, the last 1x1 conv ``U_o`` and
    the bias.  Every sub-conv has ``groups=G``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        As in ``nn.Conv2d``.
    ranks
        ``(R_o, R_i)``, the ranks of the output and input modes per group, in the
        kernel's mode order (as :func:`tnlib.tucker` reports them), or one int for
        both; at most ``(out/G, in/G)``.

    Attributes
    ----------
    ranks
        ``(R_o, R_i)``.
    info
        The :class:`tnlib.TruncationInfo` after :meth:`from_conv`, else ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 ranks: int | Sequence[int], *, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, dilation: int | tuple[int, int] = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        geometry = ConvGeometry.build(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                      padding_mode)
        out_g, in_g = geometry.group_shape[:2]
        r_o, r_i = _per_entry(ranks, "ranks", [(out_g, "the output channels per group allow"),
                                               (in_g, "the input channels per group allow")])
        super().__init__(geometry, ["i", "core", "o"], [in_g, r_i, r_o, out_g], ["", "hw", ""], bias,
                         device=device, dtype=dtype)
        self.ranks = (r_o, r_i)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ranks={self.ranks}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, ranks: int | Sequence[int] | None = None, rel_error: float | None = None,
                  cutoff: float | None = None, method: str = "sthosvd", *,
                  metric: LayerMetric = None) -> Tucker2Conv2d:
        """The Tucker-2 chain of a trained conv: ``tnlib.tucker(kernel, ranks, rel_error, cutoff, modes=(0, 1),
        method=method, labels="oihw", metric=metric)``.

        ``ranks`` (an int for both modes, or ``(R_o, R_i)``) caps the ranks, as
        in :func:`tnlib.tucker`: a cap above a mode's size does not bind.
        ``cutoff`` drops, per mode, the singular values below ``cutoff`` times
        the largest.  Without ``ranks``, ``rel_error`` and ``cutoff`` the ranks
        are full and the layer computes the conv exactly.  With groups each
        group's kernel is decomposed; ``rel_error`` then holds for every group
        and so for the whole kernel.

        ``metric`` (:mod:`tnlib.metric`; one mapping for every group, or one per
        conv group) fits each group kernel (labels ``"oihw"``) in the norm
        ``||W||_M``: ``{"i": M_i, "hw": M_hw}`` (``LayerMoments.metric("tucker2")``),
        or ``{"i": M_i}``; the decomposed mode ``i`` must be a group of its own
        (``{"ihw": M}`` is refused).  ``rel_error`` and ``info`` are then in that
        norm: ``info.rel_error`` is ``||W - W~||_M / ||W||_M``, the relative error
        of the layer's outputs on the data whose second moment ``M`` is
        (``M_i (x) M_hw`` here, exact when the channel and spatial statistics
        are independent), bias excluded.
        """

        def decompose(kernel: Tensor, common: tuple[int, ...] | None, metric: GroupMetric | None) -> Fit:
            criteria = (ranks, rel_error, cutoff) if common is None else (common, None, None)
            t = tnlib.tucker(kernel, *criteria, modes=(0, 1), method=method, labels="oihw", metric=metric)
            u_o, u_i = t.factors
            return t.ranks, [u_i.T[:, :, None, None], t.core, u_o[:, :, None, None]], t.info

        return cls._fitted(conv, decompose, lambda ranks: {"ranks": ranks},
                           lambda infos, ranks, kernel, stored: truncation_report(infos, ranks, kernel), metric)


def _per_entry(values: int | Sequence[int], name: str, limits: Sequence[tuple[int, str]]) -> list[int]:
    """One int for every entry, or one per entry; each in ``[1, limit]``."""
    if isinstance(values, (tuple, list)):
        if len(values) != len(limits):
            raise ValueError(f"{name} must be an int or {len(limits)} ints, got {len(values)} values")
        return [check_count(v, f"{name}[{k}]", 1, *limit) for k, (v, limit) in enumerate(zip(values, limits))]
    return [check_count(values, name, 1, limit, why) for limit, why in limits]


def _check_order(order: Any) -> str:
    if not isinstance(order, str) or sorted(order) != sorted("oihw"):
        raise ValueError(f"order must be a permutation of 'oihw', got {order!r}")
    if order not in MPS_ORDERS:
        raise ValueError(f"order must put i and o at the two ends of the chain, one of {', '.join(MPS_ORDERS)}; "
                         f"got {order!r}: a chain of convs takes the input channels at one end and gives the "
                         f"output channels at the other")
    return order


def _core_stage(core: Tensor, label: str) -> Tensor:
    """An MPS core ``(a, d, b)`` of site ``label`` as the weight of its sub-conv (``a`` in, ``b`` out)."""
    a, d, b = core.shape
    if label == "i":
        return core[0].T.reshape(b, d, 1, 1)
    if label == "o":
        return core[:, :, 0].T.reshape(d, a, 1, 1)
    weight = core.permute(2, 0, 1)
    return weight.reshape(b, a, d, 1) if label == "h" else weight.reshape(b, a, 1, d)


class MPSConv2d(FactorizedConv2d):
    """A conv as a matrix product state of its kernel: a chain of four sub-convs, one per site.

    For the order ``"ihwo"`` the kernel of each group is

        K[o, i, h, w] = sum_{a, b, c} G_i[i, a] G_h[a, h, b] G_w[b, w, c] G_o[c, o],

    computed as a 1x1 conv ``in -> b_1`` (``G_i``), a ``kh x 1`` conv
    ``b_1 -> b_2`` (``G_h``, owning the axis ``h``), a ``1 x kw`` conv
    ``b_2 -> b_3`` (``G_w``, owning ``w``) and a 1x1 conv ``b_3 -> out``
    (``G_o``, with the bias).  A chain of convs consumes the input channels at
    one end and produces the output channels at the other, so ``i`` and ``o``
    must be the two ends of the order: ``"ihwo"``, ``"iwho"`` and their
    mirrors ``"ohwi"``, ``"owhi"`` (the same chain read backwards).  An order
    with ``o`` or ``i`` inside (such as ``"iohw"``) has no such chain and is
    refused.  Every sub-conv has ``groups=G``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        As in ``nn.Conv2d``.
    bond_dims
        The three bond dimensions in the order's chain order (as
        :attr:`tnlib.MPS.bond_dims`), or one int for all; bond ``k`` at most
        ``min(prod(dims[:k+1]), prod(dims[k+1:]))`` of the group kernel's
        dimensions in that order.
    order
        One of ``"ihwo"`` (default), ``"iwho"``, ``"ohwi"``, ``"owhi"``.

    Attributes
    ----------
    bond_dims, order
        As given.
    info
        The :class:`tnlib.TruncationInfo` after :meth:`from_conv`, else ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 bond_dims: int | Sequence[int], order: str = "ihwo", *, stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, dilation: int | tuple[int, int] = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        geometry = ConvGeometry.build(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                      padding_mode)
        order = _check_order(order)
        sizes = dict(zip("oihw", geometry.group_shape))
        dims = [sizes[label] for label in order]
        limits = [(min(math.prod(dims[: k + 1]), math.prod(dims[k + 1 :])),
                   f"bond {k} of order {order!r} allows for a group kernel of shape {geometry.group_shape}")
                  for k in range(3)]
        bonds = _per_entry(bond_dims, "bond_dims", limits)
        chain, widths = (order, bonds) if order[0] == "i" else (order[::-1], bonds[::-1])
        super().__init__(geometry, list(chain), [sizes["i"], *widths, sizes["o"]], ["", chain[1], chain[2], ""],
                         bias, device=device, dtype=dtype)
        self.bond_dims, self.order = tuple(bonds), order

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, order={self.order!r}, bond_dims={self.bond_dims}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, order: str = "ihwo", max_bond: int | Sequence[int] | None = None,
                  rel_error: float | None = None, cutoff: float | None = None, method: str = "auto",
                  seed: int | np.random.Generator | None = None, *, metric: LayerMetric = None) -> MPSConv2d:
        """The MPS chain of a trained conv: ``tnlib.mps(kernel, order=order, max_bond=..., rel_error=..., ...)``.

        Without ``max_bond``, ``rel_error`` and ``cutoff`` the bonds are full and
        the layer computes the conv exactly.  ``max_bond`` is a bound (a value
        above a bond's full dimension does not bind).  With groups, when the
        groups meet ``rel_error`` or ``cutoff`` at different bond dimensions,
        each group is decomposed again at the largest of each bond, or keeps
        its own fit padded with zeros where that would err more.

        ``metric`` (:mod:`tnlib.metric`; one mapping for every group, or one per
        conv group) fits each group kernel (labels ``"oihw"``) in the norm
        ``||W||_M``; every bond splits the sites apart, so each group is one
        label: ``{"i": M_i, "h": M_h, "w": M_w}`` (``LayerMoments.metric("mps")``)
        or a part of it.  ``rel_error`` and ``info`` are then in that norm:
        ``info.rel_error`` is ``||W - W~||_M / ||W||_M``, the relative error of
        the layer's outputs on the data whose second moment ``M`` is
        (``M_i (x) M_h (x) M_w`` here), bias excluded.
        """
        order = _check_order(order)

        def decompose(kernel: Tensor, common: tuple[int, ...] | None, metric: GroupMetric | None) -> Fit:
            m = tnlib.mps(kernel, labels="oihw", order=order, max_bond=max_bond if common is None else list(common),
                          rel_error=rel_error if common is None else None, cutoff=cutoff if common is None else None,
                          method=method, seed=seed, metric=metric)
            cores, chain = (m.cores, order) if order[0] == "i" else ([c.permute(2, 1, 0) for c in m.cores[::-1]],
                                                                     order[::-1])
            return m.bond_dims, [_core_stage(core, label) for core, label in zip(cores, chain)], m.info

        return cls._fitted(conv, decompose, lambda bonds: {"bond_dims": bonds, "order": order},
                           lambda infos, ranks, kernel, stored: truncation_report(infos, ranks, kernel), metric)
