"""Entanglement (correlation) spectra of a tensor across its cuts.

Across a cut ``A|B`` a tensor has the Schmidt decomposition
``T = sum_k s_k u_k (x) v_k``, the SVD of its matricization ``T_(A|B)``.  The
*Schmidt weights* ``p_k = s_k**2 / sum_j s_j**2`` form a probability
distribution whose entropy measures how strongly the two sides are correlated:

* von Neumann: ``S_1 = -sum_k p_k log p_k``,
* Renyi of order ``alpha``: ``S_alpha = log(sum_k p_k**alpha) / (1 - alpha)``,
  with the limits ``S_0 = log(#{p_k > 0})`` and ``S_inf = -log(max_k p_k)``.

Entropies take an explicit ``base`` (2 by default: bits).  A zero tensor has
entropy 0 and rank 0.  A tensor of Schmidt rank ``r`` has ``S_alpha <= log r``,
with equality for a flat spectrum.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache, partial
from math import prod
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import check_array, check_choice, check_ordered, describe
from tnlib.cuts import Cut, CutLike, all_cuts, as_cut, cut_matrix_shape, resolve_labels
from tnlib.metric import Metric, check_cuts
from tnlib.svd import VALUE_METHODS, exact_method
from tnlib.truncation import TruncationSpec, tail_weights

Array = Any


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number >= 0 (or math.inf), got {alpha!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be a real number >= 0 (or math.inf), got {alpha!r}")
    return float(alpha)


def _check_base(base: Any) -> float:
    if isinstance(base, bool) or not isinstance(base, numbers.Real):
        raise TypeError(f"base must be a finite positive real number other than 1, got {base!r}")
    if not (0 < base < math.inf and base != 1):
        raise ValueError(f"base must be a finite positive real number other than 1, got {base!r}")
    return float(base)


def _checked_values(values: np.ndarray) -> np.ndarray:
    """``values`` (float64, one spectrum per row of the last axis) if finite, non-negative and descending."""
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("singular_values must be finite and non-negative")
    if np.any(np.diff(values, axis=-1) > 0):
        raise ValueError("singular_values must be in descending order")
    return values


class Spectrum:
    """Singular values of a tensor across one cut, and what follows from them.

    Parameters
    ----------
    singular_values
        Non-negative values in descending order; held on the host as float64
        (spectra are small, and plotting and JSON want them there).
    cut
        The cut they belong to (text such as ``"oi|hw"``), if any.
    matrix_shape
        ``(rows, columns)`` of the matricization.

    Examples
    --------
    >>> sp = Spectrum([1.0, 1.0, 0.0, 0.0])
    >>> sp.weights.tolist(), sp.entropy(), sp.rank_for(0.0)
    ([0.5, 0.5, 0.0, 0.0], 1.0, 2)
    """

    def __init__(
        self,
        singular_values: Iterable[float],
        cut: CutLike | None = None,
        matrix_shape: tuple[int, int] | None = None,
    ) -> None:
        if singular_values is None or isinstance(singular_values, (str, bytes, Mapping)):
            raise TypeError(
                f"singular_values must be a sequence or array of numbers, got {type(singular_values).__name__} "
                f"{singular_values!r:.40}"
            )
        if B.backend_of(singular_values) in ("torch", "cupy"):
            singular_values = B.to_host(singular_values)
        values = _checked_values(np.array(singular_values, dtype=np.float64).reshape(-1))
        values.setflags(write=False)
        self._values = values
        self.cut = None if cut is None else str(cut)
        self.matrix_shape = None if matrix_shape is None else tuple(int(d) for d in matrix_shape)

    @classmethod
    def _computed(cls, values: np.ndarray, cut: str, matrix_shape: tuple[int, int]) -> Spectrum:
        """A spectrum from values already checked by :func:`_checked_values` (the fast path of the solvers)."""
        spectrum = cls.__new__(cls)
        spectrum._values = values
        spectrum.cut, spectrum.matrix_shape = cut, matrix_shape
        return spectrum

    # -- the values and weights ---------------------------------------------

    @property
    def singular_values(self) -> np.ndarray:
        """Singular values ``s_k``, descending (read-only float64)."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    @property
    def norm(self) -> float:
        """Frobenius norm of the tensor, ``sqrt(sum_k s_k**2)`` (``inf`` only beyond the largest double)."""
        with np.errstate(over="ignore"):
            return float(np.ldexp(np.sqrt(self._tails[0]), self._exponent))

    @property
    def _exponent(self) -> int:
        """``e`` with ``s_max / 2**e`` in ``[0.5, 1)``: the unit of :attr:`_unit_squares` (0 when all are 0)."""
        return math.frexp(self._values[0])[1] if len(self._values) else 0

    @property
    def _unit_squares(self) -> np.ndarray:
        """``(s_k / 2**e)**2``: the squares in units of about ``s_max``, which neither
        overflow nor underflow whatever the scale of the values.  The weights, tails
        and ranks below are ratios, so they are computed on these; dividing by a
        power of two is exact, so in the normal range they are bit for bit those of
        the plain squares."""
        return np.ldexp(self._values, -self._exponent) ** 2

    @property
    def _tails(self) -> np.ndarray:
        """``tail[r] = sum_{k>=r} s_k**2 / 2**(2 e)``, for ``r = 0..n``."""
        return tail_weights(self._unit_squares)

    @property
    def weights(self) -> np.ndarray:
        """Schmidt weights ``p_k = s_k**2 / sum_j s_j**2`` (all zero for a zero tensor)."""
        total = self._tails[0]
        return self._unit_squares / total if total > 0 else np.zeros_like(self._values)

    @property
    def rank(self) -> int:
        """Number of non-zero singular values (the Schmidt rank)."""
        return int(np.count_nonzero(self._values))

    # -- entropies -----------------------------------------------------------

    def entropy(self, alpha: float = 1.0, base: float = 2) -> float:
        """Renyi entropy of order ``alpha`` of the Schmidt weights (von Neumann at 1).

        ``S_alpha = log(sum_k p_k**alpha) / (1 - alpha)`` in the given ``base``;
        ``alpha = 0`` gives ``log`` of the rank and ``alpha = inf`` gives
        ``-log max_k p_k``.  Zero for a zero tensor.
        """
        alpha, base = _check_alpha(alpha), _check_base(base)
        p = self.weights
        p = p[p > 0]
        if p.size == 0:
            return 0.0
        if alpha == 1.0:
            nats = float(-np.sum(p * np.log(p)))
        elif alpha == 0.0:
            nats = math.log(p.size)
        elif math.isinf(alpha):
            nats = float(-np.log(p.max()))
        else:
            nats = float(np.log(np.sum(p**alpha)) / (1.0 - alpha))
        return nats / math.log(base) if nats > 0 else 0.0

    def effective_rank(self, alpha: float = 1.0) -> float:
        """``exp(S_alpha)`` in nats: the number of equal weights with the same entropy.

        Between 1 and the rank for a non-zero tensor; ``alpha = 2`` gives the
        participation ratio ``1 / sum p_k**2`` and ``alpha = inf`` the stable
        rank ``||T||_F**2 / s_max**2``.  Zero for a zero tensor.
        """
        if self.rank == 0:
            return 0.0
        return math.exp(self.entropy(alpha, base=math.e))

    # -- truncation curves ---------------------------------------------------

    def _ranks(self, rank: int | Sequence[int] | None) -> np.ndarray:
        if rank is None:
            return np.arange(len(self) + 1)
        ranks = np.asarray(rank)
        if ranks.dtype.kind not in "iu":
            raise TypeError(f"rank must be an int or a sequence of ints, got {rank!r}")
        if np.any(ranks < 0):
            raise ValueError(f"rank must be >= 0, got {rank!r}")
        return np.minimum(ranks, len(self))

    def rel_error(self, rank: int | Sequence[int] | None = None) -> float | np.ndarray:
        """Relative error ``sqrt(sum_{k>=r} s_k**2) / ||T||`` of keeping ``r`` values.

        The Eckart-Young minimum over all rank-``r`` approximations across this
        cut.  ``rank`` may be an int, a sequence (vectorized), or ``None`` for the
        whole curve ``r = 0..n``.  Ranks beyond ``n`` give 0.
        """
        tails = self._tails
        out = np.sqrt(tails[self._ranks(rank)] / tails[0]) if tails[0] > 0 else np.zeros(np.shape(self._ranks(rank)))
        return float(out) if np.ndim(out) == 0 else out

    def norm_loss(self, rank: int | Sequence[int] | None = None) -> float | np.ndarray:
        """Norm loss ``1 - ||T_r|| / ||T||`` of keeping ``r`` values (see :meth:`rel_error`)."""
        err = np.asarray(self.rel_error(rank))
        out = 1.0 - np.sqrt(np.clip(1.0 - err**2, 0.0, 1.0))
        return float(out) if np.ndim(out) == 0 else out

    def rank_for(self, rel_error: float) -> int:
        """The smallest rank ``r`` whose :meth:`rel_error` is at most ``rel_error``."""
        return TruncationSpec.from_kwargs(rel_error=rel_error).kept_rank(self._unit_squares)

    # -- export ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (values, shape, entropy, norm)."""
        return {
            "cut": self.cut,
            "matrix_shape": None if self.matrix_shape is None else list(self.matrix_shape),
            "singular_values": self._values.tolist(),
            "norm": self.norm,
            "rank": self.rank,
            "entropy": self.entropy(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spectrum:
        """Inverse of :meth:`to_dict` (derived fields are recomputed)."""
        if not isinstance(data, Mapping) or "singular_values" not in data:
            raise ValueError(
                f"data must be a dict with at least the key 'singular_values' (as written by Spectrum.to_dict), "
                f"got {describe(data)}"
            )
        return cls(data["singular_values"], data.get("cut"), data.get("matrix_shape"))

    def __repr__(self) -> str:
        where = f" across {self.cut}" if self.cut else ""
        return f"Spectrum({len(self)} values{where}, rank={self.rank}, entropy={self.entropy():.4g} bits)"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Spectrum)
            and self.cut == other.cut
            and self.matrix_shape == other.matrix_shape
            and np.array_equal(self._values, other._values)
        )

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------------ computing


