"""The few array operations whose best implementation differs between backends.

Algorithm code in tnlib is written once against autoray's numpy-like interface
(``autoray.do``).  The operations below are the exceptions, each because a
backend offers a faster or more robust route than the generic one:

* ``svd``: thin SVD through LAPACK's divide-and-conquer driver (``gesdd``), falling
  back to the QR-iteration driver (``gesvd``) when ``gesdd`` fails to converge.
  NumPy arrays go through SciPy, always handed to LAPACK in the tall
  column-major orientation, which is about twice as fast as the other one.
* ``svdvals``: the singular values alone, through the same drivers.
* ``solve_gram``: ``rhs @ inv(G)`` for a symmetric positive semi-definite ``G``,
  falling back to a pseudo-inverse when Cholesky finds ``G`` singular.
* ``from_numpy``: a host array moved to the device and dtype of another array.

Each is a small registry keyed by autoray's backend name; a backend missing from
a registry uses autoray's generic function.  Nothing here ever asks for
``full_matrices=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import autoray as ar
import numpy as np
import scipy.linalg

Array = Any

#: Floating dtypes the core computes in, mapped to the dtype their Gram matrices
#: and eigen-solves use (single precision is promoted so that squaring the
#: condition number costs no accuracy against a single-precision SVD).
WORKING_DTYPES = {
    "float32": "float64",
    "float64": "float64",
    "complex64": "complex128",
    "complex128": "complex128",
}


def backend_of(x: Array) -> str:
    """Name of the array library ``x`` belongs to (``"numpy"``, ``"torch"``, ``"cupy"``)."""
    return ar.infer_backend(x)


def dtype_name(x: Array) -> str:
    """Backend-independent dtype name of ``x``, e.g. ``"float32"``."""
    return ar.get_dtype_name(x)


def is_complex(x: Array) -> bool:
    return dtype_name(x).startswith("complex")


def real_dtype_name(x: Array) -> str:
    return {"complex64": "float32", "complex128": "float64"}.get(dtype_name(x), dtype_name(x))


def astype(x: Array, dtype: str) -> Array:
    """``x`` converted to the named dtype, without a copy when it already has it."""
    if dtype_name(x) == dtype:
        return x
    return ar.astype(x, dtype)


def to_host(x: Array) -> np.ndarray:
    """A NumPy copy (or view) of ``x``, from any backend and device."""
    return ar.to_numpy(x)


def _plain_norm(x: Array) -> float:
    with np.errstate(over="ignore", under="ignore"):  # out-of-range sums are detected and redone
        return float(to_host(ar.do("linalg.norm", astype(ar.do("reshape", x, (-1,)), WORKING_DTYPES[dtype_name(x)]))))


#: Norms in double precision between these bounds lost nothing to overflow or
#: underflow of their squares (the squares stay within ``2**+-960``).
_NORM_RANGE = (2.0**-480, 2.0**480)


def frobenius_norm(x: Array) -> float:
    """``||x||_F`` of an array of any order, accumulated in double precision.

    Right at any finite scale: where the sum of squares would overflow or
    underflow, the norm is taken of ``x`` rescaled by a power of two (exact) and
    scaled back.  The result is ``inf`` only when the norm itself exceeds the
    largest double.
    """
    norm = _plain_norm(x)
    if _NORM_RANGE[0] <= norm <= _NORM_RANGE[1]:
        return norm
    scaled, exponent = unit_scaled(x, always=True)
    try:
        return math.ldexp(_plain_norm(scaled), exponent)
    except OverflowError:
        return math.inf


# ---------------------------------------------------------------------- scaling


def max_abs(x: Array) -> float:
    """``max |x_i|`` as a host float (0 for an empty array)."""
    if math.prod(x.shape) == 0:
        return 0.0
    return float(to_host(ar.do("max", ar.do("abs", ar.do("reshape", x, (-1,))))))


def _safe_bound(x: Array) -> float:
    """The largest ``max|x|`` (and inverse of the smallest) computed on without rescaling.

    ``2**(max_exponent / 4)`` of the real dtype: ``2**256`` (about ``1e77``) for
    double and ``2**32`` (about ``4e9``) for single precision, so that squares,
    Gram matrices and sums of squares of the rescaled data stay far from
    overflow and their meaningful part far from underflow.
    """
    return 2.0 ** (np.finfo(real_dtype_name(x)).maxexp // 4)


def times_power_of_two(x: Array, exponent: int) -> Array:
    """``x * 2**exponent``, exact (barring overflow or underflow of the result).

    The factor is applied in steps that stay representable in ``x``'s dtype, so
    any exponent between the smallest subnormal and the largest number works.
    """
    if exponent == 0:
        return x
    step = np.finfo(real_dtype_name(x)).maxexp - 2
    while exponent:
        part = max(-step, min(step, exponent))
        x = x * 2.0**part
        exponent -= part
    return x


def unit_scaled(x: Array, always: bool = False) -> tuple[Array, int]:
    """``(x * 2**-e, e)`` with ``max|x * 2**-e|`` in ``[0.5, 1)``: the exactly rescaled array.

    Returns ``(x, 0)``, without a copy, when ``x`` is zero or (unless
    ``always``) when ``max|x|`` lies between ``1 / bound`` and ``bound`` of
    :func:`_safe_bound`, so that results in the normal range are bit for bit
    those of the unscaled computation.  Power-of-two scaling is exact, so ranks
    and relative errors computed on the rescaled array are those of ``x``;
    multiply what scales with ``x`` (singular values, a core) by ``2**e``
    (:func:`times_power_of_two`) to undo it.
    """
    top = max_abs(x)
    bound = _safe_bound(x)
    if top == 0.0 or (not always and 1.0 / bound <= top <= bound):
        return x, 0
    exponent = math.frexp(top)[1]
    return times_power_of_two(x, -exponent), exponent


def conj_transpose(x: Array) -> Array:
    """Conjugate transpose of a matrix (plain transpose for real dtypes)."""
    return ar.do("conj", x).T if is_complex(x) else x.T


# --------------------------------------------------------------------------- svd


def _numpy_svd(a: np.ndarray, compute_uv: bool):
    """SciPy's thin SVD with gesdd -> gesvd fallback, fed in the tall orientation."""
    wide = a.shape[0] < a.shape[1]
    m = a.T if wide else a
    for driver in ("gesdd", "gesvd"):
        try:
            out = scipy.linalg.svd(
                m, full_matrices=False, compute_uv=compute_uv, check_finite=False, lapack_driver=driver
            )
            break
        except np.linalg.LinAlgError:
            if driver == "gesvd":
                raise
    if not compute_uv:
        return out
    u, s, vh = out
    if wide:  # a.T = u s vh  =>  a = vh.T s u.T
        u, vh = vh.T, u.T
    return u, s, vh


