"""How each compression method factorizes one trained layer.

A :class:`Structure` holds one layer and one method.  It fits the layer under
fixed criteria (:meth:`Structure.fixed`), lists the candidate ranks of a budget
with the widths of their chains and an estimate of their error
(:meth:`Structure.candidates`), and builds the layer at chosen ranks
(:meth:`Structure.build`).

The estimates are squared relative errors of the whole kernel.  With the group
kernels ``K_g`` and, for a cut ``c`` and a rank ``r`` common to the groups, the
relative tail ``t_c(r) = sum_g sum_(k >= r) s_(g,c,k)^2 / sum_g ||K_g||^2`` of
their singular values ``s_(g,c,k)`` across ``c``:

* SVD along the cut ``c`` at rank ``r``: ``t_c(r)``, exact (Eckart-Young, per group); with
  ``cut="auto"`` (:class:`SVDCutChoice`) the candidates of every cut of :data:`SVD_CUTS`;
* Tucker-2 at ``(r_o, r_i)``: ``t_(o|ihw)(r_o) + t_(i|ohw)(r_i)``, the HOSVD bound
  (ST-HOSVD errs no more);
* MPS at bonds ``b_k``: ``sum_k t_(c_k)(b_k)`` over the bond cuts ``c_k``, the
  TT-SVD bound of Oseledets (2011);
* CP at rank ``R``: the error of a fit at ``R``, measured, since no spectrum
  bounds it.

With calibration moments (:class:`tnlib_torch.LayerMoments`) every norm above is the layer's data
metric (:mod:`tnlib.metric`): the spectra, the tails, the errors and the fits are those of the
layer's outputs on the calibration data (bias excluded), ``||W - W~||_M / ||W||_M``.  The metric
has the form the structure leaves whole (:meth:`LayerMoments.metric`): ``{"ihw"}`` across
``o|ihw`` (an SVD split, exact), a factor per side for an SVD along another cut
(:meth:`LayerMoments.split_metric`, ``{"iw", "h"}`` across ``oh|iw``), ``{"i", "hw"}`` for
Tucker-2, one matrix per label for an MPS and CP (the Kronecker-factored moment).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

import tnlib
from tnlib.truncation import tail_weights
from tnlib_torch.compression.calibration import LayerMoments
from tnlib_torch.layers.chain import FactorizedModule
from tnlib_torch.layers.cp import CPConv2d
from tnlib_torch.layers.factorized import MPSConv2d, Tucker2Conv2d
from tnlib_torch.layers.geometry import ConvGeometry
from tnlib_torch.layers.svd import SVDConv2d, SVDLinear

#: The cuts of :class:`SVDConv2d` (each splits ``o`` from ``i``) among which ``cut="auto"`` chooses per layer.
SVD_CUTS = ("o|ihw", "i|ohw", "oh|iw", "ow|ih")
#: The most values a grid of candidate ranks takes per mode or bond (Tucker-2, MPS).
GRID_POINTS = {"tucker2": 48, "mps": 12}
#: Tucker-2 candidates keep the fractions ``r_o / (out/G)`` and ``r_i / (in/G)`` of their two modes within this
#: factor of each other: the HOSVD bound sums the two modes' tails as if they were independent, and trusted
#: alone it drives a budget to pairs such as ``(43, 5)`` of 64 channels that starve one side of the core.
TUCKER2_BALANCE = 4.0
#: The most CP ranks fitted as budget candidates (a geometric ladder, warm-started: :func:`tnlib.cp_ladder`).
CP_LADDER = 12
#: The iterations per rung of the candidates' ladder, and of the fit of the chosen rank from its rung.
CP_SWEEPS = 25
#: The ALS ``ridge`` of every CP fit ``compress`` makes, unless ``fit`` gives one (or ``method="lm"``, which
#: takes none): ``||W - W~||^2 + CP_RIDGE * sum_r w_r^2``.  Without it the fits of trained kernels reach their
#: error with terms that cancel (on ResNet-20 at 25% the terms' norms summed to 26-47 times the kernel's), and
#: one epoch of SGD then broke the network (72.4% to 24.4% top-1); at 0.01 the terms sum to 7-10 times the
#: kernel, the fit loses 0.2 points and the same epoch raises it to 76.0% (docs/torch_compress.md).
CP_RIDGE = 0.01


@dataclass(frozen=True)
class Candidates:
    """Candidates of one layer: ``ranks[j]``, chain widths ``widths[s][j]``, squared error ``errors[j]``."""

    ranks: list[tuple[int, ...]]
    widths: list[np.ndarray]
    errors: np.ndarray


def rank_grid(full: int, points: int) -> np.ndarray:
    """Every rank ``1..full`` if there are at most ``points``, else ``points`` evenly spread, ``full`` last."""
    if full <= points:
        return np.arange(1, full + 1)
    return np.unique(np.linspace(1, full, points).round().astype(int))


def relative_tails(kernels: torch.Tensor, labels: str, cuts: Sequence[str],
                   metrics: Sequence[Mapping[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """``t_c(r)`` for ``r = 0..min(matrix shape)`` of each cut ``c``; ``kernels`` holds the groups along axis 0.

    With ``metrics`` (one per group) the singular values and the total are in each group's metric.
    """
    tails, total = {cut: 0.0 for cut in cuts}, 0.0
    for g, kernel in enumerate(kernels.to(torch.float64)):
        metric = None if metrics is None else metrics[g]
        for cut, spectrum in tnlib.spectra(kernel, labels, cuts=list(cuts), metric=metric).items():
            full = min(spectrum.matrix_shape)
            squares = np.zeros(full)
            squares[: spectrum.singular_values.size] = spectrum.singular_values**2
            tails[cut] = tails[cut] + tail_weights(squares)
        total += float(squares.sum())  # every cut's singular values square-sum to ||K_g||**2 (in the metric)
    return {cut: tail / total if total > 0 else np.zeros_like(tail) for cut, tail in tails.items()}


def split_candidates(tails: np.ndarray, first: int, last: int) -> Candidates:
    """Every rank ``r`` of a two-layer split ``first -> r -> last``, erring ``tails[r]``."""
    ranks = np.arange(1, tails.size)
    return Candidates([(int(r),) for r in ranks], [np.full_like(ranks, first), ranks, np.full_like(ranks, last)],
                      tails[ranks])


class Structure(ABC):
    """One trained layer under one method (see the module docs), in the data metric of ``moments`` if given."""

    #: The form of the data metric the structure takes (:meth:`LayerMoments.metric`).
    metric_kind = "svd"

    def __init__(self, layer: nn.Module, fit: Mapping[str, Any], moments: LayerMoments | None = None) -> None:
        self.layer, self.fit, self.moments = layer, dict(fit), moments
        self._built: dict[tuple[int, ...], nn.Module] = {}

    @cached_property
    def metrics(self) -> list[dict[str, np.ndarray]] | None:
        """One data metric per group, in the structure's form (formed once); ``None`` without moments."""
        if self.moments is None:
            return None
        return [self.moments.metric(self.metric_kind, g) for g in range(self.moments.groups)]

    def fitted(self) -> dict[str, Any]:
        """The keywords of every fit: the method's ``fit`` and, with moments, ``metric``."""
        return self.fit if self.moments is None else {**self.fit, "metric": self.metrics}

    def at(self, ranks: tuple[int, ...]) -> nn.Module:
        """:meth:`build` at ``ranks``, fitted once: a second request gets the same layer."""
        if ranks not in self._built:
            self._built[ranks] = self.build(ranks)
        return self._built[ranks]

    def variants(self) -> dict[str | None, Structure]:
        """The structures whose candidates a budget chooses among, by key: ``{None: self}``, this one alone."""
        return {None: self}

    @abstractmethod
    def meta(self) -> FactorizedModule:
        """A layer of this structure at the smallest ranks, on the meta device (for :class:`ChainCosts`)."""

    @abstractmethod
    def candidates(self) -> Candidates:
        """The ranks a budget may choose from."""

    @abstractmethod
    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        """The layer fitted with the method's size limit ``size`` and the truncation criteria."""

    @abstractmethod
    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        """The layer fitted at exactly ``ranks`` (one of :meth:`candidates`)."""


