"""Data-aware norms: a metric on groups of a tensor's indices.

The error that matters for a linear map ``y = W x`` is not ``||W - W~||_F`` but
``E ||(W - W~) x||**2 = ||(W - W~) L||_F**2``, where ``L L^T = E[x x^T]`` is the
second moment of its inputs.  A *metric* generalizes this to tensors: a mapping
``{group: M}`` from a group of labels (``"ihw"``, ``"i"``) to a symmetric
positive semi-definite matrix ``M`` over that group's combined index, row-major
**in the group's label order** (the order the key writes the labels, not
necessarily the tensor's).  The norm it defines is

    ||X||_M = ||X x_G1 L_G1^T x_G2 L_G2^T ...||_F,      L_G L_G^T = M_G,

each group's square root applied to that group's combined index (labels not in
any group are unweighted).  Every algorithm of the core accepts a metric the
same way: it runs unchanged on ``T' = T x L^T`` (``to_metric_space``) and maps
its result back with ``L^{-T}`` (``from_metric_space``), so that
``||T - T~||_M = ||T' - T~'||_F`` and every Frobenius guarantee (Eckart-Young
optimality, the ``rel_error`` targets, the reported errors and spectra) holds
in the metric's norm.  This is exact wherever each group lies on one side of
every cut the structure makes; a structure that would split a group is refused
(a Kronecker-factored metric, one matrix per label, serves it instead).

Rules (checked once, at the public entry):

* each key is a non-empty string of the tensor's labels, none repeated, and no
  label lies in two groups;
* each matrix is a real array (numpy, torch or cupy; moved to the tensor's backend) of
  shape ``(n, n)``, ``n`` the product of the group's dimensions, with finite
  entries; symmetric to ``METRIC_TOLERANCE`` relative to its largest entry
  (it is then symmetrized), positive semi-definite to ``METRIC_TOLERANCE``
  relative to its largest eigenvalue, and not zero;
* the square root is the symmetric one, from an eigendecomposition in float64
  on the host, with the eigenvalues clipped from below at ``METRIC_RIDGE *
  lambda_max``.  A singular or ill-conditioned moment is therefore replaced by
  ``M + (clipped part)``, the *regularized* metric, and every guarantee holds
  in the regularized metric's norm (for a well-conditioned ``M`` it is ``M``).

The tensor is carried in its working precision (float32 -> float64) while in
metric space, and results are returned in its own dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from math import prod
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import check_array, describe

Array = Any

#: Eigenvalues of a metric are clipped from below at ``METRIC_RIDGE * lambda_max``,
#: so that ``L`` is invertible with a condition number at most ``METRIC_RIDGE**-0.5 = 1e4``.
METRIC_RIDGE = 1e-8

#: Relative tolerance of the symmetry check (``max|M - M^T| <= tol * max|M|``) and of the
#: PSD check (``lambda_min >= -tol * lambda_max``): round-off of a moment accumulated in
#: float32 passes, a genuinely asymmetric or indefinite matrix does not.
METRIC_TOLERANCE = 1e-5


def _square_roots(matrix: Any, name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(L, L^{-1})`` of a validated ``size x size`` metric, both symmetric, float64 on the host.

    ``L = V diag(sqrt(max(w, METRIC_RIDGE w_max))) V^T`` for ``M = V diag(w) V^T``.
    """
    if B.backend_of(matrix) not in ("numpy", "torch", "cupy"):
        if isinstance(matrix, (str, bytes, dict, set)) or matrix is None:
            raise TypeError(f"{name} must be a square matrix (numpy, torch or cupy array), got {describe(matrix)}")
        matrix = np.asarray(matrix)
    if B.dtype_name(matrix).startswith(("int", "uint")):  # a count matrix is a fine moment
        matrix = B.astype(matrix, "float64")
    if B.is_complex(matrix):
        raise TypeError(f"{name} must be real (a second moment of real inputs), got {B.dtype_name(matrix)}")
    matrix = check_array(matrix, name, ndim=2)
    if tuple(matrix.shape) != (size, size):
        raise ValueError(
            f"{name} must have shape ({size}, {size}), the product of its group's dimensions, "
            f"got {tuple(matrix.shape)}"
        )
    m = B.to_host(matrix).astype(np.float64)
    scale = float(np.abs(m).max())
    if scale == 0.0:
        raise ValueError(f"{name} is zero; a metric must weight at least one direction")
    asymmetry = float(np.abs(m - m.T).max())
    if asymmetry > METRIC_TOLERANCE * scale:
        raise ValueError(
            f"{name} must be symmetric: max|M - M^T| = {asymmetry:.3g} exceeds {METRIC_TOLERANCE:g} * max|M|"
        )
    half = int(np.frexp(scale)[1]) // 2  # eigh on M / 4**half (max entry in [1/2, 2)), exact and safe at any scale
    w, v = np.linalg.eigh(np.ldexp((m + m.T) / 2, -2 * half))
    top = float(w[-1])
    if top <= 0.0 or w[0] < -METRIC_TOLERANCE * top:
        raise ValueError(
            f"{name} must be positive semi-definite: its smallest eigenvalue {w[0]:.3g} is below "
            f"-{METRIC_TOLERANCE:g} * its largest ({top:.3g})"
        )
    root = np.sqrt(np.maximum(w, METRIC_RIDGE * top))
    return np.ldexp((v * root) @ v.T, half), np.ldexp((v / root) @ v.T, -half)


