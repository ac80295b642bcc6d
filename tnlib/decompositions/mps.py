"""Matrix product states (tensor trains) of tensors with labelled indices.

A tensor ``T`` whose indices are taken in a chosen ``order`` is written as a
chain of three-index cores,

    T[i_1, ..., i_N] = G_1[:, i_1, :] @ G_2[:, i_2, :] @ ... @ G_N[:, i_N, :],

``G_k`` of shape ``(r_{k-1}, d_k, r_k)`` with ``r_0 = r_N = 1``.  The inner
``r_k`` are the bond dimensions.  An index can first be *split* into several
sites (``d = d' d''``, row-major), the quantized tensor train.

The bond between sites ``k`` and ``k+1`` is the cut ``order[:k+1] | order[k+1:]``
of the dense tensor: in mixed canonical form with its orthogonality centre at
site ``k`` (cores left of it left-orthonormal, right of it right-orthonormal)
the singular values of the centre core, matricized as ``(r_{k-1} d_k, r_k)``,
are exactly the Schmidt values of the dense tensor across that cut.  This is
the bridge between the cut picture of :mod:`tnlib.spectrum` and the MPS picture:
bond spectra are computed from the cores, without forming the dense tensor.

TT-SVD (Oseledets 2011) sweeps left to right, truncating one bond at a time.
Its left cores are orthonormal, so the errors of the bonds are orthogonal and
add in squares: ``||T - T~||**2 = sum_k e_k**2``.  With ``rel_error`` the budget
``(rel_error ||T||)**2`` is spent bond by bond, each bond allowed an equal share
of what is left, which guarantees ``||T - T~|| <= rel_error ||T||``.
"""

from __future__ import annotations

import cmath
import math
import numbers
import string
from collections.abc import Sequence
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import (
    check_array,
    check_ordered,
    check_positive_int,
    check_same_backend,
)
from tnlib.cuts import Cut, resolve_labels
from tnlib.decompositions.base import ErrorBudget, FactorizedTensor
from tnlib.spectrum import Spectrum
from tnlib.svd import singular_values_checked
from tnlib.truncation import TruncationInfo, TruncationSpec

Array = Any


