"""All-cut spectra of many tensors at once: same-shaped tensors are stacked and solved together.

The spectra of a network's conv kernels are many small problems: one SVD (or
Gram eigensolve) per kernel and per side of a cut, and a loop over them pays
the per-call overhead (validation, dispatch, copies, a device launch) on every
one.  :func:`spectra_many` groups the tensors that can share calls (same
backend, device, dtype, shape, labels, cuts and solver), stacks each group
along a new first axis, and solves each side of each group in one batched call,
with the work sharing of :func:`tnlib.spectra` (partial traces, size-1
indices).  The values are those of :func:`tnlib.spectra` on each tensor, up to
round-off.  The eigensolves themselves cost what they cost: on a CPU, LAPACK
still solves the matrices of a stack one by one, and once the overhead is gone
their time bounds the gain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod
from typing import Any

import autoray as ar

from tnlib import _backend as B
from tnlib._validation import check_choice, check_ordered, describe
from tnlib.cuts import CutLike, cut_matrix_shape
from tnlib.spectrum import SpectraJob, Spectrum, stacked_spectra
from tnlib.svd import VALUE_METHODS

Array = Any


def spectra_many(
    tensors: Sequence[Array],
    labels: str | Sequence[str] | None = None,
    cuts: Sequence[CutLike] | None = None,
    method: str = "auto",
    *,
    metric: Sequence[Mapping[str, Array] | None] | None = None,
) -> list[dict[str, Spectrum]]:
    """:func:`tnlib.spectra` of each tensor of ``tensors``, same-shaped ones computed together.

    Tensors with the same backend, device, dtype and shape (and so the same
    labels, cuts and solver) are stacked, and each side of their cuts is solved
    once for the whole stack: one stacked SVD (``method="full"``) or one
    stacked Gram product and eigensolve in double precision (``"gram"``), with
    Gram matrices of smaller sides by partial trace, exactly as
    :func:`tnlib.spectra` shares work within one tensor.  ``method="auto"``
    chooses per tensor as :func:`tnlib.spectra` does (Gram for single
    precision, LAPACK for double), so the accuracy is the same: Gram values
    carry a relative error of about ``eps64 * (s_max / s_k)**2``, LAPACK
    values are accurate to working precision.  Each tensor is rescaled into the
    safe range of its dtype by its own exact power of two, so every spectrum is
    right at any finite scale.  A group is stacked in chunks of at most
    :data:`STACK_BYTES` (256 MiB) of working-precision data, so the memory
    needed stays near that of the tensors themselves.

    Parameters
    ----------
    tensors
        A list or tuple of arrays of order >= 2 (numpy, torch or cupy, any
        shapes, mixed backends allowed: only alike tensors are stacked).
    labels, cuts, method
        As in :func:`tnlib.spectra`, the same for every tensor; ``labels=None``
        gives each tensor the default labels of its order (``"oihw"`` for 4).
    metric
        ``None``, or one entry per tensor: ``None`` or that tensor's
        ``{group: M}`` (see :func:`tnlib.spectra`).

    Returns
    -------
    list of dict
        ``result[i]`` equals ``tnlib.spectra(tensors[i], labels, cuts, method,
        metric=metric[i])`` within round-off: the same keys in the same order,
        the same matrix shapes.

    Raises
    ------
    TypeError, ValueError
        The errors of :func:`tnlib.spectra`, prefixed by ``tensors[i]:`` for
        the tensor they concern; ``tensors`` not a list or tuple, or empty;
        ``metric`` not a sequence of one entry per tensor.  Every tensor is
        checked before anything is computed.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> rng = np.random.default_rng(0)
    >>> kernels = [rng.standard_normal(shape) for shape in [(8, 4, 3, 3), (8, 4, 3, 3), (4, 4, 1, 1)]]
    >>> result = tnlib.spectra_many(kernels)
    >>> len(result), list(result[2])[:2], result[0]["oi|hw"].matrix_shape
    (3, ['o|ihw', 'i|ohw'], (32, 9))
    """
    items = _check_tensors(tensors)
    check_choice(method, "method", ("auto", *VALUE_METHODS))
    metrics = _check_metrics(metric, len(items))
    cuts = None if cuts is None else list(check_ordered(cuts, "cuts"))  # iterated once per tensor
    jobs = [_prepare(i, x, labels, cuts, method, m) for i, (x, m) in enumerate(zip(items, metrics))]
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.key, []).append(i)
    results: list[dict[str, Spectrum]] = [{} for _ in jobs]
    for alike in groups.values():
        for members in _chunks(alike, jobs[alike[0]]):
            stack = ar.do("stack", [jobs[i].x for i in members])
            solved = stacked_spectra(stack, [jobs[i].exponent for i in members], jobs[members[0]])
            for i, spectra in zip(members, solved):
                results[i] = spectra
    return results


#: The most bytes one stack may hold in working precision (its tensors and the
#: Gram matrices of its largest side), so that batching never needs much more
#: memory than the tensors themselves: larger groups are solved in chunks.
STACK_BYTES = 2**28


def _chunks(members: list[int], job: SpectraJob) -> list[list[int]]:
    """``members`` cut into runs of at most :data:`STACK_BYTES` by estimate (per tensor: its stacked
    copy, one matricization and two Gram matrices of its largest side, in working precision)."""
    shape = tuple(job.x.shape)
    side = max(min(cut_matrix_shape(shape, c, job.labels)) for c in job.cuts)
    itemsize = 16 if B.is_complex(job.x) else 8
    per_tensor = itemsize * (2 * prod(shape) + 2 * side**2)
    size = max(1, STACK_BYTES // per_tensor)
    return [members[start:start + size] for start in range(0, len(members), size)]


def _check_tensors(tensors: Any) -> list[Array]:
    """``tensors`` as a list: a non-empty list or tuple (a single array is refused, not iterated)."""
    check_ordered(tensors, "tensors")
    if not isinstance(tensors, Sequence) or isinstance(tensors, (str, bytes)):
        raise TypeError(
            f"tensors must be a list or tuple of arrays, got {type(tensors).__name__} {describe(tensors)}; "
            f"for one tensor use tnlib.spectra, or pass [tensor]"
        )
    if not tensors:
        raise ValueError("tensors must hold at least one array, got an empty sequence")
    return list(tensors)


def _check_metrics(metric: Any, count: int) -> list[Mapping[str, Array] | None]:
    """One metric (or ``None``) per tensor."""
    if metric is None:
        return [None] * count
    if isinstance(metric, Mapping) or not isinstance(metric, Sequence) or isinstance(metric, (str, bytes)):
        raise TypeError(
            f"metric must be None or a list with one entry per tensor (None or {{group: M}}), "
            f"got {describe(metric)}; for one metric shared by all, pass [metric] * len(tensors)"
        )
    if len(metric) != count:
        raise ValueError(f"metric must have one entry per tensor: {count} tensors, {len(metric)} entries")
    return list(metric)


def _prepare(index: int, tensor: Array, labels: Any, cuts: Any, method: str, metric: Any) -> SpectraJob:
    """The job of ``tensors[index]``; an error says which tensor it concerns."""
    try:
        return SpectraJob.prepare(tensor, labels, cuts, method, metric, name=f"tensors[{index}]")
    except (TypeError, ValueError) as error:
        text = str(error)
        if text.startswith(f"tensors[{index}]"):
            raise
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"tensors[{index}]: {text}") from error