def spectrum(
    tensor: Array,
    cut: CutLike,
    labels: str | Sequence[str] | None = None,
    method: str = "auto",
    *,
    metric: Mapping[str, Array] | None = None,
) -> Spectrum:
    """The :class:`Spectrum` of ``tensor`` across ``cut``.

    ``method`` chooses the values-only solver of :func:`tnlib.singular_values`:
    ``"auto"`` (Gram eigenvalues in double precision for single-precision input,
    LAPACK for double), ``"gram"`` or ``"full"``.  With ``metric`` (see
    :func:`spectra`) the spectrum is that of ``T' = T x L^T``, in the metric's norm.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> k = np.einsum("oi,hw->oihw", np.eye(2), np.ones((3, 3)))
    >>> sp = tnlib.spectrum(k, "oi|hw")
    >>> sp.rank, round(sp.entropy(), 6)
    (1, 0.0)
    """
    (result,) = spectra(tensor, labels, cuts=[cut], method=method, metric=metric).values()
    return result


def spectra(
    tensor: Array,
    labels: str | Sequence[str] | None = None,
    cuts: Sequence[CutLike] | None = None,
    method: str = "auto",
    *,
    metric: Mapping[str, Array] | None = None,
) -> dict[str, Spectrum]:
    """Spectra of ``tensor`` across every cut (or the given ``cuts``), sharing work.

    Size-1 indices do not change a spectrum, so cuts whose matricizations
    coincide once they are dropped are computed once (the four cuts of a 1x1
    kernel that separate ``o`` from ``i``), and a cut whose side holds only
    size-1 indices has the tensor's norm as its one singular value.
    With the Gram solver, the Gram matrix of a side is obtained by partial trace
    from an already computed Gram matrix of a larger side containing it.

    A tensor whose largest entry lies outside the safe range of its dtype is
    rescaled by an exact power of two first and the values scaled back, so the
    spectra are right at any finite scale.

    With ``metric`` (``{group: M}``, see :mod:`tnlib.metric`) the spectra are
    those of ``T' = T x_G L_G^T`` (``L_G L_G^T = M_G``): the singular values
    of the best approximations in the metric's norm, whose weights, entropies
    and error curves are then in that norm.  A cut in ``cuts`` that splits a
    group is refused (``ValueError``); by default only the cuts that keep every
    group on one side are taken.

    For many tensors, :func:`tnlib.spectra_many` stacks the same-shaped ones
    and solves them together.

    Returns
    -------
    dict
        ``{str(cut): Spectrum}`` in the order of ``cuts`` (an ordered sequence;
        default :func:`tnlib.all_cuts` of the labels, which enumerates at most
        ``MAX_CUT_LABELS`` labels).
    """
    job = SpectraJob.prepare(tensor, labels, cuts, method, metric)
    (result,) = stacked_spectra(job.x[None], [job.exponent], job)
    return result