def _apply(x: Array, matrix: Array, axes: list[int]) -> Array:
    """``x`` with the combined index of ``axes`` (row-major in that order) multiplied by ``matrix``.

    ``out[..., k, ...] = sum_j x[..., j, ...] matrix[j, k]`` over the combined index.
    """
    rest = [a for a in range(x.ndim) if a not in axes]
    perm = rest + axes
    moved = ar.do("transpose", x, perm)
    shape = tuple(moved.shape)
    flat = ar.do("reshape", moved, (-1, prod(shape[len(rest):])))
    out = ar.do("reshape", flat @ matrix, shape)
    return ar.do("transpose", out, list(np.argsort(perm)))


class Metric:
    """A validated metric on groups of a tensor's labels (see the module docs).

    Build one with :meth:`build` at a public entry; ``roots[g]`` is ``L_g`` and
    ``inverses[g]`` is ``L_g^{-1}`` (both symmetric), in the tensor's working
    dtype on its backend and device.
    """

    def __init__(self, labels: str, roots: dict[str, Array], inverses: dict[str, Array], dtype: str) -> None:
        self.labels, self.roots, self.inverses, self.dtype = labels, roots, inverses, dtype

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.roots)

    @classmethod
    def build(
        cls, metric: Any, labels: str, tensor: Array, check: Callable[[tuple[str, ...]], None] | None = None
    ) -> Metric | None:
        """Validate ``metric`` against ``tensor`` labelled ``labels``; ``None`` stays ``None``.

        ``check(groups)``, the structure's own rule (:func:`check_cuts`, :func:`check_single_labels`),
        runs once the keys are valid and before any matrix is decomposed.
        """
        if metric is None:
            return None
        if not isinstance(metric, Mapping):
            raise TypeError(
                f"metric must be None or a mapping from label groups to matrices, e.g. {{'ihw': M}}, "
                f"got {describe(metric)}"
            )
        if not metric:
            raise ValueError("metric must name at least one label group, got an empty mapping")
        dims = dict(zip(labels, tensor.shape))
        seen: dict[str, str] = {}
        hosts = {}
        name = "metric"
        for group in metric:
            _check_group(group, labels, seen, name)
        if check is not None:
            check(tuple(metric))
        for group, matrix in metric.items():
            hosts[group] = _square_roots(matrix, f"{name}[{group!r}]", prod(dims[c] for c in group))
        working = B.WORKING_DTYPES[B.dtype_name(tensor)]
        like = B.astype(tensor[(slice(0, 1),) * tensor.ndim], working)  # one entry: the backend, device, dtype
        roots = {g: B.from_numpy(r, like) for g, (r, _) in hosts.items()}
        inverses = {g: B.from_numpy(r, like) for g, (_, r) in hosts.items()}
        return cls(labels, roots, inverses, B.dtype_name(tensor))

    # -- mapping tensors --------------------------------------------------------

    def _axes(self, group: str) -> list[int]:
        return [self.labels.index(c) for c in group]

    def to_metric_space(self, x: Array) -> Array:
        """``T' = T x_G L_G^T`` for every group, in working precision: ``||T||_M = ||T'||_F``."""
        out = B.astype(x, B.WORKING_DTYPES[self.dtype])
        for group, root in self.roots.items():
            out = _apply(out, root, self._axes(group))
        return out

    def from_metric_space(self, x: Array, groups: Iterable[str] | None = None) -> Array:
        """``T = T' x_G L_G^{-T}`` for ``groups`` (default all), in the tensor's dtype.

        ``x`` has the tensor's labels; a leg may be shorter (a Tucker core) only if no group in ``groups`` holds it.
        """
        out = x
        for group in self.groups if groups is None else groups:
            out = _apply(out, self.inverses[group], self._axes(group))
        return B.astype(out, self.dtype)

    def leg_to_metric_space(self, label: str, x: Array, axis: int = 0) -> Array:
        """``x`` with its axis ``axis`` (running over the single-label group ``label``) times ``L``, in working dtype.

        For a factor ``A`` (rows over ``label``) this is ``L^T A``.
        """
        return _apply(B.astype(x, B.WORKING_DTYPES[self.dtype]), self.roots[label], [axis])

    def leg_from_metric_space(self, label: str, x: Array, axis: int = 0) -> Array:
        """The inverse of :meth:`leg_to_metric_space` (``L^{-T} A'`` for a factor ``A'``), in working dtype."""
        return _apply(x, self.inverses[label], [axis])

    def compatible(self, cut: Any) -> bool:
        """Whether ``cut`` (with ``.left``/``.right``) keeps every group on one side."""
        return all(_whole(group, cut) for group in self.groups)


