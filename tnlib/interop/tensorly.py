"""CP and Tucker tensors to and from TensorLy's :class:`CPTensor` and :class:`TuckerTensor`.

A tnlib :class:`~tnlib.decompositions.cp_tensor.CPTensor` ``(weights, factors)``
is TensorLy's ``tensorly.cp_tensor.CPTensor((weights, factors))`` with the same
arrays: ``weights`` of shape ``(R,)`` and one ``(d_n, R)`` factor per mode.  A
tnlib :class:`~tnlib.decompositions.tucker.TuckerTensor` ``(core, factors,
modes)`` is TensorLy's ``tensorly.tucker_tensor.TuckerTensor((core, factors))``
with one ``(d_n, r_n)`` factor per mode of the core.  Two differences need a
policy, both stated where they apply:

* **Partial Tucker.**  tnlib keeps the modes left out of ``modes`` at full size
  in the core (Tucker-2 of a conv kernel); TensorLy's ``TuckerTensor`` has a
  factor on every mode.  :func:`to_tensorly` gives those modes identity factors
  (exact, orthonormal, rank = the mode's size).  TensorLy's own partial form,
  the ``(core, factors)`` pair of ``tensorly.decomposition.partial_tucker``
  with its ``modes``, is read by :func:`from_tensorly` with ``modes=``.
* **Orthonormal factors.**  tnlib's ``TuckerTensor`` has factors with
  orthonormal columns, on which its error identities rest
  (``||T~|| = ||core||``, ``||T - T~||**2 = ||T||**2 - ||core||**2``);
  TensorLy allows any factors (``non_negative_tucker``, hand-built ones).
  :func:`from_tensorly` replaces a factor that is not orthonormal by the ``Q``
  of its QR factorization ``U = QR`` and multiplies ``R`` into the core, which
  leaves the represented tensor unchanged; ``orthonormalize=False`` keeps the
  factors as they are.

The arrays are handed over as they are, without copies or transfers (except
where a policy above makes new ones), so numpy, torch and cupy arrays stay in
their backend and on their device.  TensorLy has a backend setting of its own,
which its functions (``tl.cp_to_tensor``, ``tl.tucker_to_tensor``, its
decompositions) expect their arrays to match: for torch arrays set it with
``tl.set_backend("pytorch")``, or locally with
``with tl.backend_context("pytorch"): ...``.  This module never changes it.
TensorLy is imported only when a function here is called
(``pip install tnlib[tensorly]``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib.decompositions.cp_tensor import CPTensor
from tnlib.decompositions.tucker import TuckerTensor, mode_product

__all__ = ["from_tensorly", "to_tensorly"]

Array = Any


def _tensorly() -> Any:
    """The ``tensorly`` package (with its CP and Tucker classes), or an ImportError that says how to install it."""
    try:
        import tensorly
        import tensorly.cp_tensor
        import tensorly.tucker_tensor
    except ImportError as err:
        raise ImportError(
            "tnlib.interop.tensorly needs tensorly, which is not installed; "
            "install it with `pip install tnlib[tensorly]`"
        ) from err
    return tensorly


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "ndim") and not isinstance(x, (str, bytes))


def _check_arrays(arrays: Any, name: str) -> list[Array]:
    """``arrays`` as a list of arrays, or a TypeError naming ``name``."""
    if _is_array(arrays) or not isinstance(arrays, Sequence) or isinstance(arrays, (str, bytes)):
        raise TypeError(f"{name} must be a list of arrays, got {type(arrays).__name__}")
    arrays = list(arrays)
    for n, a in enumerate(arrays):
        if not _is_array(a):
            raise TypeError(f"{name}[{n}] must be an array, got {type(a).__name__}")
    return arrays


def _check_cp(weights: Array, factors: Sequence[Array], name: str) -> None:
    """Shapes of a CP tensor: ``weights`` ``(R,)`` and factors ``(d_n, R)``, or a ValueError naming ``name``."""
    if not factors:
        raise ValueError(f"{name} must have at least one factor")
    if weights.ndim != 1:
        raise ValueError(f"{name}: weights must have shape (R,), got {tuple(weights.shape)}")
    rank = weights.shape[0]
    for n, factor in enumerate(factors):
        if factor.ndim != 2 or factor.shape[1] != rank:
            raise ValueError(
                f"{name}: factors[{n}] must have shape (d_{n}, {rank}) to match the {rank} weights, "
                f"got {tuple(factor.shape)}"
            )


def _check_modes(modes: Any, ndim: int, count: int, name: str) -> tuple[int, ...]:
    """``count`` distinct modes of an order-``ndim`` core, or an error naming ``name``."""
    if isinstance(modes, (str, bytes)) or not isinstance(modes, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(modes).__name__}")
    modes = tuple(modes)
    if not all(isinstance(m, numbers.Integral) and not isinstance(m, bool) and 0 <= m < ndim for m in modes) or len(
        set(modes)
    ) != len(modes):
        raise ValueError(f"{name} must be distinct integers in [0, {ndim - 1}], got {modes}")
    if len(modes) != count or not modes:
        raise ValueError(f"{name} must name one mode per factor ({count}, at least one), got {modes}")
    return tuple(int(m) for m in modes)


def _check_tucker(core: Array, factors: Sequence[Array], modes: Sequence[int], name: str) -> None:
    """Factor ``k`` is ``(d, core.shape[modes[k]])``, or a ValueError naming ``name``."""
    for k, (mode, factor) in enumerate(zip(modes, factors)):
        if factor.ndim != 2 or factor.shape[1] != core.shape[mode]:
            raise ValueError(
                f"{name}: factors[{k}] (mode {mode}) must have shape (d, {core.shape[mode]}), matching the core's "
                f"size along mode {mode}, got {tuple(factor.shape)}"
            )


def to_tensorly(tensor: CPTensor | TuckerTensor) -> Any:
    """TensorLy's ``CPTensor`` or ``TuckerTensor`` of a tnlib one, with the same arrays.

    Parameters
    ----------
    tensor
        A tnlib :class:`CPTensor` or :class:`TuckerTensor`; its arrays are
        shared, not copied.

    Returns
    -------
    tensorly.cp_tensor.CPTensor or tensorly.tucker_tensor.TuckerTensor
        For a CP tensor, ``(tensor.weights, tensor.factors)``.  For a Tucker
        tensor, ``(tensor.core, factors)`` with ``factors[n]`` the factor of
        mode ``n``: TensorLy's factors run over the core's modes in order,
        whatever the order of ``tensor.modes``.  A partial Tucker tensor
        (``modes`` a strict subset, e.g. Tucker-2) gets an identity factor,
        in the core's backend, dtype and device, on each mode it leaves at
        full size: the dense tensor is unchanged and every factor is
        orthonormal, and TensorLy's ``rank`` shows those modes at full size.
        Use TensorLy's functions with its backend set to that of the arrays
        (see the module notes).

    Raises
    ------
    TypeError
        If ``tensor`` is neither a tnlib ``CPTensor`` nor ``TuckerTensor``.
    ValueError
        For inconsistent shapes, or a Tucker tensor of order 1 (TensorLy's
        ``TuckerTensor`` needs at least two modes).
    """
    tl = _tensorly()
    if isinstance(tensor, CPTensor):
        factors = list(tensor.factors)
        _check_cp(tensor.weights, factors, "tensor")
        return tl.cp_tensor.CPTensor((tensor.weights, factors))
    if isinstance(tensor, TuckerTensor):
        core = tensor.core
        modes = _check_modes(tensor.modes, core.ndim, len(tensor.factors), "tensor.modes")
        _check_tucker(core, tensor.factors, modes, "tensor")
        if core.ndim < 2:
            raise ValueError(f"tensor has order {core.ndim}; tensorly's TuckerTensor needs at least 2 modes")
        by_mode = dict(zip(modes, tensor.factors))
        factors = [
            by_mode[n] if n in by_mode else B.from_numpy(np.eye(core.shape[n]), like=core) for n in range(core.ndim)
        ]
        return tl.tucker_tensor.TuckerTensor((core, factors))
    raise TypeError(f"tensor must be a tnlib CPTensor or TuckerTensor, got {type(tensor).__name__}")


def _orthonormality_tol(factor: Array) -> float:
    """How far ``U^H U`` may be from the identity for ``U`` to count as orthonormal: rounding of its dtype."""
    try:
        eps = float(np.finfo(B.real_dtype_name(factor)).eps)
    except (TypeError, ValueError):  # an integer or unknown dtype
        eps = float(np.finfo(np.float64).eps)
    return 64 * max(factor.shape) * eps


def _is_orthonormal(factor: Array) -> bool:
    rows, cols = factor.shape
    if cols > rows:
        return False
    gram = B.to_host(B.conj_transpose(factor) @ factor)
    return bool(np.abs(gram - np.eye(cols)).max() <= _orthonormality_tol(factor))


def _qr_nonnegative_diagonal(factor: Array) -> tuple[Array, Array]:
    """Thin ``factor = Q R`` with ``Q`` orthonormal and ``R``'s diagonal real and non-negative.

    Fixing the signs (phases) makes ``Q`` the factor itself, up to rounding,
    when its columns are already nearly orthonormal.
    """
    q, r = ar.do("linalg.qr", factor)
    diag = ar.do("diagonal", r)
    magnitude = ar.do("abs", diag)
    zero = magnitude == 0
    phase = diag / (magnitude + zero) + zero  # r_ii / |r_ii|, and 1 where r_ii = 0
    return q * phase[None, :], ar.do("conj", phase)[:, None] * r


def from_tensorly(obj: Any, modes: Sequence[int] | None = None, orthonormalize: bool = True) -> CPTensor | TuckerTensor:
    """A tnlib ``CPTensor`` or ``TuckerTensor`` from TensorLy's, with the same arrays.

    Parameters
    ----------
    obj
        A ``tensorly.cp_tensor.CPTensor`` or ``tensorly.tucker_tensor.TuckerTensor``,
        or a plain pair as TensorLy's functions return them: ``(weights,
        factors)`` (``weights`` of shape ``(R,)``, or ``None`` for all ones) or
        ``(core, factors)``.  A pair whose first entry is one-dimensional (or
        ``None``) is read as CP unless ``modes`` is given; an order-1 Tucker
        pair represents the same vector either way.  For rank 1, TensorLy's
        one-dimensional CP factors ``(d_n,)`` are read as ``(d_n, 1)``.
    modes
        Tucker only: the core's modes that ``factors`` act on, one per factor,
        for the partial Tucker ``(core, factors)`` of
        ``tensorly.decomposition.partial_tucker(tensor, rank, modes=modes)``;
        the other modes stay at full size in the core.  Default: all modes,
        ``factors[n]`` acting on mode ``n``.
    orthonormalize
        Tucker only.  tnlib's ``TuckerTensor`` assumes orthonormal factors
        (its error identities use ``||T~|| = ||core||``); TensorLy's need not
        be.  With ``True`` (default) each factor ``U`` that is not orthonormal
        to rounding is replaced by the ``Q`` of its thin QR factorization
        ``U = QR`` (``R`` with a non-negative diagonal), and ``R`` is
        multiplied into the core along that mode: the represented tensor is
        unchanged up to rounding, and a factor with more columns than rows
        ``d`` leaves rank ``d`` on its mode.  Orthonormal factors (those of
        TensorLy's ``tucker``, which are) are kept as they are.  With
        ``False`` all factors are kept; ``to_dense()`` is still exact.

    Returns
    -------
    CPTensor or TuckerTensor
        A CP tensor holds ``obj``'s weights and factors as they are (TensorLy's
        ``parafac`` returns unit weights and unnormalized factors; call
        ``tensorly.cp_tensor.cp_normalize`` first for unit-norm columns).  A
        Tucker tensor has ``modes`` all modes (or the given ones) and ``info``
        ``None``.  Arrays stay in their backend and on their device.

    Raises
    ------
    TypeError
        If ``obj`` is none of the above (e.g. the ``(decomposition, errors)``
        pair of ``return_errors=True``: pass its first entry), or an entry
        that should be an array is not one.
    ValueError
        For inconsistent shapes, ``modes`` with a CP tensor, or a Tucker pair
        with fewer factors than core modes and no ``modes``.
    """
    tl = _tensorly()
    cp_class, tucker_class = tl.cp_tensor.CPTensor, tl.tucker_tensor.TuckerTensor
    if isinstance(obj, cp_class):
        kind, first, second = "cp", obj.weights, obj.factors
    elif isinstance(obj, tucker_class):
        kind, first, second = "tucker", obj.core, obj.factors
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        first, second = obj
        if isinstance(first, (cp_class, tucker_class)) or (isinstance(first, tuple) and len(first) == 2):
            raise TypeError(
                f"obj looks like a (decomposition, errors) pair, as returned with return_errors=True (or by "
                f"partial_tucker); pass its first entry, got a pair starting with {type(first).__name__}"
            )
        if first is not None and not _is_array(first):
            raise TypeError(f"obj[0] must be an array (weights or core), got {type(first).__name__}")
        kind = "cp" if modes is None and (first is None or first.ndim == 1) else "tucker"
    else:
        raise TypeError(
            "obj must be a tensorly CPTensor or TuckerTensor, or a (weights, factors) or (core, factors) pair, "
            f"got {type(obj).__name__}"
        )
    factors = _check_arrays(second, "obj factors")

    if kind == "cp":
        if modes is not None:
            raise ValueError("modes applies to Tucker tensors only; obj is a CP tensor")
        if not factors:
            raise ValueError("obj must have at least one factor")
        factors = [ar.do("reshape", f, (f.shape[0], 1)) if f.ndim == 1 else f for f in factors]
        weights = first
        if weights is None:
            if factors[0].ndim != 2:
                raise ValueError(f"obj: factors[0] must have shape (d_0, R), got {tuple(factors[0].shape)}")
            weights = B.from_numpy(np.ones(factors[0].shape[1]), like=factors[0])
        _check_cp(weights, factors, "obj")
        return CPTensor(weights, factors)

    core = first
    if modes is None:
        if len(factors) != core.ndim:
            raise ValueError(
                f"obj has {len(factors)} factors for a core of order {core.ndim}; a Tucker tensor has one factor "
                "per mode (for a partial Tucker, say which modes the factors act on with modes=)"
            )
        modes = tuple(range(core.ndim))
        if not modes:
            raise ValueError("obj must have at least one factor")
    else:
        modes = _check_modes(modes, core.ndim, len(factors), "modes")
    _check_tucker(core, factors, modes, "obj")
    if orthonormalize:
        for k, (mode, factor) in enumerate(zip(modes, factors)):
            if not _is_orthonormal(factor):
                factors[k], r = _qr_nonnegative_diagonal(factor)
                core = mode_product(core, r, mode)
    return TuckerTensor(core, factors, modes)