class SpectraJob:
    """One tensor's validated request: the array to decompose and how.

    ``x`` is the tensor (in the metric space when a metric is given) rescaled by
    ``2**-exponent`` into the safe range of its dtype; ``cuts`` are the cuts to
    report and ``method`` the resolved solver (``"gram"`` or ``"full"``).
    Tensors whose jobs share :attr:`key` can be stacked and solved together.
    """

    def __init__(self, x: Array, exponent: int, labels: str, cuts: list[Cut], method: str) -> None:
        self.x, self.exponent, self.labels, self.cuts, self.method = x, exponent, labels, cuts, method

    @classmethod
    def prepare(
        cls,
        tensor: Array,
        labels: str | Sequence[str] | None,
        cuts: Sequence[CutLike] | None,
        method: str,
        metric: Mapping[str, Array] | None,
        name: str = "tensor",
    ) -> SpectraJob:
        """Validate one tensor's arguments (the checks of :func:`spectra`) and resolve them."""
        x = check_array(tensor, name, min_ndim=2)
        labels = resolve_labels(labels, x.ndim)
        check_choice(method, "method", ("auto", *VALUE_METHODS))
        chosen = list(_all_cuts(labels)) if cuts is None else [as_cut(c, labels) for c in check_ordered(cuts, "cuts")]
        weights = Metric.build(metric, labels, x, None if cuts is None else partial(check_cuts, cuts=chosen))
        if weights is not None:
            chosen = _metric_cuts(weights, chosen)
            x = weights.to_metric_space(x)
        if method == "auto":
            method = exact_method(x)
        x, exponent = B.unit_scaled(x)  # exact; the values are scaled back by stacked_spectra
        return cls(x, exponent, labels, chosen, method)

    @property
    def key(self) -> tuple:
        """What tensors must share to be stacked: backend, device, dtype, shape, labels, cuts, method."""
        device = str(getattr(self.x, "device", ""))
        cuts = tuple(str(c) for c in self.cuts)
        return B.backend_of(self.x), device, B.dtype_name(self.x), tuple(self.x.shape), self.labels, cuts, self.method