# -- the structures' rules, run by Metric.build before any matrix is decomposed


def _whole(group: str, cut: Any) -> bool:
    return set(group) <= set(cut.left) or set(group) <= set(cut.right)


def check_cuts(groups: tuple[str, ...], cuts: Iterable[Any]) -> None:
    """Refuse a cut (with ``.left``/``.right``) that splits a group."""
    for cut in cuts:
        for group in groups:
            if not _whole(group, cut):
                raise ValueError(
                    f"metric: the cut {str(cut)!r} splits the group {group!r}; a metric is exact only for cuts "
                    f"with each group on one side -- choose such cuts or give one metric per label"
                )


def check_single_labels(groups: tuple[str, ...], labels: Iterable[str], structure: str) -> None:
    """Refuse a group of several labels that holds one of ``labels``, which ``structure`` splits apart."""
    split = set(labels)
    for group in groups:
        if len(group) > 1 and split & set(group):
            per_label = ", ".join(f"{c!r}: ..." for c in group)
            raise ValueError(
                f"metric: {structure} splits the group {group!r}; give one metric per label: {{{per_label}}}"
            )


def _check_group(group: Any, labels: str, seen: dict[str, str], name: str) -> None:
    """A key of the metric: a non-empty string of distinct known labels, none in an earlier group."""
    if not isinstance(group, str) or not group:
        raise TypeError(f"{name} keys must be non-empty strings of labels such as 'ihw', got {describe(group)}")
    unknown = [c for c in group if c not in labels]
    if unknown:
        raise ValueError(
            f"{name}: group {group!r} has unknown label(s) {''.join(unknown)!r}; the labels are {labels!r}"
        )
    if len(set(group)) != len(group):
        raise ValueError(f"{name}: group {group!r} repeats a label")
    for c in group:
        if c in seen:
            raise ValueError(f"{name}: label {c!r} lies in two groups, {seen[c]!r} and {group!r}")
        seen[c] = group


