"""The full-kernel refit of one factorized layer to the original network, from the compressed network's inputs.

For a layer ``y = W x`` (a conv's ``W`` per group over its patch index ``(i, h, w)``, a linear
layer's over its features), with ``x`` the layer's input in the original network and ``x~`` in
the compressed one (the same samples), the factorized layer ``W~`` should minimize

    E || W x - W~ x~ ||**2 = E||W x||**2 - 2 tr(W C W~^T) + tr(W~ S W~^T),

``C = E[x x~^T]`` the cross moment and ``S = E[x~ x~^T]`` the second moment of the compressed
inputs.  With ``W* = W C S^-1`` (the best dense kernel for the compressed inputs) and
``L~ L~^T = S`` this is ``const + ||(W~ - W*) L~||_F**2``: the factorized layer of given ranks
nearest to ``W*`` in the data metric ``S``.  :func:`refit_kernel` forms ``W*`` (``S`` regularized by
``ridge`` times its mean diagonal), re-decomposes it in the metric ``S`` at the layer's ranks with
the structure that built it (:func:`tnlib_torch.compression.structures.structure_of`; Tucker-2, MPS
and CP take the Kronecker-factored form of ``S``, an SVD split the factors of its cut's two sides),
and keeps the result only if the exact error above, evaluated from the three moments, drops.

:class:`CrossMoments` accumulates ``S``, ``C`` and ``A = E[x x^T]`` in float64 over the data, per
conv group, over every output position (the unfolded patches of
:func:`tnlib_torch.compression.calibration.input_moments`).  They are full matrices over the patch
index, so a conv whose patch has more than ``max_full`` entries (``C/G kh kw``) is not refitted
this way (:func:`kernel_refittable`).  Biases are left as they are and excluded from the errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from math import prod
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tnlib_torch.compression.calibration import CHUNK_ENTRIES, DEFAULT_MAX_FULL, LayerMoments, conv_patches
from tnlib_torch.compression.structures import structure_of
from tnlib_torch.layers.chain import FactorizedModule
from tnlib_torch.layers.cp import CPConv2d
from tnlib_torch.layers.factorized import MPSConv2d, Tucker2Conv2d
from tnlib_torch.layers.svd import SVDConv2d, SVDLinear

__all__ = ["CrossMoments", "kernel_refittable", "refit_kernel"]

#: The structure each factorized layer is re-decomposed with, and the structure options it carries.
_METHODS = {Tucker2Conv2d: "tucker2", CPConv2d: "cp", MPSConv2d: "mps", SVDConv2d: "svd", SVDLinear: "svd"}


def _dims(dense: nn.Module) -> tuple[int, ...]:
    """The input-side dimensions of the dense layer's kernel: ``(C/G, kh, kw)`` or ``(in_features,)``."""
    if isinstance(dense, nn.Conv2d):
        return (dense.in_channels // dense.groups, *dense.kernel_size)
    return (dense.in_features,)


def kernel_refittable(dense: nn.Module, layer: nn.Module, max_full: int = DEFAULT_MAX_FULL) -> bool:
    """Whether :func:`refit_kernel` serves ``layer``: a factorized type it knows, a patch of ``<= max_full`` entries."""
    return type(layer) in _METHODS and prod(_dims(dense)) <= max_full


class CrossMoments:
    """``S = E[x~ x~^T]``, ``C = E[x x~^T]`` and ``A = E[x x^T]`` of one dense layer's inputs, per group, float64.

    :meth:`add` takes the layer's input batch in the compressed network (``x~``) and in the original
    one (``x``), the same samples; products are formed in float32 (float64 for float64 inputs) and
    summed in float64.
    """

    def __init__(self, dense: nn.Conv2d | nn.Linear) -> None:
        self.dense, self.dims = dense, _dims(dense)
        self.groups = dense.groups if isinstance(dense, nn.Conv2d) else 1
        size = prod(self.dims)
        options = dict(dtype=torch.float64, device=dense.weight.device)
        self.sums = {key: torch.zeros(self.groups, size, size, **options) for key in "SCA"}
        self.positions = 0

    def _rows(self, x: Tensor) -> Tensor:
        """The patches (or feature rows) of ``x`` as ``(groups, size, positions)`` in the working precision."""
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        if isinstance(self.dense, nn.Linear):
            return x.reshape(-1, x.shape[-1]).T[None]
        patches = conv_patches(self.dense, x)  # (n, G, C/G, Ho, Wo, kh, kw)
        return patches.permute(1, 2, 5, 6, 0, 3, 4).reshape(self.groups, prod(self.dims), -1)

    def add(self, x_tilde: Tensor, x: Tensor) -> None:
        per_sample = max(1, x[:1].numel() * (prod(self.dense.kernel_size) if isinstance(self.dense, nn.Conv2d) else 1))
        step = max(1, CHUNK_ENTRIES // per_sample)
        for part_tilde, part in zip(x_tilde.split(step), x.split(step)):
            rows_tilde, rows = self._rows(part_tilde), self._rows(part.to(part_tilde.device))
            for g in range(self.groups):
                self.sums["S"][g] += (rows_tilde[g] @ rows_tilde[g].T).to(torch.float64)
                self.sums["C"][g] += (rows[g] @ rows_tilde[g].T).to(torch.float64)
                self.sums["A"][g] += (rows[g] @ rows[g].T).to(torch.float64)
            self.positions += rows.shape[2]

    def means(self, name: str) -> dict[str, np.ndarray]:
        """The three averages, ``{"S", "C", "A"}: (groups, size, size)`` float64 numpy arrays."""
        means = {key: s.cpu().numpy() / max(self.positions, 1) for key, s in self.sums.items()}
        if not all(np.isfinite(m).all() for m in means.values()):
            raise ValueError(f"data: the activations at layer {name!r} are not finite (NaN or inf)")
        return means


def _group_rows(weight: Tensor, groups: int) -> np.ndarray:
    """A weight ``(out, ...)`` as ``(groups, out/G, size)`` float64."""
    w = weight.detach().to(torch.float64).cpu().numpy()
    return w.reshape(groups, w.shape[0] // groups, -1)


def squared_error(means: Mapping[str, np.ndarray], w: np.ndarray, approx: np.ndarray) -> tuple[float, float]:
    """``E||W x - W~ x~||**2`` and ``E||W x||**2`` summed over the groups (``w``, ``approx``: ``(G, out/G, size)``)."""
    energy = float(np.einsum("goa,gab,gob->", w, means["A"], w))
    cross = float(np.einsum("goa,gab,gob->", w, means["C"], approx))
    fitted = float(np.einsum("goa,gab,gob->", approx, means["S"], approx))
    return max(energy - 2 * cross + fitted, 0.0), energy


def _best_dense(means: Mapping[str, np.ndarray], w: np.ndarray, ridge: float) -> np.ndarray:
    """``W* = W C (S + lam I)^-1`` per group, ``lam = ridge * mean(diag S)``."""
    best = np.empty_like(w)
    for g, (s, c) in enumerate(zip(means["S"], means["C"])):
        lam = ridge * max(float(np.mean(np.diag(s))), np.finfo(float).tiny)
        regularized = s + lam * np.eye(s.shape[0])
        best[g] = np.linalg.solve(regularized, (w[g] @ c).T).T  # S is symmetric
    return best


def _dense_at(dense: nn.Module, weight: np.ndarray) -> nn.Module:
    """A float64 copy of the dense layer holding ``weight`` (``(out, ...)`` as the dense weight)."""
    copy = nn.Conv2d(dense.in_channels, dense.out_channels, dense.kernel_size, dense.stride, dense.padding,
                     dense.dilation, dense.groups, dense.bias is not None, dense.padding_mode, dtype=torch.float64) \
        if isinstance(dense, nn.Conv2d) else nn.Linear(dense.in_features, dense.out_features, dense.bias is not None,
                                                       dtype=torch.float64)
    with torch.no_grad():
        copy.weight.copy_(torch.from_numpy(weight).reshape(copy.weight.shape))
        if dense.bias is not None:
            copy.bias.copy_(dense.bias.detach().to(torch.float64))
    return copy


def _options(layer: FactorizedModule) -> tuple[str, str, str, tuple[int, ...]]:
    """The method, cut, order and ranks that rebuild ``layer``'s structure."""
    method = _METHODS[type(layer)]
    cut = getattr(layer, "cut", "o|ihw")
    order = getattr(layer, "order", "ihwo")
    for attribute in ("ranks", "bond_dims"):
        if hasattr(layer, attribute):
            return method, cut, order, tuple(getattr(layer, attribute))
    return method, cut, order, (layer.rank,)


def refit_kernel(name: str, dense: nn.Module, layer: FactorizedModule, cross: CrossMoments,
                 fit: Mapping[str, Any], ridge: float) -> tuple[float, float]:
    """Refit ``layer`` (in place) to ``W* = W C S^-1`` in the metric ``S``; the relative errors before, after.

    The errors are ``sqrt(E||W x - W~ x~||**2 / E||W x||**2)`` from ``cross``'s moments, biases
    excluded, of the weights as stored.  The refit is written only if it errs less (``after <=
    before``); ``fit`` holds the keywords of the layer's ``from_conv`` (a CP fit's ``seed``).
    """
    means = cross.means(name)
    w = _group_rows(dense.weight, cross.groups)
    before, energy = squared_error(means, w, _folded(layer, cross.groups))
    target = _dense_at(dense, _best_dense(means, w, ridge))
    labels = "ihw" if isinstance(dense, nn.Conv2d) else "i"
    moments = LayerMoments(name, labels, cross.dims, tuple({labels: s} for s in means["S"]), 0, cross.positions)
    method, cut, order, ranks = _options(layer)
    refitted = structure_of(target, method, fit, cut, order, moments).build(ranks)
    saved = {key: value.detach().clone() for key, value in layer.state_dict().items()}
    if {k: v.shape for k, v in refitted.state_dict().items()} != {k: v.shape for k, v in saved.items()}:
        return _relative(before, energy), _relative(before, energy)
    layer.load_state_dict({key: value.to(saved[key].dtype) for key, value in refitted.state_dict().items()})
    after, _ = squared_error(means, w, _folded(layer, cross.groups))
    if not after < before:
        layer.load_state_dict(saved)
        after = before
    return _relative(before, energy), _relative(after, energy)


def _folded(layer: FactorizedModule, groups: int) -> np.ndarray:
    with torch.no_grad():
        return _group_rows(layer.folded_weight(), groups)


def _relative(squared: float, energy: float) -> float:
    return 0.0 if energy <= 0 else math.sqrt(squared / energy)