@lru_cache(maxsize=64)
def _all_cuts(labels: str) -> tuple[Cut, ...]:
    """:func:`tnlib.all_cuts` of ``labels``, enumerated once (a network's kernels all share ``"oihw"``)."""
    return tuple(all_cuts(labels))


def stacked_spectra(stack: Array, exponents: Sequence[int], job: SpectraJob) -> list[dict[str, Spectrum]]:
    """The spectra of every ``stack[k] * 2**exponents[k]``, each as :func:`spectra` returns them.

    ``stack`` holds ``K`` tensors along a new first axis, each one in the safe
    range of its dtype; ``job`` gives their shared labels, cuts and method.
    Each side is solved once for the whole stack (a stacked SVD, or a stacked
    Gram matrix and eigensolve), so the cost per tensor is one call's share.
    """
    shape = tuple(stack.shape[1:])
    sides = _choose_sides(job.cuts, job.labels, dict(zip(job.labels, shape)))
    solver = _GramSpectra(stack, job.labels) if job.method == "gram" else _DirectSpectra(stack, job.labels)
    order = sorted(set(sides.values()), key=lambda side: (-solver.size(side), side))  # largest first, reproducibly
    values = {side: solver.squared_values(side) for side in order}
    scales = np.asarray(exponents, dtype=np.int64)[:, None]
    hosted = dict(zip(values, (np.ldexp(np.sqrt(v), scales) for v in _to_host_all(list(values.values())))))
    for block in hosted.values():  # each spectrum below is a read-only row of its side's block
        _checked_values(block).setflags(write=False)
    reports = [(str(c), sides[c], cut_matrix_shape(shape, c, job.labels)) for c in job.cuts]
    return [
        {text: Spectrum._computed(hosted[side][k], text, matrix_shape) for text, side, matrix_shape in reports}
        for k in range(len(scales))
    ]