class ConvStructure(Structure):
    """A structure of an ``nn.Conv2d``: its geometry and group kernels."""

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], moments: LayerMoments | None = None) -> None:
        super().__init__(layer, fit, moments)
        self.geometry = ConvGeometry.of(layer)
        self.kernels = self.geometry.group_kernels(layer.weight.detach())
        self.bias = layer.bias is not None

    def meta_kwargs(self) -> dict[str, Any]:
        return {**self.geometry.kwargs(), "bias": self.bias, "device": "meta"}


class SVDStructure(ConvStructure):
    """:class:`SVDConv2d` along ``cut`` (any cut splits a 1x1 conv into two 1x1 convs).

    With moments the metric is :meth:`LayerMoments.split_metric` of the cut's two sides: the full
    ``{"ihw"}`` across ``o|ihw``, else a factor over the input side's labels and one over the output
    side's spatial labels (``{"iw", "h"}`` across ``oh|iw``), the finest form the cut leaves whole.
    """

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], cut: str, moments: LayerMoments | None = None) -> None:
        super().__init__(layer, fit, moments)
        self.cut = cut

    @cached_property
    def metrics(self) -> list[dict[str, np.ndarray]] | None:
        if self.moments is None:
            return None
        c = tnlib.Cut(self.cut).check("oihw")
        sides = (c.left, c.right) if "i" in c.left else (c.right, c.left)
        parts = tuple(p for p in ("".join(a for a in "ihw" if a in side) for side in sides) if p)
        return [self.moments.split_metric(parts, g) for g in range(self.moments.groups)]

    def meta(self) -> FactorizedModule:
        return SVDConv2d(**self.meta_kwargs(), rank=1, cut=self.cut)

    def candidates(self) -> Candidates:
        out_g, in_g = self.geometry.group_shape[:2]
        tails = relative_tails(self.kernels, "oihw", [self.cut], self.metrics)[self.cut]
        return split_candidates(tails, in_g, out_g)

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        return SVDConv2d.from_conv(self.layer, self.cut, size, rel_error, cutoff, **self.fitted())

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return SVDConv2d.from_conv(self.layer, self.cut, max_rank=ranks[0], **self.fitted())


