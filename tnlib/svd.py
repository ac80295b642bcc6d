"""Truncated singular value decomposition on any backend.

``truncated_svd`` returns the leading singular triplets of a matrix ``A`` (m x n)
chosen by the shared truncation vocabulary (:mod:`tnlib.truncation`).  By the
Eckart-Young theorem the rank-``r`` truncation ``U_r diag(S_r) Vh_r`` minimizes
``||A - B||_F`` over all matrices ``B`` of rank ``<= r``, with minimum
``sqrt(sum_{k>=r} s_k**2)``.

Methods (a registry: every entry is tested by looping over ``SVD_METHODS``):

``"full"``
    LAPACK divide-and-conquer (``gesdd``) with a fallback to the QR-iteration
    driver (``gesvd``) when it fails to converge.  Exact to working precision.
``"gram"``
    Eigendecomposition of the smaller Gram matrix ``A A^H`` or ``A^H A``,
    formed in double precision.  Costs one matrix product plus an eigensolve of
    size ``min(m, n)``: the fastest exact route for very rectangular matrices and
    for singular values alone.  Accuracy: squaring the matrix squares its
    condition number, so ``s_k`` carries a relative error of about
    ``eps64 * (s_max / s_k)**2`` -- below ``1e-4`` for ``s_k >= 1e-6 s_max``,
    better than a single-precision SVD for float32 input, but values far below
    that lose their relative accuracy.  When the kept values reach below
    ``1e-6 s_max`` the factors are taken from the ``"full"`` method instead.
``"randomized"``
    Halko, Martinsson and Tropp (2011), Algorithm 4.4: a Gaussian sketch with
    ``oversample`` extra columns and ``power_iters`` power iterations, the basis
    re-orthonormalized after every product (by whitening with the eigenvectors
    of its small Gram matrix, twice at the end, as in CholeskyQR2), then the
    exact SVD of the small projected matrix (Rayleigh-Ritz).  Needs
    ``max_rank``.  Seeded and deterministic for a given ``seed``.
``"auto"``
    With ``max_rank``: ``"randomized"`` when a flop model says it is at least
    twice cheaper than ``"gram"`` (a Gram product and an eigensolve of size
    ``min(m, n)``, against ``2 power_iters + 2`` products with a sketch of
    ``max_rank + oversample`` columns), so that the exact result is kept
    whenever it is affordable; otherwise ``"gram"``.  Without ``max_rank``:
    ``"gram"`` for single-precision input and ``"full"`` for double precision.

All methods project ``A`` orthogonally onto the kept left singular subspace, so
the reported error ``||A - U S Vh||_F**2 = ||A||_F**2 - sum_kept s_k**2`` holds
exactly in exact arithmetic.  In floating point, ``"full"`` reports it to
machine precision; ``"gram"`` and ``"randomized"`` obtain the discarded weight
by subtraction or from eigenvalues, so small errors are reported to an absolute
accuracy of about ``1e-8`` (the square root of double-precision epsilon).

Signs are deterministic: in each column of ``U`` the entry of largest magnitude
is real and positive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import check_array, check_choice, check_nonnegative_int, check_seed
from tnlib.metric import matrix_square_roots
from tnlib.truncation import TruncationInfo, TruncationSpec

Array = Any

#: Kept singular values below this fraction of ``s_max`` are not resolved to a
#: relative accuracy of 1e-4 by a Gram eigensolve in double precision.
GRAM_RELIABLE_FRACTION = 1e-6

_SINGLE_PRECISION = ("float32", "complex64")

#: Default extra sketch columns and power iterations of ``"randomized"``.
OVERSAMPLE, POWER_ITERS = 15, 4

#: The largest ``oversample`` and ``power_iters`` accepted.  A few power
#: iterations already resolve all but the flattest spectra (the error of the
#: sketch shrinks like ``(s_{k+1} / s_k)**(2 q + 1)``), so a bound of a few
#: dozen costs nothing useful and turns a typo such as ``10**9`` into an error
#: instead of a hang.
MAX_OVERSAMPLE, MAX_POWER_ITERS = 1000, 32


def _flip(x: Array) -> Array:
    """Reverse the last axis (eigensolvers return ascending order)."""
    return ar.do("flip", x, (x.ndim - 1,))


def _fix_signs(u: Array, vh: Array) -> tuple[Array, Array]:
    """Rotate each singular pair so that the largest-magnitude entry of ``u_k`` is real positive."""
    k = u.shape[1]
    if k == 0:
        return u, vh
    rows = ar.do("argmax", ar.do("abs", u), axis=0)
    pivots = u[rows, B.from_numpy(np.arange(k), like=u)]
    if B.is_complex(u):
        phase = pivots / ar.do("abs", pivots)
        return u * ar.do("conj", phase)[None, :], vh * phase[:, None]
    signs = ar.do("sign", pivots)
    return u * signs[None, :], vh * signs[:, None]


# ----------------------------------------------------------------- the methods


def _squared_values_full(a: Array) -> Array:
    s = B.svdvals(a)
    return B.astype(s, B.WORKING_DTYPES[B.real_dtype_name(a)]) ** 2


def _gram(a: Array) -> tuple[Array, bool]:
    """The smaller Gram matrix in working precision, and whether it is ``A A^H``."""
    w = B.astype(a, B.WORKING_DTYPES[B.dtype_name(a)])
    wh = B.conj_transpose(w)
    left = a.shape[0] <= a.shape[1]
    return (w @ wh if left else wh @ w), left


def _squared_values_gram(a: Array) -> Array:
    gram, _ = _gram(a)
    return ar.do("clip", _flip(ar.do("linalg.eigvalsh", gram)), 0.0, None)


def _svd_full(a, spec, rng, oversample, power_iters):
    u, s, vh = B.svd(a)
    sq = B.to_host(s).astype(np.float64) ** 2
    rank = spec.kept_rank(sq)
    return u[:, :rank], s[:rank], vh[:rank], TruncationInfo.from_spectrum(sq, rank)


def _svd_gram(a, spec, rng, oversample, power_iters):
    gram, left = _gram(a)
    evals, evecs = ar.do("linalg.eigh", gram)
    evals = ar.do("clip", _flip(evals), 0.0, None)
    sq = B.to_host(evals).astype(np.float64)
    rank = spec.kept_rank(sq)
    info = TruncationInfo.from_spectrum(sq, rank)
    if rank and sq[rank - 1] <= (GRAM_RELIABLE_FRACTION**2) * sq[0]:  # also a zero matrix
        u, s, vh, _ = _svd_full(a, TruncationSpec(max_rank=rank), rng, oversample, power_iters)
        return u, s, vh, info
    basis = _flip(evecs)[:, :rank]
    s = ar.do("sqrt", evals[:rank])
    w = B.astype(a, B.dtype_name(gram))
    if left:  # A = U S Vh with U the Gram eigenvectors: Vh = S^-1 U^H A
        u, vh = basis, (B.conj_transpose(basis) @ w) / s[:, None]
    else:  # A^H A = V S^2 V^H: U = A V S^-1
        u, vh = (w @ basis) / s[None, :], B.conj_transpose(basis)
    dtype = B.dtype_name(a)
    return B.astype(u, dtype), B.astype(s, B.real_dtype_name(a)), B.astype(vh, dtype), info


def _orthonormal_basis(y: Array, passes: int = 1, precise: bool = True) -> Array:
    """Columns spanning the range of ``y``, orthonormalized by whitening.

    Each pass whitens ``y`` with the eigendecomposition of its small Gram matrix
    ``y^H y = V diag(l) V^H``: ``y <- y V l^-1/2``.  One pass gives a
    well-conditioned basis (orthogonal to about ``eps * l_max / l_min``); a
    second makes it orthonormal to working precision, as in CholeskyQR2.
    Unlike Householder QR this is all matrix products.

    ``precise=True`` works in double precision and drops the directions with
    ``l_k <= 1e-13 l_max``, which are rounding noise (so rank deficiency is
    handled).  ``precise=False`` forms the Gram matrix in the input's own
    precision and keeps every direction, clamping ``l`` from below: enough to
    keep the power iteration's basis well-conditioned, at a fraction of the
    cost for single-precision input.
    """
    dtype = B.dtype_name(y)
    for _ in range(passes):
        if y.shape[1] == 0:
            break
        w = B.astype(y, B.WORKING_DTYPES[dtype]) if precise else y
        evals, evecs = ar.do("linalg.eigh", B.astype(B.conj_transpose(w) @ w, B.WORKING_DTYPES[dtype]))
        host = B.to_host(evals)
        top = max(float(host[-1]), 0.0)
        if precise or top == 0.0:  # drop the noise (all of it for a zero y)
            first = int(np.count_nonzero(host <= _RANGE_TOLERANCE * top))
            evals, evecs = evals[first:], evecs[:, first:]
        else:
            evals = ar.do("clip", evals, _RANGE_TOLERANCE * top, None)
        y = B.astype(w @ B.astype(evecs / ar.do("sqrt", evals)[None, :], B.dtype_name(w)), dtype)
    return y


_RANGE_TOLERANCE = 1e-13


def _svd_randomized(a, spec, rng, oversample, power_iters):
    if spec.max_rank is None:
        raise ValueError("method='randomized' needs max_rank (the rank to sketch for)")
    m, n = a.shape
    width = min(spec.max_rank + oversample, m, n)
    sample_dtype = np.float32 if B.real_dtype_name(a) == "float32" else np.float64
    omega = B.from_numpy(rng.standard_normal((n, width), dtype=sample_dtype), like=a)
    ah = B.conj_transpose(a)
    q = _orthonormal_basis(a @ omega, precise=False)
    for _ in range(power_iters):
        q = _orthonormal_basis(a @ _orthonormal_basis(ah @ q, precise=False), precise=False)
    q = _orthonormal_basis(q, passes=2)  # orthonormal to working precision, null directions dropped
    if q.shape[1] == 0:  # the sketch found no range: a zero matrix
        return _svd_full(a, spec, rng, oversample, power_iters)
    # Rayleigh-Ritz: the exact SVD of the small projection B = Q^H A
    ub, s, vh, _ = _svd_gram(B.conj_transpose(q) @ a, TruncationSpec(), rng, oversample, power_iters)
    total_sq = B.frobenius_norm(a) ** 2
    sq = B.to_host(s).astype(np.float64) ** 2
    rank = spec.kept_rank(sq, total_sq)
    info = TruncationInfo.from_spectrum(sq, rank, total_sq)
    return q @ ub[:, :rank], s[:rank], vh[:rank], info


SVD_METHODS: dict[str, Callable] = {
    "full": _svd_full,
    "gram": _svd_gram,
    "randomized": _svd_randomized,
}

VALUE_METHODS: dict[str, Callable[[Array], Array]] = {
    "full": _squared_values_full,
    "gram": _squared_values_gram,
}


def exact_method(a: Array) -> str:
    """The exact values solver ``"auto"`` means: Gram (in double) for single precision, else LAPACK."""
    return "gram" if B.dtype_name(a) in _SINGLE_PRECISION else "full"


def _auto_method(a: Array, spec: TruncationSpec, oversample: int, power_iters: int) -> str:
    """``"randomized"`` when a flop model makes it ``SKETCH_ADVANTAGE`` times cheaper than ``"gram"``."""
    if spec.max_rank is None:
        return exact_method(a)
    short, long = sorted(a.shape)
    width = min(spec.max_rank + oversample, short)
    gram_cost = 2 * short**2 * long + GRAM_EIGH_FLOPS * short**3
    sketch_cost = 2 * (2 * power_iters + 2) * short * long * width + 4 * (2 * power_iters + 3) * long * width**2
    return "randomized" if width < short and SKETCH_ADVANTAGE * sketch_cost < gram_cost else "gram"


#: How many times cheaper (by the flop model) the sketch must be before ``"auto"``
#: gives up the exact Gram route for the near-optimal randomized one.
SKETCH_ADVANTAGE = 2

#: Flops per ``n**3`` charged for a dense symmetric eigensolve with vectors
#: (tridiagonal reduction, much of it memory-bound, and back-transformation).
GRAM_EIGH_FLOPS = 20


# ------------------------------------------------------------------ public API


def truncated_svd(
    m: Array,
    max_rank: int | None = None,
    rel_error: float | None = None,
    cutoff: float | None = None,
    method: str = "auto",
    seed: int | np.random.Generator | None = None,
    *,
    oversample: int = OVERSAMPLE,
    power_iters: int = POWER_ITERS,
    metric: Array | None = None,
) -> tuple[Array, Array, Array, TruncationInfo]:
    """Truncated SVD ``m ~= U @ diag(S) @ Vh`` on the array's own backend and device.

    Parameters
    ----------
    m
        Matrix of shape ``(M, N)``: numpy, cupy or torch; float32, float64,
        complex64 or complex128.
    max_rank, rel_error, cutoff
        The truncation vocabulary (:mod:`tnlib.truncation`): at most
        ``max_rank`` triplets; the fewest triplets with ``||m - U S Vh||_F <=
        rel_error * ||m||_F``; drop ``s_k < cutoff * s_max``.  Combined, the
        smallest rank wins.  None given: the full thin SVD.
    method
        ``"auto"``, ``"full"``, ``"gram"`` or ``"randomized"`` (see module docs).
    seed
        Seed or ``numpy.random.Generator`` for ``"randomized"``.
    oversample, power_iters
        Extra sketch columns (at most ``MAX_OVERSAMPLE = 1000``) and power
        iterations (at most ``MAX_POWER_ITERS = 32``) of ``"randomized"``.
    metric
        A right metric: one real symmetric positive semi-definite ``(N, N)``
        matrix ``M`` over the columns (a matrix has no labels), e.g. the second
        moment ``E[x x^T]`` of the inputs of ``y = m x``.  Everything is then in
        the norm ``||X||_M = ||X L||_F`` with ``L L^T = M`` (regularized as in
        :mod:`tnlib.metric`): the result is the truncated SVD ``U S Vh'`` of
        ``m L``, mapped back as ``Vh = Vh' L^{-1}``, the best rank-``r``
        approximation of ``m`` in that norm; ``rel_error`` and the report are
        in that norm.  Computed in working precision (float64 for float32).

    Returns
    -------
    U : array (M, r)
        Orthonormal columns, same backend, device and dtype as ``m``.
    S : array (r,)
        Singular values, descending, real dtype of ``m``.
    Vh : array (r, N)
        Orthonormal rows; with ``metric``, ``M``-orthonormal rows instead
        (``Vh M Vh^H = I`` for the regularized ``M``).
    info : TruncationInfo
        Kept rank, realized relative error, norm loss, discarded weight.

    Notes
    -----
    With ``rel_error`` and an exact method (``"full"``, or ``"gram"`` when the
    kept values stay above ``1e-7 s_max``) the target is guaranteed.  With
    ``"randomized"`` the reported error is exact but the kept subspace is only
    near-optimal.

    Right at any finite scale: a matrix whose largest entry lies outside
    ``2**+-256`` (``2**+-32`` in single precision) is multiplied by an exact
    power of two first and ``S`` scaled back, so no square overflows or
    underflows and ranks and errors are those of the unscaled math.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> a = np.diag([3.0, 2.0, 1.0, 0.0])
    >>> U, S, Vh, info = tnlib.truncated_svd(a, rel_error=0.5)
    >>> S.tolist(), info.rank, round(info.rel_error, 4)
    ([3.0, 2.0], 2, 0.2673)
    """
    a = check_array(m, "m", ndim=2)
    spec = TruncationSpec.from_kwargs(max_rank, rel_error, cutoff)
    check_choice(method, "method", ("auto", *SVD_METHODS))
    oversample = check_nonnegative_int(oversample, "oversample", MAX_OVERSAMPLE)
    power_iters = check_nonnegative_int(power_iters, "power_iters", MAX_POWER_ITERS)
    rng = check_seed(seed)
    if metric is None:
        return truncated_svd_checked(a, spec, method, rng, oversample, power_iters)
    root, inverse = matrix_square_roots(metric, a.shape[1], a, "metric")
    u, s, vh, info = truncated_svd_checked(B.astype(a, B.dtype_name(root)) @ root, spec, method, rng, oversample,
                                           power_iters)
    dtype = B.dtype_name(a)
    return B.astype(u, dtype), B.astype(s, B.real_dtype_name(a)), B.astype(vh @ inverse, dtype), info


def truncated_svd_checked(
    a: Array,
    spec: TruncationSpec,
    method: str = "auto",
    rng: np.random.Generator | None = None,
    oversample: int = OVERSAMPLE,
    power_iters: int = POWER_ITERS,
) -> tuple[Array, Array, Array, TruncationInfo]:
    """:func:`truncated_svd` on arguments that were already validated.

    A matrix whose largest entry lies outside the safe range of its dtype is
    first rescaled by an exact power of two (:func:`tnlib._backend.unit_scaled`)
    and ``S`` scaled back, so that no square or Gram matrix overflows or
    underflows: ranks, factors and the report are those of the unscaled math.
    """
    if method == "auto":
        method = _auto_method(a, spec, oversample, power_iters)
    rng = np.random.default_rng() if rng is None else rng
    scaled, exponent = B.unit_scaled(a)
    u, s, vh, info = SVD_METHODS[method](scaled, spec, rng, oversample, power_iters)
    u, vh = _fix_signs(u, vh)
    return u, B.times_power_of_two(s, exponent), vh, info


def squared_singular_values(a: Array, method: str = "auto") -> Array:
    """``s_k**2`` of a validated matrix, descending, in working precision (float64
    for real input), on the array's backend.  ``method``: ``"auto"``, ``"full"``
    or ``"gram"``.  The squares over- or underflow unless ``max|a|`` lies in the
    safe range (:func:`tnlib._backend.unit_scaled`): rescale first, or call
    :func:`singular_values_checked`."""
    if method == "auto":
        method = exact_method(a)
    return VALUE_METHODS[method](a)


def singular_values_checked(a: Array, method: str = "auto") -> Array:
    """:func:`singular_values` of a validated matrix, right at any finite scale.

    The values are computed on ``a`` rescaled by an exact power of two when
    ``max|a|`` lies outside the safe range of its dtype, then scaled back.
    """
    scaled, exponent = B.unit_scaled(a)
    values = ar.do("sqrt", squared_singular_values(scaled, method))
    return B.astype(B.times_power_of_two(values, exponent), B.real_dtype_name(a))


def singular_values(m: Array, method: str = "auto") -> Array:
    """All ``min(M, N)`` singular values of a matrix, descending.

    The values-only path: no singular vectors are formed.  ``method`` is
    ``"full"`` (LAPACK), ``"gram"`` (eigenvalues of the smaller Gram matrix in
    double precision; see the module notes on its accuracy) or ``"auto"``
    (``"gram"`` for single precision, ``"full"`` for double).  Returns an
    array of the real dtype of ``m`` on its backend.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> tnlib.singular_values(np.diag([1.0, 4.0, 2.0])).tolist()
    [4.0, 2.0, 1.0]
    """
    a = check_array(m, "m", ndim=2)
    check_choice(method, "method", ("auto", *VALUE_METHODS))
    return singular_values_checked(a, method)