def _metric_cuts(weights: Metric, cuts: list[Cut]) -> list[Cut]:
    """The cuts that keep every group of the metric whole (all of them when given explicitly, as checked)."""
    kept = [c for c in cuts if weights.compatible(c)]
    if not kept:
        raise ValueError(f"metric: every cut splits one of the groups {list(weights.groups)}; no spectrum is defined")
    return kept


def _choose_sides(cuts: list[Cut], labels: str, dims: dict[str, int]) -> dict[Cut, str]:
    """For each cut, the side whose Gram matrix is smaller, size-1 labels removed.

    Between sides of equal size the one sharing fewer labels with the sides
    already chosen wins (then the one holding the earlier label), so that more
    small sides lie inside a chosen larger one and come by partial trace: for a
    square kernel ``oh|iw`` and ``ow|ih`` become ``oh`` and ``ih``, which hold
    ``o`` and ``i``.  Mirrored cuts get the same side.
    """
    def key(side: str, used: set[str]) -> tuple:
        return prod(dims[l] for l in side), len(used & set(side)), [labels.index(l) for l in side]

    sides: dict[Cut, str] = {}
    used: set[str] = set()
    for c in cuts:
        if c in sides:
            continue
        left = "".join(l for l in labels if l in c.left and dims[l] > 1)
        right = "".join(l for l in labels if l in c.right and dims[l] > 1)
        sides[c] = min(left, right, key=partial(key, used=set(used)))
        if len(sides[c]) > 1:
            used |= set(sides[c])
    return sides


def _to_host_all(arrays: list[Array]) -> list[np.ndarray]:
    """Move many small arrays to the host (one transfer per array, clipped at 0)."""
    return [np.clip(B.to_host(a).astype(np.float64), 0.0, None) for a in arrays]


def _adjoint(m: Array) -> Array:
    """The conjugate transpose of each matrix of a stack (no conjugation for real dtypes)."""
    swapped = ar.do("swapaxes", m, -1, -2)
    return ar.do("conj", swapped) if B.is_complex(m) else swapped