class SVDCutChoice:
    """:class:`SVDConv2d` of a kxk conv along the cut a budget chooses: ``cut="auto"``.

    Its :meth:`variants` are the :class:`SVDStructure` of every cut in :data:`SVD_CUTS`, keyed by
    the cut; a budget's options for the layer are the union of theirs, each named ``(cut, r)``
    (:meth:`at`), so the allocation picks the (cut, rank) of the least estimated error at its cost
    on one frontier over every cut's candidates.
    """

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], moments: LayerMoments | None = None) -> None:
        self.layer = layer
        self.parts = {cut: SVDStructure(layer, fit, cut, moments) for cut in SVD_CUTS}

    def variants(self) -> dict[str | None, Structure]:
        return dict(self.parts)

    def at(self, ranks: tuple[Any, ...]) -> nn.Module:
        """The split along ``ranks[0]``, a cut of :data:`SVD_CUTS`, at the rank ``ranks[1]``."""
        cut, *rest = ranks
        return self.parts[cut].at(tuple(rest))


#: What :func:`structure_of` gives a layer: one structure, or a choice among several (:meth:`Structure.variants`).
LayerStructure = Structure | SVDCutChoice


class LinearStructure(Structure):
    """:class:`SVDLinear` of an ``nn.Linear``."""

    def meta(self) -> FactorizedModule:
        out, features = self.layer.weight.shape
        return SVDLinear(features, out, 1, self.layer.bias is not None, device="meta")

    def candidates(self) -> Candidates:
        out, features = self.layer.weight.shape
        tails = relative_tails(self.layer.weight.detach()[None], "oi", ["o|i"], self.metrics)["o|i"]
        return split_candidates(tails, features, out)

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        return SVDLinear.from_linear(self.layer, size, rel_error, cutoff, **self._linear_fit())

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return SVDLinear.from_linear(self.layer, max_rank=ranks[0], **self._linear_fit())

    def _linear_fit(self) -> dict[str, Any]:
        """A linear layer has one group: its metric is one mapping."""
        fit = self.fitted()
        return fit if self.moments is None else {**fit, "metric": fit["metric"][0]}


