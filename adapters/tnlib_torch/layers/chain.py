"""The base of the factorized layers: a chain of sub-layers standing for one dense layer.

Shared by every structure: the forward pass (the chain, an ``nn.Sequential``,
so that the layers script and export), the initialization, the folding back to
a dense ``nn.Conv2d``, and the fit of a trained conv group by group, in the
Frobenius norm of its kernel or in a data metric (:mod:`tnlib.metric`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tnlib import TruncationInfo
from tnlib._validation import describe
from tnlib.metric import Metric
from tnlib_torch.layers.geometry import ConvGeometry, fold
from tnlib_torch.layers.reports import as_stored

if TYPE_CHECKING:
    from tnlib_torch.layers.cp import CPFitInfo

#: Two fits whose relative errors differ by no more than this err alike: float64 round-off of a fit is
#: about ``1e-15`` of the kernel's norm, so a difference below ``1e-12`` says nothing about which is better.
ERROR_TIE = 1e-12

#: What a fit reports: the core's :class:`tnlib.TruncationInfo` (Tucker-2, MPS, SVD), or for CP the core's
#: :class:`tnlib.CPFit` of a group and the layer's ``CPFitInfo`` (:mod:`tnlib_torch.layers.cp`).
FitReport = Any
#: A group's fit: its ranks, the weights of its sub-layers (first to last) and the decomposition's report.
Fit = tuple[tuple[int, ...], list[Tensor], FitReport]
#: A group kernel's metric (:mod:`tnlib.metric`): ``{label group: matrix}`` over its labels ``"oihw"``,
#: e.g. ``{"ihw": M}`` with ``M`` the second moment of the group's input patches.
GroupMetric = Mapping[str, Any]
#: The ``metric`` argument of the ``from_conv`` constructors: None, one :data:`GroupMetric` (for every
#: group), or a sequence of one per conv group (see :func:`group_metrics`).
LayerMetric = GroupMetric | Sequence[GroupMetric] | None
#: ``decompose(group_kernel, common_ranks, metric) -> Fit``; ``common_ranks`` is None on the first pass (the
#: caller's criteria apply) and the ranks to keep exactly on the second; ``metric`` is the group's
#: :data:`GroupMetric` or None.
Decompose = Callable[[Tensor, "tuple[int, ...] | None", "GroupMetric | None"], Fit]


class FactorizedModule(nn.Module):
    """A chain of linear sub-layers, with no non-linearity between them, that stands for one dense layer.

    Attributes
    ----------
    layers
        The sub-layers, an ``nn.Sequential`` named after the indices they carry.
    fan_in
        Fan-in of the dense layer it stands for.
    info
        What the fit reported (set by the ``from_*`` constructors; ``None`` for a layer built from
        scratch): a :class:`tnlib.TruncationInfo` (Tucker-2, MPS, SVD) or a :class:`CPFitInfo` (CP).
    """

    def __init__(self, layers: nn.Sequential, fan_in: int) -> None:
        super().__init__()
        self.layers = layers
        self.fan_in = fan_in
        self.info: TruncationInfo | CPFitInfo | None = None
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def reset_parameters(self) -> None:
        """Random factors whose product has the variance of PyTorch's default init of the dense layer.

        PyTorch draws a dense conv or linear weight from ``U(-b, b)``,
        ``b = 1 / sqrt(fan_in)``: variance ``1 / (3 fan_in)``.  A folded
        entry is a sum over ``P`` paths through the chain of products of one
        entry per sub-layer; with independent zero-mean entries of variance
        ``s^2`` in each of the ``n`` sub-layers its variance is ``P s^(2n)``,
        so every factor is drawn from ``N(0, s^2)`` with
        ``s = (3 fan_in P)^(-1/(2n))``.  ``P`` is the product of the input
        widths (per group) of all sub-layers but the first.  The bias is
        drawn as PyTorch does, from ``U(-b, b)``.
        """
        stages = list(self.layers)
        paths = math.prod(stage.weight.shape[1] for stage in stages[1:])
        std = (3.0 * self.fan_in * paths) ** (-1.0 / (2 * len(stages)))
        bound = 1.0 / math.sqrt(self.fan_in)
        with torch.no_grad():
            for stage in stages:
                stage.weight.normal_(0.0, std)
            if stages[-1].bias is not None:
                stages[-1].bias.uniform_(-bound, bound)

    def load_factors(self, weights: Sequence[Tensor], bias: Tensor | None) -> None:
        """Copy sub-layer weights (cast to the layer's dtype and device) and the last sub-layer's bias."""
        with torch.no_grad():
            for stage, weight in zip(self.layers, weights):
                stage.weight.copy_(weight.reshape(stage.weight.shape))
            if bias is not None:
                self.layers[-1].bias.copy_(bias)


class FactorizedConv2d(FactorizedModule):
    """Base of the factorized conv layers: a chain of sub-convs computing one ``nn.Conv2d``.

    Has the attributes of ``nn.Conv2d`` that describe its geometry
    (``in_channels``, ``out_channels``, ``kernel_size``, ``stride``,
    ``padding``, ``dilation``, ``groups``, ``padding_mode``), as pairs or
    ``"same"``/``"valid"``.  See :mod:`tnlib_torch.layers.geometry` for how the
    chain keeps the conv's semantics.  ``depthwise`` flags the sub-convs that filter each channel
    alone (CP's spatial stages), whatever the widths (at width 1 a depthwise conv and a dense one
    look alike).
    """

    def __init__(self, geometry: ConvGeometry, names: Sequence[str], widths: Sequence[int], axes: Sequence[str],
                 bias: bool = True, depthwise: Sequence[bool] | None = None, device: Any = None,
                 dtype: Any = None) -> None:
        """A chain of ``len(names)`` sub-convs; ``widths`` are the channels per group between them.

        Sub-conv ``s`` maps ``widths[s]`` to ``widths[s + 1]`` channels per group
        (``widths[0] = in/G``, ``widths[-1] = out/G``) with ``groups = G``, or,
        when ``depthwise[s]``, acts on each of its ``G widths[s]`` channels alone.
        It owns the spatial ``axes[s]``; only the last one has a bias.
        """
        g = geometry.groups
        depthwise = depthwise or [False] * len(names)
        stages = OrderedDict()
        for s, name in enumerate(names):
            groups = g * widths[s] if depthwise[s] else g
            stages[name] = geometry.sub_conv(g * widths[s], g * widths[s + 1], axes[s], groups,
                                             bias and s == len(names) - 1, device, dtype)
        super().__init__(nn.Sequential(stages), geometry.fan_in)
        self.geometry = geometry
        self.depthwise = tuple(depthwise)
        for key, value in geometry.kwargs().items():
            setattr(self, key, value)

    def extra_repr(self) -> str:
        g = self.geometry
        text = f"{g.in_channels}, {g.out_channels}, kernel_size={g.kernel_size}, stride={g.stride}"
        defaults = {"padding": (0, 0), "dilation": (1, 1), "groups": 1, "padding_mode": "zeros"}
        return text + "".join(f", {key}={getattr(g, key)!r}" for key, value in defaults.items()
                              if getattr(g, key) != value)

    def folded_weight(self) -> Tensor:
        """The dense kernel ``(out, in/groups, kh, kw)`` the chain computes (differentiable)."""
        return fold([(stage.weight, stage.groups) for stage in self.layers], self.geometry.groups)

    def to_conv(self) -> nn.Conv2d:
        """A dense ``nn.Conv2d`` computing the same function (same dtype and device, with the bias)."""
        weight, bias = self.layers[0].weight, self.layers[-1].bias
        conv = self.geometry.conv(bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.folded_weight())
            if bias is not None:
                conv.bias.copy_(bias)
        return conv

    @classmethod
    def _fitted(cls, conv: nn.Conv2d, decompose: Decompose, config: Callable[[tuple[int, ...]], dict[str, Any]],
                summarize: Callable[[list[Any], tuple[int, ...], Tensor, Tensor], Any],
                metric: LayerMetric = None) -> FactorizedConv2d:
        """The layer of ``cls`` fitted to a trained conv, group by group, in float64.

        Each group's kernel is decomposed, with its own metric of ``metric``
        (:func:`group_metrics`); when the groups' ranks differ (an error target
        met at different ranks), every group is decomposed again, with the same
        metric, at the largest rank of each bond or mode (:func:`at_common_ranks`).
        The factors are stacked along the channels, giving the block-diagonal
        sub-convs.  ``config(ranks)`` gives the constructor's rank arguments and
        ``summarize(infos, ranks, kernel, stored)`` the layer's ``info``, with
        ``stored`` the kernel of the stored factors (:meth:`stored_kernel`).
        With a metric both kernels are given in metric space, group ``g`` as
        ``K'_g = K_g x L_g^T``, so that their Frobenius norms and errors are the
        metric's.  Factors stored in a dtype narrower than float64 (float32,
        float16, bfloat16) are rounded: the ``info`` of such a layer reports the
        errors of the stored kernel against the original one (:func:`as_stored`).
        """
        geometry = ConvGeometry.of(conv)
        weight = conv.weight.detach()
        kernel = weight.to(torch.float64)
        kernels = geometry.group_kernels(kernel)
        metrics = group_metrics(metric, geometry.groups)
        fits = [decompose(k, None, m) for k, m in zip(kernels, metrics)]
        if len({ranks for ranks, _, _ in fits}) > 1:
            common = tuple(max(r) for r in zip(*(ranks for ranks, _, _ in fits)))
            fits = [at_common_ranks(fit, decompose(k, common, m)) for fit, k, m in zip(fits, kernels, metrics)]
        ranks = fits[0][0]
        factors = [torch.cat(parts) for parts in zip(*(stages for _, stages, _ in fits))]
        layer = cls(**geometry.kwargs(), **config(ranks), bias=conv.bias is not None, device=weight.device,
                    dtype=weight.dtype)
        layer.load_factors(factors, conv.bias)
        measured = _in_metric_space(geometry, kernels, metrics)
        kernel, stored = measured(kernel), measured(layer.stored_kernel())
        info = summarize([info for _, _, info in fits], ranks, kernel, stored)
        layer.info = info if weight.dtype == torch.float64 else as_stored(info, kernel, stored)
        return layer

    def stored_kernel(self) -> Tensor:
        """The dense kernel the stored factors compute, folded in float64 (detached).

        The factors are fitted in float64 and stored in the layer's dtype; this
        is the kernel of what is stored, rounding of the cast included.
        """
        return fold([(stage.weight.detach().double(), stage.groups) for stage in self.layers], self.geometry.groups)


def group_metrics(metric: LayerMetric, groups: int) -> list[GroupMetric | None]:
    """``metric`` as one metric (or None) per conv group.

    ``None`` gives ``None`` for every group; one mapping ``{label group: matrix}``
    is every group's metric (a conv of one group has just it); a sequence of
    mappings must hold exactly one per group, in group order.  The mappings
    themselves are checked by the core (:mod:`tnlib.metric`) when a group is fitted.
    """
    if metric is None or isinstance(metric, Mapping):
        return [metric] * groups
    if isinstance(metric, (str, bytes)) or not isinstance(metric, Sequence):
        raise TypeError(f"metric must be None, a mapping {{label group: matrix}} such as {{'ihw': M}}, or a "
                        f"sequence of one such mapping per conv group, got {describe(metric)}")
    if len(metric) != groups:
        raise ValueError(f"metric must hold one mapping per conv group: the conv has {groups} group(s), got "
                         f"{len(metric)} mapping(s)")
    for g, part in enumerate(metric):
        if not isinstance(part, Mapping):
            raise TypeError(f"metric[{g}] must be a mapping {{label group: matrix}} such as {{'ihw': M}}, got "
                            f"{describe(part)}")
    return list(metric)


def _in_metric_space(geometry: ConvGeometry, kernels: Tensor,
                     metrics: list[GroupMetric | None]) -> Callable[[Tensor], Tensor]:
    """The map of a kernel ``(out, in/G, kh, kw)`` to metric space, group by group: ``K'_g = K_g x L_g^T``.

    ``||K'||_F**2 = sum_g ||K_g||_{M_g}**2`` (:mod:`tnlib.metric`); without a metric the map is the identity
    (the kernel itself is returned).  ``kernels`` are the group kernels the metrics were given for.
    """
    spaces = [Metric.build(m, "oihw", k) for k, m in zip(kernels, metrics)]
    if all(space is None for space in spaces):
        return lambda kernel: kernel
    return lambda kernel: torch.cat([space.to_metric_space(k)
                                     for space, k in zip(spaces, geometry.group_kernels(kernel))])


def at_common_ranks(first: Fit, second: Fit) -> Fit:
    """A group's fit at the common ranks: ``second`` (decomposed at them), unless it errs clearly more than ``first``.

    A larger truncation rank never errs more for an SVD or a Tucker-2
    decomposition, but TT-SVD's error is not monotone in the bond dimensions
    (the later bonds truncate a different matrix).  A group whose error would
    grow by more than :data:`ERROR_TIE` keeps its own fit, every sub-layer
    weight padded with zero channels to the common widths: the same kernel, so
    its error target still holds; its report then carries the common ranks (the
    widths built) and its own errors.  Errors within :data:`ERROR_TIE` (round-off)
    count as equal and keep ``second``, so the choice does not hang on round-off.
    """
    if second[2].rel_error <= first[2].rel_error + ERROR_TIE:
        return second
    padded = [F.pad(w, (0, 0, 0, 0, 0, t.shape[1] - w.shape[1], 0, t.shape[0] - w.shape[0]))
              for w, t in zip(first[1], second[1])]
    return second[0], padded, replace(first[2], ranks=second[0])