class MPS(FactorizedTensor):
    """A tensor as a matrix product state (tensor train) of three-index cores.

    Build one with :func:`tnlib.mps` (from a dense tensor) or
    :meth:`MPS.from_cores`.  Cores stay in the backend and device they came in.

    Attributes
    ----------
    cores
        ``G_k`` of shape ``(left bond, site dim, right bond)``, in chain order.
    labels
        Labels of the dense tensor's indices, in its own order.
    order
        The labels in chain order.
    shape
        Shape of the dense tensor (in ``labels`` order).
    factors
        For each label of ``order``, the site dimensions it is split into.
    info
        :class:`TruncationInfo` of the decomposition that built it (``None``
        for :meth:`from_cores`).
    """

    def __init__(
        self,
        cores: Sequence[Array],
        labels: str,
        order: str,
        shape: Sequence[int],
        factors: Sequence[Sequence[int]],
        info: TruncationInfo | None = None,
    ) -> None:
        self.cores = list(cores)
        self.labels, self.order = labels, order
        self.shape = tuple(int(d) for d in shape)
        self.factors = tuple(tuple(int(d) for d in f) for f in factors)
        self.info = info
        # cores[:_left] are left-orthonormal, cores[_right:] right-orthonormal
        self._left, self._right = 0, len(self.cores)

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_cores(cls, cores: Sequence[Array], labels: str | Sequence[str] | None = None) -> MPS:
        """An MPS from its cores, one label per site (default ``"abc..."``).

        Raises ``ValueError`` unless every core has three indices, the outer
        bonds are 1 and neighbouring bonds match.
        """
        cores = [check_array(core, f"cores[{k}]", ndim=3) for k, core in enumerate(check_ordered(cores, "cores"))]
        if not cores:
            raise ValueError("cores must hold at least one core")
        check_same_backend(cores, "cores", reference_name="cores[0]")
        if cores[0].shape[0] != 1 or cores[-1].shape[2] != 1:
            raise ValueError(
                f"the outer bonds must be 1: cores[0] has left bond {cores[0].shape[0]}, "
                f"cores[-1] has right bond {cores[-1].shape[2]}"
            )
        for k in range(len(cores) - 1):
            if cores[k].shape[2] != cores[k + 1].shape[0]:
                raise ValueError(
                    f"bond {k} does not match: cores[{k}] has right bond {cores[k].shape[2]}, "
                    f"cores[{k + 1}] has left bond {cores[k + 1].shape[0]}"
                )
        dims = [core.shape[1] for core in cores]
        if labels is None and len(cores) > 26:
            raise ValueError(f"labels must be given for {len(cores)} (> 26) cores")
        labels = resolve_labels(string.ascii_lowercase[: len(cores)] if labels is None else labels, len(cores))
        return cls(cores, labels, labels, dims, [(d,) for d in dims])

    def copy(self) -> MPS:
        """A shallow copy (the core arrays are shared; operations never modify them in place)."""
        out = MPS(self.cores, self.labels, self.order, self.shape, self.factors, self.info)
        out._left, out._right = self._left, self._right
        return out

    # -- shape facts -----------------------------------------------------------

    @property
    def num_sites(self) -> int:
        return len(self.cores)

    @property
    def site_dims(self) -> tuple[int, ...]:
        return tuple(core.shape[1] for core in self.cores)

    @property
    def bond_dims(self) -> tuple[int, ...]:
        """The ``N - 1`` inner bond dimensions."""
        return tuple(core.shape[2] for core in self.cores[:-1])

    @property
    def num_params(self) -> int:
        """Number of stored entries, ``sum_k r_{k-1} d_k r_k``."""
        return sum(math.prod(core.shape) for core in self.cores)

    @property
    def center(self) -> int | None:
        """The orthogonality centre, when the MPS is in (mixed) canonical form."""
        return self._left if self._right == self._left + 1 else None

    def _site_labels(self) -> list[str]:
        return [label for label, f in zip(self.order, self.factors) for _ in f]

    def bond_cut(self, bond: int) -> Cut | None:
        """The cut of the dense tensor that bond ``bond`` spans (``None`` inside a split index)."""
        self._check_bond(bond)
        sites = self._site_labels()
        if sites[bond] == sites[bond + 1]:
            return None
        left = "".join(dict.fromkeys(sites[: bond + 1]))
        return Cut(f"{left}|{''.join(c for c in self.order if c not in left)}")

    def _check_bond(self, bond: int) -> None:
        if isinstance(bond, bool) or not isinstance(bond, numbers.Integral) or not 0 <= bond < self.num_sites - 1:
            raise ValueError(f"bond must be an integer in [0, {self.num_sites - 2}], got {bond!r}")

    # -- dense form ------------------------------------------------------------

    def to_dense(self) -> Array:
        """The dense tensor, in the original label order and shape."""
        first = self.cores[0]
        t = ar.do("reshape", first, (first.shape[1], first.shape[2]))
        for core in self.cores[1:]:
            left, dim, right = core.shape
            t = ar.do("reshape", t @ ar.do("reshape", core, (left, dim * right)), (-1, right))
        merged = ar.do("reshape", t, tuple(math.prod(f) for f in self.factors))
        return ar.do("transpose", merged, [self.order.index(c) for c in self.labels])

    # -- canonical forms -------------------------------------------------------

    def canonicalize(self, center: int) -> MPS:
        """Bring the MPS to mixed canonical form around site ``center``, in place.

        Cores left of ``center`` become left-orthonormal (``sum_{a,d} G[a,d,b]^*
        G[a,d,c] = delta_bc``), cores right of it right-orthonormal, by QR
        sweeps.  The represented tensor is unchanged.  The centre is tracked,
        so moving it by one site costs one QR.  Returns ``self``.
        """
        if isinstance(center, bool) or not isinstance(center, numbers.Integral) or not 0 <= center < self.num_sites:
            raise ValueError(f"center must be an integer in [0, {self.num_sites - 1}], got {center!r}")
        for k in range(self._left, center):
            left, dim, right = self.cores[k].shape
            q, r = ar.do("linalg.qr", ar.do("reshape", self.cores[k], (left * dim, right)))
            self.cores[k] = ar.do("reshape", q, (left, dim, q.shape[1]))
            self.cores[k + 1] = ar.do("einsum", "ab,bdc->adc", r, self.cores[k + 1])
        for k in range(self._right - 1, center, -1):
            left, dim, right = self.cores[k].shape
            q, r = ar.do("linalg.qr", ar.do("reshape", self.cores[k], (left, dim * right)).T)
            self.cores[k] = ar.do("reshape", q.T, (q.shape[1], dim, right))
            self.cores[k - 1] = ar.do("einsum", "adb,cb->adc", self.cores[k - 1], r)
        self._left, self._right = center, center + 1
        return self

    def norm(self) -> float:
        """``||T||_F``, from the centre core of the canonical form."""
        self.canonicalize(self.center if self.center is not None else 0)
        return B.frobenius_norm(self.cores[self.center])

    def inner(self, other: MPS) -> complex | float:
        """``<self, other> = sum conj(self) * other`` by contracting the chain (never dense)."""
        self._check_compatible(other, "other")
        env = None
        for a, b in zip(self.cores, other.cores):
            a = ar.do("conj", a) if B.is_complex(a) else a
            if env is None:
                env = ar.do("einsum", "adc,ade->ce", a, b)
            else:
                env = ar.do("einsum", "ab,adc,bde->ce", env, a, b)
        value = B.to_host(env).reshape(-1)[0]
        return complex(value) if np.iscomplexobj(value) else float(value)

    # -- spectra ---------------------------------------------------------------

    def bond_spectrum(self, bond: int) -> Spectrum:
        """Schmidt values across bond ``bond`` (between sites ``bond`` and ``bond + 1``).

        Read off the centre core of the mixed canonical form (moved in place),
        never densifying.  Equal to ``tnlib.spectrum(T, self.bond_cut(bond))``
        when the bond spans a cut.
        """
        self._check_bond(bond)
        self.canonicalize(bond)
        left, dim, right = self.cores[bond].shape
        values = B.to_host(singular_values_checked(ar.do("reshape", self.cores[bond], (left * dim, right))))
        values = np.clip(values.astype(np.float64), 0.0, None)
        rows = math.prod(self.site_dims[: bond + 1])
        cut = self.bond_cut(bond)
        return Spectrum(values, cut, (rows, math.prod(self.site_dims) // rows))

    def bond_spectra(self) -> list[Spectrum]:
        """:meth:`bond_spectrum` of every bond, in one sweep."""
        return [self.bond_spectrum(k) for k in range(self.num_sites - 1)]

    def entropies(self, alpha: float = 1.0, base: float = 2) -> list[float]:
        """Renyi entropy (von Neumann at ``alpha = 1``) across every bond."""
        return [sp.entropy(alpha, base) for sp in self.bond_spectra()]

    # -- compression -------------------------------------------------------------

    def round(
        self,
        max_bond: int | Sequence[int] | None = None,
        rel_error: float | None = None,
        cutoff: float | None = None,
    ) -> MPS:
        """A compressed copy: truncated SVDs sweeping right to left from the left-canonical form.

        Every truncation happens at the orthogonality centre, so its error is
        exact and the errors add in squares; ``rel_error`` (relative to this
        MPS's norm) is guaranteed as in TT-SVD.  The result is right-canonical
        (centre 0) and its ``info`` reports the realized error.
        """
        bounds = _bond_bounds(max_bond, self.num_sites - 1)
        spec = TruncationSpec.from_kwargs(None, rel_error, cutoff)
        out = self.copy().canonicalize(self.num_sites - 1)
        budget = ErrorBudget(out.norm(), spec.rel_error, self.num_sites - 1)
        steps = []
        for k in range(self.num_sites - 1, 0, -1):
            left, dim, right = out.cores[k].shape
            matrix = ar.do("reshape", out.cores[k], (left, dim * right))
            u, s, vh, info = budget.truncate(matrix, bounds[k - 1], spec.cutoff, "full")
            out.cores[k] = ar.do("reshape", vh, (vh.shape[0], dim, right))
            out.cores[k - 1] = ar.do("einsum", "adb,bc->adc", out.cores[k - 1], u * s[None, :])
            steps.append(info)
        out._left, out._right = 0, 1
        out.info = budget.report(steps[::-1])
        return out

    # -- algebra -----------------------------------------------------------------

    def _check_compatible(self, other: Any, name: str) -> None:
        if not isinstance(other, MPS):
            raise TypeError(f"{name} must be an MPS, got {type(other).__name__}")
        check_same_backend(other.cores, f"{name}'s cores", self.cores[0], "this MPS's cores")
        if (other.site_dims, other.labels, other.order, other.shape) != (
            self.site_dims, self.labels, self.order, self.shape
        ):
            raise ValueError(
                f"{name} must have the same sites, labels and order: {other.site_dims} {other.order!r} "
                f"against {self.site_dims} {self.order!r}"
            )

    def __add__(self, other: MPS) -> MPS:
        """The sum as an MPS whose bonds are the direct sums of the two (``r + r'``)."""
        self._check_compatible(other, "other")
        if self.num_sites == 1:
            cores = [self.cores[0] + other.cores[0]]
        else:
            cores = []
            for k, (a, b) in enumerate(zip(self.cores, other.cores)):
                first, last = k == 0, k == self.num_sites - 1
                left = (0, 1) if first else (a.shape[0], b.shape[0])
                right = (0, 1) if last else (a.shape[2], b.shape[2])
                cores.append(_embed(a, 0, left, right) + _embed(b, 1, left, right))
        return MPS(cores, self.labels, self.order, self.shape, self.factors)

    def __mul__(self, scalar: float | complex) -> MPS:
        """The MPS times a finite scalar (on the centre core, keeping the canonical form)."""
        if not isinstance(scalar, numbers.Number) or isinstance(scalar, bool):
            return NotImplemented
        if not cmath.isfinite(complex(scalar)):
            raise ValueError(f"scalar must be finite to multiply an MPS, got {scalar!r}")
        out = self.copy()
        site = self.center if self.center is not None else 0
        out.cores[site] = out.cores[site] * scalar
        return out

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"MPS(order={self.order!r}, site_dims={self.site_dims}, bond_dims={self.bond_dims})"


def _embed(core: Array, which: int, left: tuple[int, int], right: tuple[int, int]) -> Array:
    """``core`` placed as block ``which`` (0 or 1) of the direct sum of two MPS's bonds.

    ``left`` and ``right`` hold the two MPS's bond sizes on each side; ``(0, 1)``
    marks an outer bond of size 1, which the sum shares rather than stacks.
    """

    def selector(sizes: tuple[int, int]) -> np.ndarray:
        if sizes == (0, 1):
            return np.ones((1, 1))
        start = 0 if which == 0 else sizes[0]
        return np.eye(sum(sizes))[:, start : start + sizes[which]]

    return ar.do(
        "einsum", "ia,adb,jb->idj", B.from_numpy(selector(left), like=core), core,
        B.from_numpy(selector(right), like=core),
    )


def _bond_bounds(max_bond: int | Sequence[int] | None, bonds: int) -> list[int | None]:
    if max_bond is None:
        return [None] * bonds
    if isinstance(max_bond, (list, tuple, np.ndarray)):
        if len(max_bond) != bonds:
            raise ValueError(f"max_bond must be an int or one int per bond ({bonds} bonds), got {len(max_bond)}")
        return [check_positive_int(b, "max_bond") for b in max_bond]
    return [check_positive_int(max_bond, "max_bond")] * bonds