class Tucker2Structure(ConvStructure):
    """:class:`Tucker2Conv2d`; a ``seed`` in ``fit`` is dropped (ST-HOSVD, HOSVD and HOOI draw nothing)."""

    metric_kind = "tucker2"

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], moments: LayerMoments | None = None) -> None:
        super().__init__(layer, {key: value for key, value in fit.items() if key != "seed"}, moments)

    def meta(self) -> FactorizedModule:
        return Tucker2Conv2d(**self.meta_kwargs(), ranks=1)

    def candidates(self) -> Candidates:
        """Rank pairs with ``r_o <= r_i kh kw`` and ``r_i <= r_o kh kw`` (a larger rank could not be used),
        balanced: the modes' rank fractions within :data:`TUCKER2_BALANCE` of each other."""
        tails = relative_tails(self.kernels, "oihw", ["o|ihw", "i|ohw"], self.metrics)
        out_g, in_g, kh, kw = self.geometry.group_shape
        grids = [rank_grid(tails[cut].size - 1, GRID_POINTS["tucker2"]) for cut in ("o|ihw", "i|ohw")]
        r_o, r_i = (a.ravel() for a in np.meshgrid(*grids, indexing="ij"))
        ratio = (r_o / out_g) / (r_i / in_g)
        usable = (r_o <= r_i * kh * kw) & (r_i <= r_o * kh * kw) & (ratio <= TUCKER2_BALANCE)
        usable &= ratio >= 1 / TUCKER2_BALANCE
        r_o, r_i = r_o[usable], r_i[usable]
        return Candidates(list(zip(r_o.tolist(), r_i.tolist())),
                          [np.full_like(r_o, in_g), r_i, r_o, np.full_like(r_o, out_g)],
                          tails["o|ihw"][r_o] + tails["i|ohw"][r_i])

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        """``size``, an int or ``(R_o, R_i)``, caps the ranks: a mode smaller than its cap keeps its size."""
        return Tucker2Conv2d.from_conv(self.layer, size, rel_error, cutoff, **self.fitted())

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return Tucker2Conv2d.from_conv(self.layer, ranks, **self.fitted())


class MPSStructure(ConvStructure):
    """:class:`MPSConv2d` in the site ``order``."""

    metric_kind = "mps"

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], order: str, moments: LayerMoments | None = None
                 ) -> None:
        super().__init__(layer, fit, moments)
        self.order = order

    def meta(self) -> FactorizedModule:
        return MPSConv2d(**self.meta_kwargs(), bond_dims=1, order=self.order)

    def candidates(self) -> Candidates:
        """Bond triples with ``b_(k+1) <= b_k d_(k+1)`` and ``b_k <= d_(k+1) b_(k+1)`` (no redundant bond)."""
        cuts = [f"{self.order[:k + 1]}|{self.order[k + 1:]}" for k in range(3)]
        tails = relative_tails(self.kernels, "oihw", cuts, self.metrics)
        sizes = dict(zip("oihw", self.geometry.group_shape))
        d = [sizes[label] for label in self.order]
        grids = [rank_grid(tails[cut].size - 1, GRID_POINTS["mps"]) for cut in cuts]
        bonds = np.array(list(itertools.product(*grids))).reshape(-1, 3)
        inner = np.ones(len(bonds), dtype=bool)
        for k in range(2):
            inner &= (bonds[:, k + 1] <= bonds[:, k] * d[k + 1]) & (bonds[:, k] <= d[k + 1] * bonds[:, k + 1])
        bonds = bonds[inner]
        chain = bonds if self.order[0] == "i" else bonds[:, ::-1]
        return Candidates([tuple(b) for b in bonds.tolist()],
                          [np.full(len(bonds), d[0] if self.order[0] == "i" else d[-1]), *chain.T,
                           np.full(len(bonds), sizes["o"])],
                          sum(tails[cut][bonds[:, k]] for k, cut in enumerate(cuts)))

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        return MPSConv2d.from_conv(self.layer, self.order, size, rel_error, cutoff, **self.fitted())

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return MPSConv2d.from_conv(self.layer, self.order, list(ranks), **self.fitted())