def matrix_square_roots(metric: Any, size: int, like: Array, name: str = "metric") -> tuple[Array, Array]:
    """``(L, L^{-1})`` of a right metric over ``size`` columns, in ``like``'s working dtype and device."""
    root, inverse = _square_roots(metric, name, size)
    working = B.astype(like[(slice(0, 1),) * like.ndim], B.WORKING_DTYPES[B.dtype_name(like)])
    return B.from_numpy(root, working), B.from_numpy(inverse, working)


def kronecker_factors(matrix: Any, group: str, dims: Sequence[int], parts: Sequence[str]) -> dict[str, np.ndarray]:
    """Split a metric over ``group`` into one metric per part, for structures that split the group.

    Each part's matrix is the partial trace of ``matrix`` over the other labels, scaled by
    ``tr(M)**(-(k-1)/k)`` for ``k`` parts, so that ``kron`` of the parts (in ``group``'s label
    order) has the trace of ``M``, and equals ``M`` exactly when ``M`` is a Kronecker product of
    per-part matrices (inputs whose parts are statistically independent).  Otherwise it is an
    approximation, and the guarantees of the structure hold in the norm of that product.

    Parameters
    ----------
    matrix
        Symmetric PSD ``(n, n)`` matrix over ``group``'s combined index (row-major in its order).
    group
        Its labels, e.g. ``"ihw"``; ``dims`` their dimensions in that order.
    parts
        Disjoint groups covering ``group``, e.g. ``["i", "hw"]`` (Tucker-2) or ``["i", "h", "w"]`` (CP, MPS).

    Returns
    -------
    dict
        ``{part: M_part}`` (float64 numpy), ready to pass as ``metric``.

    Examples
    --------
    >>> a, b = np.diag([1.0, 2.0]), np.diag([3.0, 4.0, 5.0])
    >>> parts = kronecker_factors(np.kron(a, b), "ih", (2, 3), ["i", "h"])
    >>> bool(np.allclose(np.kron(parts["i"], parts["h"]), np.kron(a, b)))
    True
    """
    dims = [int(d) for d in dims]
    if not isinstance(group, str) or len(group) != len(dims) or len(set(group)) != len(group):
        raise ValueError(f"group must be a string of distinct labels, one per entry of dims {dims}, got {group!r}")
    if sorted("".join(parts)) != sorted(group):
        raise ValueError(f"parts must split the labels of {group!r} into disjoint groups, got {list(parts)!r}")
    m = B.to_host(check_array(matrix, "matrix", ndim=2)).astype(np.float64)
    size = prod(dims)
    if tuple(m.shape) != (size, size):
        raise ValueError(f"matrix must have shape ({size}, {size}) for dims {dims}, got {tuple(m.shape)}")
    trace = float(np.trace(m))
    if not trace > 0:
        raise ValueError(f"matrix must have a positive trace (a non-zero PSD matrix), got {trace:.3g}")
    letters = {c: chr(ord("a") + k) for k, c in enumerate(group)}
    rows = "".join(letters[c] for c in group)
    tensor = m.reshape(dims * 2)
    out = {}
    for part in parts:
        cols = "".join(letters[c].upper() if c in part else letters[c] for c in group)
        kept = "".join(letters[c] for c in part) + "".join(letters[c].upper() for c in part)
        n = prod(dims[group.index(c)] for c in part)
        traced = np.einsum(f"{rows}{cols}->{kept}", tensor).reshape(n, n)
        out[part] = traced * trace ** (-(len(parts) - 1) / len(parts))
    return out