def _torch_svd(a, compute_uv: bool):
    import torch

    try:
        if compute_uv:
            return torch.linalg.svd(a, full_matrices=False)
        return torch.linalg.svdvals(a)
    except torch.linalg.LinAlgError:
        if a.is_cuda:
            out = torch.linalg.svd(a, full_matrices=False, driver="gesvd")
            return out if compute_uv else out[1]
        out = _numpy_svd(a.numpy(), compute_uv)
        if compute_uv:
            return tuple(torch.from_numpy(np.ascontiguousarray(t)) for t in out)
        return torch.from_numpy(out)


def _generic_svd(a, compute_uv: bool):
    if compute_uv:
        return ar.do("linalg.svd", a, full_matrices=False)
    return ar.do("linalg.svd", a, full_matrices=False, compute_uv=False)


_SVD: dict[str, Callable] = {"numpy": _numpy_svd, "torch": _torch_svd}


def svd(a: Array) -> tuple[Array, Array, Array]:
    """Thin SVD ``a = U diag(S) Vh`` with ``S`` descending."""
    return _SVD.get(backend_of(a), _generic_svd)(a, True)


def svdvals(a: Array) -> Array:
    """Singular values of ``a``, descending."""
    return _SVD.get(backend_of(a), _generic_svd)(a, False)


# ------------------------------------------------------------------ solve_gram


def _pinv_gram(rhs, gram):
    """``rhs @ pinv(gram)`` from the eigendecomposition, dropping eigenvalues below ``eps * max``."""
    values, vectors = ar.do("linalg.eigh", gram)
    finfo = np.finfo(real_dtype_name(gram))
    keep = values > finfo.eps * gram.shape[0] * ar.do("max", ar.do("abs", values))
    inverse = ar.do("where", keep, 1.0 / ar.do("where", keep, values, 1.0), 0.0)
    return ((rhs @ vectors) * inverse[None, :]) @ conj_transpose(vectors)


def _numpy_solve_gram(rhs: np.ndarray, gram: np.ndarray) -> np.ndarray:
    # NumPy's own LAPACK, not SciPy's: SciPy ships a second OpenBLAS whose threads fight
    # NumPy's when calls alternate between them (20x slower CP-ALS sweeps on 2 cores).
    try:
        np.linalg.cholesky(gram)  # positive definite: the plain solve is well posed
    except np.linalg.LinAlgError:
        return _pinv_gram(rhs, gram)
    return np.linalg.solve(gram, rhs.T).T


def _torch_solve_gram(rhs, gram):
    import torch

    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        return _pinv_gram(rhs, gram)
    return torch.cholesky_solve(rhs.T, factor).T


def _generic_solve_gram(rhs, gram):
    out = ar.do("linalg.solve", gram, rhs.T).T
    return out if bool(ar.do("all", ar.do("isfinite", out))) else _pinv_gram(rhs, gram)


_SOLVE_GRAM: dict[str, Callable] = {"numpy": _numpy_solve_gram, "torch": _torch_solve_gram}


def solve_gram(rhs: Array, gram: Array) -> Array:
    """``rhs @ inv(gram)`` for a real symmetric positive semi-definite ``gram``.

    A singular ``gram`` gets its pseudo-inverse, so the result is always the
    minimum-norm least-squares solution and never NaN.
    """
    return _SOLVE_GRAM.get(backend_of(rhs), _generic_solve_gram)(rhs, gram)


# ------------------------------------------------------------------- conversion


def _torch_from_numpy(x: np.ndarray, like):
    import torch

    return torch.as_tensor(x, device=like.device)


def _cupy_from_numpy(x: np.ndarray, like):
    import cupy

    with cupy.cuda.Device(like.device.id):
        return cupy.asarray(x)


_FROM_NUMPY: dict[str, Callable] = {
    "numpy": lambda x, like: x,
    "torch": _torch_from_numpy,
    "cupy": _cupy_from_numpy,
}


def from_numpy(x: np.ndarray, like: Array) -> Array:
    """Move the host array ``x`` to the backend and device of ``like``.

    Floating arrays take the dtype of ``like``; integer arrays (indices) stay
    integer.
    """
    convert = _FROM_NUMPY.get(backend_of(like))
    if convert is None:
        return ar.do("asarray", x, like=like)
    if x.dtype.kind == "f":
        x = x.astype(dtype_name(like), copy=False)
    return convert(x, like)
