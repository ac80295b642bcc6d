"""The CP-factorized conv of Lebedev et al. (2015), with the significance readout of CPAC-Conv.

A rank-``R`` CP decomposition of a group's kernel,

    K[o, i, h, w] ~= sum_r A_o[o, r] A_i[i, r] A_h[h, r] A_w[w, r],

is a chain of four convs: a 1x1 conv ``in -> R`` (weight ``A_i^T``), a
depthwise ``kh x 1`` conv on the ``R`` channels (``A_h``), a depthwise
``1 x kw`` conv (``A_w``) and a 1x1 conv ``R -> out`` (``A_o``, with the bias).
The CP weights ``w_r`` are spread evenly, ``|w_r|^(1/4)`` on each factor, so
that every factor starts at the same scale for fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import tnlib
from tnlib import CPFit
from tnlib_torch._checks import check_count
from tnlib_torch.layers.chain import FactorizedConv2d, Fit, GroupMetric, LayerMetric
from tnlib_torch.layers.geometry import ConvGeometry
from tnlib_torch.layers.reports import norm_loss, relative_error


@dataclass(frozen=True)
class CPFitInfo:
    """What :meth:`CPConv2d.from_conv` fitted: the whole kernel's measures, and each group's core report.

    The core reports one CP fit of one tensor (:class:`~tnlib.decompositions.cp_tensor.CPFit`); a grouped
    conv is fitted group by group, so the layer's report holds those fits in
    ``steps`` (as a grouped truncation's ``TruncationInfo`` does) and measures
    the whole kernel it stores.

    Attributes
    ----------
    ranks
        ``(R,)``, the terms per group (``rank`` reads it).
    rel_error
        ``||K - K~||_F / ||K||_F`` of the whole kernel, measured on the kernel
        the stored factors compute; for a fit with ``metric``, in the metric's
        norm, ``sqrt(sum_g ||K_g - K~_g||_{M_g}**2 / sum_g ||K_g||_{M_g}**2)``:
        the relative error of the layer's outputs on the data whose second
        moments the ``M_g`` are, bias excluded.
    norm_loss
        ``1 - ||K~|| / ||K||`` of the same two kernels, in the same norm (negative when the fit overshoots).
    steps
        Each group's ``CPFit``, in group order (of the fit in float64, before storing; in the metric's norm
        with ``metric``).
    """

    ranks: tuple[int, ...]
    rel_error: float
    norm_loss: float
    steps: tuple[CPFit, ...]

    @property
    def rank(self) -> int:
        """``R``."""
        return self.ranks[0]

    @property
    def history(self) -> tuple[tuple[float, ...], ...]:
        """Per group, the relative error of that group's kernel after each iteration."""
        return tuple(step.history for step in self.steps)

    @property
    def converged(self) -> bool:
        """Whether every group's fit met its stopping rule before ``max_iter``."""
        return all(step.converged for step in self.steps)


def _check_rank(rank: Any, shape: tuple[int, ...]) -> int:
    bound = math.prod(shape) // max(shape)
    why = (f"useful for a group kernel of shape {shape} (every tensor of that shape has an exact CP decomposition "
           f"of rank prod(shape) / max(shape))")
    return check_count(rank, "rank", 1, bound, why)


