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

* SVD along the cut ``c`` at rank ``r``: ``t_c(r)``, exact (Eckart-Young, per group);
* Tucker-2 at ``(r_o, r_i)``: ``t_(o|ihw)(r_o) + t_(i|ohw)(r_i)``, the HOSVD bound
  (ST-HOSVD errs no more);
* MPS at bonds ``b_k``: ``sum_k t_(c_k)(b_k)`` over the bond cuts ``c_k``, the
  TT-SVD bound of Oseledets (2011);
* CP at rank ``R``: the error of a fit at ``R``, measured, since no spectrum
  bounds it.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import tnlib
from tnlib.truncation import tail_weights
from tnlib_torch.layers.chain import FactorizedModule
from tnlib_torch.layers.cp import CPConv2d
from tnlib_torch.layers.factorized import MPSConv2d, Tucker2Conv2d
from tnlib_torch.layers.geometry import ConvGeometry
from tnlib_torch.layers.svd import SVDConv2d, SVDLinear

#: The most values a grid of candidate ranks takes per mode or bond (Tucker-2, MPS).
GRID_POINTS = {"tucker2": 48, "mps": 12}
#: The most CP ranks fitted as budget candidates (a geometric ladder).
CP_LADDER = 8


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


def relative_tails(kernels: torch.Tensor, labels: str, cuts: Sequence[str]) -> dict[str, np.ndarray]:
    """``t_c(r)`` for ``r = 0..min(matrix shape)`` of each cut ``c``; ``kernels`` holds the groups along axis 0."""
    tails = {cut: 0.0 for cut in cuts}
    for kernel in kernels.to(torch.float64):
        for cut, spectrum in tnlib.spectra(kernel, labels, cuts=list(cuts)).items():
            full = min(spectrum.matrix_shape)
            squares = np.zeros(full)
            squares[: spectrum.singular_values.size] = spectrum.singular_values**2
            tails[cut] = tails[cut] + tail_weights(squares)
    total = float(torch.linalg.vector_norm(kernels.to(torch.float64))) ** 2
    return {cut: tail / total if total > 0 else np.zeros_like(tail) for cut, tail in tails.items()}


def split_candidates(tails: np.ndarray, first: int, last: int) -> Candidates:
    """Every rank ``r`` of a two-layer split ``first -> r -> last``, erring ``tails[r]``."""
    ranks = np.arange(1, tails.size)
    return Candidates([(int(r),) for r in ranks], [np.full_like(ranks, first), ranks, np.full_like(ranks, last)],
                      tails[ranks])


class Structure(ABC):
    """One trained layer under one method (see the module docs)."""

    def __init__(self, layer: nn.Module, fit: Mapping[str, Any]) -> None:
        self.layer, self.fit = layer, dict(fit)
        self._built: dict[tuple[int, ...], nn.Module] = {}

    def at(self, ranks: tuple[int, ...]) -> nn.Module:
        """:meth:`build` at ``ranks``, fitted once: a second request gets the same layer."""
        if ranks not in self._built:
            self._built[ranks] = self.build(ranks)
        return self._built[ranks]

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

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any]) -> None:
        super().__init__(layer, fit)
        self.geometry = ConvGeometry.of(layer)
        self.kernels = self.geometry.group_kernels(layer.weight.detach())
        self.bias = layer.bias is not None

    def meta_kwargs(self) -> dict[str, Any]:
        return {**self.geometry.kwargs(), "bias": self.bias, "device": "meta"}


class SVDStructure(ConvStructure):
    """:class:`SVDConv2d` along ``cut`` (any cut splits a 1x1 conv into two 1x1 convs)."""

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], cut: str) -> None:
        super().__init__(layer, fit)
        self.cut = cut

    def meta(self) -> FactorizedModule:
        return SVDConv2d(**self.meta_kwargs(), rank=1, cut=self.cut)

    def candidates(self) -> Candidates:
        out_g, in_g = self.geometry.group_shape[:2]
        return split_candidates(relative_tails(self.kernels, "oihw", [self.cut])[self.cut], in_g, out_g)

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        return SVDConv2d.from_conv(self.layer, self.cut, size, rel_error, cutoff, **self.fit)

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return SVDConv2d.from_conv(self.layer, self.cut, max_rank=ranks[0], **self.fit)


class LinearStructure(Structure):
    """:class:`SVDLinear` of an ``nn.Linear``."""

    def meta(self) -> FactorizedModule:
        out, features = self.layer.weight.shape
        return SVDLinear(features, out, 1, self.layer.bias is not None, device="meta")

    def candidates(self) -> Candidates:
        out, features = self.layer.weight.shape
        return split_candidates(relative_tails(self.layer.weight.detach()[None], "oi", ["o|i"])["o|i"], features, out)

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        return SVDLinear.from_linear(self.layer, size, rel_error, cutoff, **self.fit)

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return SVDLinear.from_linear(self.layer, max_rank=ranks[0], **self.fit)