def _stacked_svdvals(m: Array) -> Array:
    """Singular values of each matrix of a stack ``(K, rows, columns)``, descending along the last axis.

    One batched LAPACK call (NumPy's stacked ``gesdd``, torch's or cupy's
    batched SVD) on the matrices in their tall orientation (their transposes
    when wide: the same values, and NumPy's copy into LAPACK's column-major
    layout is then a plain one); if it fails to converge, each matrix again
    through :func:`tnlib._backend.svdvals`, which falls back to ``gesvd``.  A
    stack of one goes straight to :func:`tnlib._backend.svdvals`.
    """
    if m.shape[0] > 1:
        tall = ar.do("swapaxes", m, -1, -2) if m.shape[1] < m.shape[2] else m
        try:
            return np.linalg.svd(tall, compute_uv=False) if B.backend_of(m) == "numpy" else B.svdvals(tall)
        except (np.linalg.LinAlgError, RuntimeError):  # torch's LinAlgError is a RuntimeError
            pass
    return ar.do("stack", [B.svdvals(a) for a in m])


class _DirectSpectra:
    """Squared singular values of each side's matricization by LAPACK, for a stack of tensors.

    ``x`` holds the tensors along its first axis; every result has one row per tensor.
    """

    def __init__(self, x: Array, labels: str) -> None:
        self.x, self.labels = x, labels
        self.dims = dict(zip(labels, x.shape[1:]))

    def size(self, side: str) -> int:
        return prod(self.dims[l] for l in side)

    def matrices(self, side: str) -> Array:
        """``(K, size(side), rest)``: each tensor matricized with ``side`` as its rows."""
        order = side + "".join(l for l in self.labels if l not in side)
        moved = ar.do("transpose", self.x, (0, *(1 + self.labels.index(l) for l in order)))
        return ar.do("reshape", moved, (self.x.shape[0], self.size(side), -1))

    def squared_values(self, side: str) -> Array:
        if self.size(side) == 1:  # vectors: the one singular value is the norm
            w = B.astype(self.x, B.WORKING_DTYPES[B.dtype_name(self.x)])
            return ar.do("sum", ar.do("abs", ar.do("reshape", w, (w.shape[0], 1, -1))) ** 2, axis=2)
        s = _stacked_svdvals(self.matrices(side))
        return B.astype(s, B.WORKING_DTYPES[B.real_dtype_name(self.x)]) ** 2


class _GramSpectra(_DirectSpectra):
    """Squared singular values as eigenvalues of Gram matrices, shared by partial traces.

    ``G_S = T_(S|rest) T_(S|rest)^H`` for a side ``S``; for ``S`` inside a larger
    side ``S'`` already computed, ``G_S`` is the partial trace of ``G_S'`` over
    the labels of ``S'`` not in ``S``.  Sides are visited from the largest down.
    Each step is one stacked product or eigensolve for all the tensors.
    """

    def __init__(self, x: Array, labels: str) -> None:
        super().__init__(B.astype(x, B.WORKING_DTYPES[B.dtype_name(x)]), labels)
        self.grams: dict[str, Array] = {}

    def squared_values(self, side: str) -> Array:
        if self.size(side) == 1:
            return super().squared_values(side)
        gram = self._gram(side)
        self.grams[side] = gram
        return ar.do("flip", ar.do("linalg.eigvalsh", gram), (1,))

    def _gram(self, side: str) -> Array:
        supersets = [s for s in self.grams if set(side) <= set(s)]
        if supersets:
            return self._partial_trace(min(supersets, key=self.size), side)
        m = self.matrices(side)
        return m @ _adjoint(m)

    def _partial_trace(self, superset: str, side: str) -> Array:
        letters = {l: chr(ord("b") + i) for i, l in enumerate(superset)}  # "a" runs over the stack
        rows = "a" + "".join(letters[l] for l in superset)
        cols = "".join(letters[l] if l not in side else letters[l].upper() for l in superset)
        out = "a" + "".join(letters[l] for l in side) + "".join(letters[l].upper() for l in side)
        shape = [self.dims[l] for l in superset]
        count = self.x.shape[0]
        g = ar.do("reshape", self.grams[superset], (count, *shape, *shape))
        traced = ar.do("einsum", f"{rows}{cols}->{out}", g)
        return ar.do("reshape", traced, (count, self.size(side), self.size(side)))