class CPConv2d(FactorizedConv2d):
    """A conv as a CP chain: 1x1 ``in -> R``, depthwise ``kh x 1``, depthwise ``1 x kw``, 1x1 ``R -> out``.

    With ``G`` groups, every group has its own ``R`` terms: the chain carries
    ``G R`` channels, the 1x1 convs have ``groups=G`` and the depthwise convs
    ``groups=G R``.  The vertical conv owns the stride, dilation and padding
    along ``h``, the horizontal one those along ``w``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        As in ``nn.Conv2d``.
    rank
        ``R``, the CP terms per group: from 1 to ``prod(shape) / max(shape)`` of the
        group kernel ``(out/G, in/G, kh, kw)``.

    Attributes
    ----------
    rank
        ``R``.
    info
        :class:`CPFitInfo` after :meth:`from_conv`, else ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], rank: int, *,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        geometry = ConvGeometry.build(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                                      padding_mode)
        rank = _check_rank(rank, geometry.group_shape)
        out_g, in_g = geometry.group_shape[:2]
        super().__init__(geometry, "ihwo", [in_g, rank, rank, rank, out_g], ["", "h", "w", ""], bias,
                         [False, True, True, False], device, dtype)
        self.rank = rank

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int, method: str = "als", init: str = "svd", max_iter: int = 100,
                  tol: float = 1e-8, seed: int | np.random.Generator | None = None, *, ridge: float = 0.0,
                  metric: LayerMetric = None) -> CPConv2d:
        """The CP chain of a trained conv, by :func:`tnlib.cp` of each group's kernel (in float64).

        ``method``, ``init``, ``max_iter``, ``tol``, ``seed`` and ``ridge`` are
        those of :func:`tnlib.cp`; every group gets the same ``seed``.  The
        factors are cast to the conv's dtype and device, the bias is copied,
        and ``info`` is a :class:`CPFitInfo`.  A layer that will be fine-tuned
        wants a small ``ridge`` (``compress`` uses
        :data:`tnlib_torch.compression.structures.CP_RIDGE`): it bounds the
        terms' norms, whereas an unpenalized fit may reach its error with large
        terms that cancel, which a gradient step then breaks.

        ``metric`` (:mod:`tnlib.metric`; one mapping for every group, or one per
        conv group) fits each group kernel (labels ``"oihw"``) in the norm
        ``||W||_M``; CP splits every mode from the others, so each group is one
        label: ``{"i": M_i, "h": M_h, "w": M_w}`` (``LayerMoments.metric("cp")``)
        or a part of it.  ``info`` is then in that norm: ``info.rel_error`` is
        ``||W - W~||_M / ||W||_M``, the relative error of the layer's outputs on
        the data whose second moment ``M`` is (``M_i (x) M_h (x) M_w`` here),
        bias excluded.
        """
        _check_rank(rank, ConvGeometry.of(conv).group_shape)

        def decompose(kernel: Tensor, common: tuple[int, ...] | None, metric: GroupMetric | None) -> Fit:
            model = tnlib.cp(kernel, rank, method=method, init=init, max_iter=max_iter, tol=tol, seed=seed,
                             ridge=ridge, labels="oihw", metric=metric)
            w = model.weights
            scale = w.abs() ** 0.25
            a_o, a_i, a_h, a_w = (factor * scale for factor in model.factors)
            a_o = a_o * torch.where(w < 0, -1.0, 1.0).to(w)
            stages = [a_i.T[:, :, None, None], a_h.T[:, None, :, None], a_w.T[:, None, None, :], a_o[:, :, None, None]]
            return (rank,), stages, model.info

        def report(fits: list[CPFit], ranks: tuple[int, ...], kernel: Tensor, stored: Tensor) -> CPFitInfo:
            return CPFitInfo(ranks, relative_error(kernel, stored), norm_loss(kernel, stored), tuple(fits))

        return cls._fitted(conv, decompose, lambda ranks: {"rank": ranks[0]}, report, metric)

    def cp_tensor(self) -> tnlib.CPTensor:
        """The layer's current factors as a :class:`tnlib.CPTensor` of the kernel ``(out, in, kh, kw)``.

        All ``G R`` terms with unit weights; with groups the channel factors
        are block-diagonal (a term of group ``g`` is zero outside its
        channels), so the dense tensor is the block-diagonal kernel over all
        ``in`` input channels.  Detached from autograd.
        """
        g, r = self.geometry.groups, self.rank
        w_i, w_h, w_w, w_o = (stage.weight.detach() for stage in self.layers)
        a_i = torch.block_diag(*w_i.reshape(g, r, -1).transpose(1, 2))
        a_o = torch.block_diag(*w_o.reshape(g, -1, r))
        a_h, a_w = w_h.reshape(g * r, -1).T, w_w.reshape(g * r, -1).T
        return tnlib.CPTensor(torch.ones(g * r, dtype=a_o.dtype, device=a_o.device), [a_o, a_i, a_h, a_w])

    def significance(self) -> tnlib.CPSignificance:
        """:func:`tnlib.cp_significance` of :meth:`cp_tensor`: scores of the ``G R`` terms, importances.

        ``scores[r] = prod_n ||a^(n)_r||``; ``importance("o")``, ``importance("i")``
        and ``importance("hw")`` rank the output channels, the input channels
        and the kernel positions by the share of the layer's energy they carry.
        """
        return tnlib.cp_significance(self.cp_tensor())