class Tucker2Structure(ConvStructure):
    """:class:`Tucker2Conv2d`; a ``seed`` in ``fit`` is dropped (ST-HOSVD, HOSVD and HOOI draw nothing)."""

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any]) -> None:
        super().__init__(layer, {key: value for key, value in fit.items() if key != "seed"})

    def meta(self) -> FactorizedModule:
        return Tucker2Conv2d(**self.meta_kwargs(), ranks=1)

    def candidates(self) -> Candidates:
        """Rank pairs with ``r_o <= r_i kh kw`` and ``r_i <= r_o kh kw`` (a larger rank could not be used)."""
        tails = relative_tails(self.kernels, "oihw", ["o|ihw", "i|ohw"])
        out_g, in_g, kh, kw = self.geometry.group_shape
        grids = [rank_grid(tails[cut].size - 1, GRID_POINTS["tucker2"]) for cut in ("o|ihw", "i|ohw")]
        r_o, r_i = (a.ravel() for a in np.meshgrid(*grids, indexing="ij"))
        usable = (r_o <= r_i * kh * kw) & (r_i <= r_o * kh * kw)
        r_o, r_i = r_o[usable], r_i[usable]
        return Candidates(list(zip(r_o.tolist(), r_i.tolist())),
                          [np.full_like(r_o, in_g), r_i, r_o, np.full_like(r_o, out_g)],
                          tails["o|ihw"][r_o] + tails["i|ohw"][r_i])

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        """``size``, an int or ``(R_o, R_i)``, caps the ranks: a mode smaller than its cap keeps its size."""
        return Tucker2Conv2d.from_conv(self.layer, size, rel_error, cutoff, **self.fit)

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return Tucker2Conv2d.from_conv(self.layer, ranks, **self.fit)


class MPSStructure(ConvStructure):
    """:class:`MPSConv2d` in the site ``order``."""

    def __init__(self, layer: nn.Conv2d, fit: Mapping[str, Any], order: str) -> None:
        super().__init__(layer, fit)
        self.order = order

    def meta(self) -> FactorizedModule:
        return MPSConv2d(**self.meta_kwargs(), bond_dims=1, order=self.order)

    def candidates(self) -> Candidates:
        """Bond triples with ``b_(k+1) <= b_k d_(k+1)`` and ``b_k <= d_(k+1) b_(k+1)`` (no redundant bond)."""
        cuts = [f"{self.order[:k + 1]}|{self.order[k + 1:]}" for k in range(3)]
        tails = relative_tails(self.kernels, "oihw", cuts)
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
        return MPSConv2d.from_conv(self.layer, self.order, size, rel_error, cutoff, **self.fit)

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return MPSConv2d.from_conv(self.layer, self.order, list(ranks), **self.fit)


class CPStructure(ConvStructure):
    """:class:`CPConv2d`; its candidates are fits at a geometric ladder of ranks, kept for :meth:`at`."""

    def meta(self) -> FactorizedModule:
        return CPConv2d(**self.meta_kwargs(), rank=1)

    def candidates(self) -> Candidates:
        """Ranks from 1 to the largest whose factors hold fewer weights than the dense kernel."""
        shape = self.geometry.group_shape
        largest = max(1, min(math.prod(shape) // max(shape), (math.prod(shape) - 1) // sum(shape)))
        ranks = np.unique(np.geomspace(1, largest, CP_LADDER).round().astype(int))
        errors = np.array([self.at((int(r),)).info.rel_error ** 2 for r in ranks])
        out_g, in_g = shape[:2]
        return Candidates([(int(r),) for r in ranks], [np.full_like(ranks, in_g), ranks, ranks, ranks,
                                                        np.full_like(ranks, out_g)], errors)

    def fixed(self, size: Any, rel_error: float | None, cutoff: float | None) -> nn.Module:
        """At rank ``size`` (capped at the exact-decomposition bound); or, given only ``rel_error``, at the
        largest rank :func:`tnlib.cp_rank` finds for a group."""
        shape = self.geometry.group_shape
        if size is None:
            search = {key: value for key, value in self.fit.items() if key in ("method", "max_iter", "tol", "seed")}
            size = max(tnlib.cp_rank(kernel.to(torch.float64), rel_error, **search).rank for kernel in self.kernels)
        return CPConv2d.from_conv(self.layer, min(size, math.prod(shape) // max(shape)), **self.fit)

    def build(self, ranks: tuple[int, ...]) -> nn.Module:
        return CPConv2d.from_conv(self.layer, ranks[0], **self.fit)


def structure_of(layer: nn.Module, method: str, fit: Mapping[str, Any], cut: str, order: str) -> Structure:
    """The structure a selected layer gets under ``method``: the method's, or the SVD split of a matrix.

    A 1x1 conv and an ``nn.Linear`` are matrices, whose best approximation by
    every method is their truncated SVD; their fit takes only the ``seed`` of
    another method's ``fit`` (its randomized solver's).
    """
    matrix_fit = fit if method == "svd" else {key: value for key, value in fit.items() if key == "seed"}
    if isinstance(layer, nn.Linear):
        return LinearStructure(layer, matrix_fit)
    if method == "svd":
        return SVDStructure(layer, fit, cut)
    if tuple(layer.kernel_size) == (1, 1):
        return SVDStructure(layer, matrix_fit, "o|ihw")
    if method == "mps":
        return MPSStructure(layer, fit, order)
    return {"tucker2": Tucker2Structure, "cp": CPStructure}[method](layer, fit)