class CPStructure(ConvStructure):
    """:class:`CPConv2d`; its candidates are fits at a geometric ladder of ranks, kept for :meth:`at`."""

    metric_kind = "cp"

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], moments: LayerMoments | None = None) -> None:
        if fit.get("method", "als") == "als":
            fit = {"ridge": CP_RIDGE, **fit}
        super().__init__(layer, fit, moments)
        self._rungs: list[dict[int, tnlib.CPTensor]] = []  # per group, {rank: fit} of the candidates' ladder
        #: Iterations per rung of the ladder and of the chosen rank's fit from its rung: ``fit``'s
        #: ``max_iter`` when given (a bound on the work), else :data:`CP_SWEEPS`.
        self.sweeps = int(self.fit.get("max_iter", CP_SWEEPS))

    def meta(self) -> FactorizedModule:
        return CPConv2d(**self.meta_kwargs(), rank=1)

    def candidates(self) -> Candidates:
        """A geometric ladder of ranks from 1 to the largest whose factors hold fewer weights than the dense
        kernel, fitted by :func:`tnlib.cp_ladder` (each rung warm-started from the one below, at most
        :attr:`sweeps` iterations each); the errors are those of the fits, measured."""
        shape = self.geometry.group_shape
        largest = max(1, min(math.prod(shape) // max(shape), (math.prod(shape) - 1) // sum(shape)))
        ranks = np.unique(np.geomspace(1, largest, CP_LADDER).round().astype(int))
        metrics = self.metrics or [None] * len(self.kernels)
        ladder = {key: value for key, value in self.fit.items() if key in ("method", "tol", "seed", "ridge")}
        squared_errors, total = np.zeros(len(ranks)), 0.0
        self._rungs.clear()
        for kernel, metric in zip(self.kernels.to(torch.float64), metrics):
            norm = float((tnlib.spectrum(kernel, "o|ihw", "oihw", metric=metric).singular_values ** 2).sum())
            rungs = tnlib.cp_ladder(kernel, ranks.tolist(), sweeps=self.sweeps, labels="oihw", metric=metric, **ladder)
            squared_errors += norm * np.array([rung.info.rel_error ** 2 for rung in rungs])
            total += norm
            self._rungs.append(dict(zip(ranks.tolist(), rungs)))
        out_g, in_g = shape[:2]
        return Candidates([(int(r),) for r in ranks], [np.full_like(ranks, in_g), ranks, ranks, ranks,
                                                        np.full_like(ranks, out_g)],
                          squared_errors / total if total > 0 else squared_errors)

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        """At rank ``size`` (capped at the exact-decomposition bound); or, given only ``rel_error``, at the
        largest rank :func:`tnlib.cp_rank` finds for a group (searched in the kernel norm; the fit at that
        rank is in the data metric when there is one)."""
        shape = self.geometry.group_shape
        if size is None:
            search = {key: value for key, value in self.fit.items() if key in ("method", "max_iter", "tol", "seed")}
            size = max(tnlib.cp_rank(kernel.to(torch.float64), rel_error, **search).rank for kernel in self.kernels)
        return CPConv2d.from_conv(self.layer, min(size, math.prod(shape) // max(shape)), **self.fitted())

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        """The fit at ``ranks[0]``: of one group, continued from its rung of :meth:`candidates` for
        :attr:`sweeps` more iterations; else from the ``fit``'s own start."""
        if len(self._rungs) == 1 and ranks[0] in self._rungs[0]:
            start = {"init": self._rungs[0][ranks[0]], "max_iter": self.sweeps}
            return CPConv2d.from_conv(self.layer, ranks[0], **{**self.fitted(), **start})
        return CPConv2d.from_conv(self.layer, ranks[0], **self.fitted())


def structure_of(layer: nn.Module, method: str, fit: Mapping[str, Any], cut: str, order: str,
                 moments: LayerMoments | None = None) -> LayerStructure:
    """The structure a selected layer gets under ``method``: the method's, or the SVD split of a matrix.

    ``cut="auto"`` (method ``"svd"``, a budget's) gives a kxk conv the :class:`SVDCutChoice`.

    A 1x1 conv and an ``nn.Linear`` are matrices, whose best approximation by
    every method is their truncated SVD; their fit takes only the ``seed`` of
    another method's ``fit`` (its randomized solver's).  ``moments``, the
    layer's calibration moments, make every fit and estimate data-aware.
    """
    matrix_fit = fit if method == "svd" else {key: value for key, value in fit.items() if key == "seed"}
    if isinstance(layer, nn.Linear):
        return LinearStructure(layer, matrix_fit, moments)
    if tuple(layer.kernel_size) == (1, 1):
        return SVDStructure(layer, matrix_fit, "o|ihw" if cut == "auto" or method != "svd" else cut, moments)
    if method == "svd":
        return SVDCutChoice(layer, fit, moments) if cut == "auto" else SVDStructure(layer, fit, cut, moments)
    if method == "mps":
        return MPSStructure(layer, fit, order, moments)
    return {"tucker2": Tucker2Structure, "cp": CPStructure}[method](layer, fit, moments)
