"""Cuts (bipartitions of labelled indices), matricization and truncation along cuts.

A tensor ``T`` of order ``n`` carries one single-character label per index; a
conv kernel in PyTorch's layout ``(out, in, kh, kw)`` is labelled ``"oihw"``.
A *cut* ``A|B`` splits the labels into two non-empty sides.  Matricizing ``T``
across it gives the matrix ``T_(A|B)`` whose rows run over the joint index of
``A`` and whose columns run over ``B`` (row-major within each side), so that
``T_(B|A) = T_(A|B)^T`` and a cut equals its mirror.

A tensor of order ``n`` has ``2**(n-1) - 1`` distinct cuts: 7 for a kernel,
``o|ihw, i|ohw, h|oiw, w|oih, oi|hw, oh|iw, ow|ih``.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from itertools import combinations
from math import prod
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import check_array, check_choice, check_ordered, check_positive_int, check_seed, describe
from tnlib.metric import Metric, check_cuts
from tnlib.svd import SVD_METHODS, truncated_svd_checked
from tnlib.truncation import TruncationInfo, TruncationSpec

Array = Any

#: Default labels of a 4-index tensor: PyTorch's conv kernel layout.
KERNEL_LABELS = "oihw"


class Cut:
    """A bipartition ``left|right`` of index labels, e.g. ``Cut("oi|hw")``.

    Two cuts are equal when they split the labels the same way, whatever the
    order of the sides or of the labels within a side: ``Cut("oi|hw") ==
    Cut("wh|io")``.  ``str(cut)`` gives the text as written.
    """

    __slots__ = ("left", "right")

    def __init__(self, text: str) -> None:
        if isinstance(text, Cut):
            text = str(text)
        if not isinstance(text, str):
            raise TypeError(f"cut must be a string like 'oi|hw' or a Cut, got {type(text).__name__}")
        parts = text.replace(" ", "").split("|")
        if len(parts) != 2:
            raise ValueError(f"cut must contain exactly one '|' between its two sides, got {text!r}")
        left, right = parts
        if not left or not right:
            raise ValueError(f"cut {text!r} has an empty side; both sides need at least one label")
        repeated = sorted({c for c in left + right if (left + right).count(c) > 1})
        if repeated:
            raise ValueError(f"cut {text!r} repeats label(s) {', '.join(repeated)}; each label goes on one side once")
        self.left = left
        self.right = right

    @classmethod
    def from_sides(cls, left: Iterable[str], right: Iterable[str]) -> Cut:
        return cls("".join(left) + "|" + "".join(right))

    @property
    def labels(self) -> str:
        return self.left + self.right

    def _key(self) -> frozenset:
        return frozenset((frozenset(self.left), frozenset(self.right)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Cut(other)
            except (TypeError, ValueError):
                return False
        return isinstance(other, Cut) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return f"{self.left}|{self.right}"

    def __repr__(self) -> str:
        return f"Cut({str(self)!r})"

    def mirror(self) -> Cut:
        """The same cut with its sides swapped."""
        return Cut(f"{self.right}|{self.left}")

    def check(self, labels: str) -> Cut:
        """Raise ``ValueError`` unless the cut splits exactly ``labels``."""
        unknown = [c for c in self.labels if c not in labels]
        missing = [c for c in labels if c not in self.labels]
        if unknown or missing:
            detail = []
            if unknown:
                detail.append(f"unknown label(s) {''.join(unknown)!r}")
            if missing:
                detail.append(f"missing label(s) {''.join(missing)!r}")
            raise ValueError(
                f"cut {str(self)!r} must split all of the labels {labels!r} into two sides; "
                f"it has {' and '.join(detail)}"
            )
        return self


CutLike = str | Cut


def resolve_labels(labels: str | Sequence[str] | None, ndim: int, name: str = "labels") -> str:
    """Validate ``labels`` for a tensor of order ``ndim`` and return them as a string.

    ``None`` means ``"oihw"`` for a 4-index tensor (a conv kernel) and the first
    ``ndim`` lower-case letters otherwise.
    """
    if labels is None:
        if ndim == 4:
            return KERNEL_LABELS
        if ndim > 26:
            raise ValueError(f"{name} must be given for a tensor of order {ndim} (> 26)")
        return string.ascii_lowercase[:ndim]
    if not isinstance(labels, str):
        if not isinstance(check_ordered(labels, name), Iterable):
            raise TypeError(f"{name} must be a string of one-character labels such as 'oihw', got {describe(labels)}")
        items = list(labels)
        if not all(isinstance(c, str) and len(c) == 1 for c in items):
            raise TypeError(f"{name} must be a string of one-character labels, got {labels!r}")
        labels = "".join(items)
    if len(labels) != ndim:
        raise ValueError(f"{name} must give one label per index: the tensor has {ndim}, {labels!r} has {len(labels)}")
    if "|" in labels or any(c.isspace() for c in labels):
        raise ValueError(f"{name} must not contain '|' or white space, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{name} must be distinct, got {labels!r}")
    return labels


def as_cut(cut: CutLike, labels: str) -> Cut:
    """A validated :class:`Cut` of ``labels`` from a string or a ``Cut``."""
    return Cut(cut).check(labels)


#: The most labels :func:`all_cuts` enumerates: ``2**15 - 1 = 32767`` cuts.  Their
#: number doubles with every label (26 labels have 33 million), so beyond this the
#: cuts wanted must be chosen explicitly.
MAX_CUT_LABELS = 16


def all_cuts(labels: str | Sequence[str]) -> list[Cut]:
    """Every bipartition of ``labels``, each once (mirrors are the same cut).

    Ordered by the size of the smaller side, then by label position; a side of
    exactly half the labels is the one holding the first label.  ``n`` labels
    give ``2**(n-1) - 1`` cuts; more than ``MAX_CUT_LABELS = 16`` labels are
    refused (``ValueError``), since their cuts are too many to enumerate.

    Examples
    --------
    >>> [str(c) for c in all_cuts("oihw")]
    ['o|ihw', 'i|ohw', 'h|oiw', 'w|oih', 'oi|hw', 'oh|iw', 'ow|ih']
    """
    if not isinstance(labels, (str, Sequence)):
        raise TypeError(f"labels must be a string of one-character labels such as 'oihw', got {describe(labels)}")
    labels = resolve_labels(labels, len(labels))
    n = len(labels)
    if n < 2:
        raise ValueError(f"labels must have at least two entries to be cut, got {labels!r}")
    if n > MAX_CUT_LABELS:
        raise ValueError(
            f"labels: {n} labels have 2**{n - 1} - 1 cuts, too many to enumerate (at most {MAX_CUT_LABELS} labels, "
            f"{2 ** (MAX_CUT_LABELS - 1) - 1} cuts); choose the cuts wanted explicitly (e.g. spectra(..., cuts=[...]))"
        )
    cuts = []
    for size in range(1, n // 2 + 1):
        for positions in combinations(range(n), size):
            if 2 * size == n and 0 not in positions:
                continue
            left = "".join(labels[p] for p in positions)
            right = "".join(c for c in labels if c not in left)
            cuts.append(Cut(f"{left}|{right}"))
    return cuts


def cut_permutation(cut: Cut, labels: str) -> list[int]:
    """Axis permutation that puts the left side's indices first, as written."""
    return [labels.index(c) for c in cut.left + cut.right]


def cut_matrix_shape(shape: Sequence[int], cut: Cut, labels: str) -> tuple[int, int]:
    """``(rows, columns)`` of the matricization of a tensor of ``shape`` across ``cut``."""
    dims = dict(zip(labels, shape))
    return prod(dims[c] for c in cut.left), prod(dims[c] for c in cut.right)


def matricize_checked(x: Array, cut: Cut, labels: str) -> Array:
    """Matricization of a validated tensor across a validated cut."""
    perm = cut_permutation(cut, labels)
    return ar.do("reshape", ar.do("transpose", x, perm), cut_matrix_shape(x.shape, cut, labels))


def fold(matrix: Array, cut: Cut, labels: str, shape: Sequence[int]) -> Array:
    """Inverse of matricization: the tensor of ``shape`` whose matricization is ``matrix``."""
    perm = cut_permutation(cut, labels)
    permuted = ar.do("reshape", matrix, tuple(shape[p] for p in perm))
    return ar.do("transpose", permuted, list(np.argsort(perm)))


def matricize(tensor: Array, cut: CutLike, labels: str | Sequence[str] | None = None) -> Array:
    """The matrix ``T_(A|B)`` of ``tensor`` across ``cut``, on the tensor's backend.

    Rows run over the left side's indices in the order the cut writes them,
    columns over the right side's, both row-major.

    Examples
    --------
    >>> import numpy as np
    >>> matricize(np.zeros((8, 4, 3, 3)), "oh|iw").shape
    (24, 12)
    """
    x = check_array(tensor, "tensor")
    labels = resolve_labels(labels, x.ndim)
    return matricize_checked(x, as_cut(cut, labels), labels)


def _as_cut_list(cut: CutLike | Sequence[CutLike], labels: str) -> list[Cut]:
    if not isinstance(cut, (str, Cut, Iterable)):
        raise TypeError(f"cut must be a cut like 'oi|hw', a Cut or a list of them, got {describe(cut)}")
    cuts = [cut] if isinstance(cut, (str, Cut)) else list(check_ordered(cut, "cut"))
    if not cuts:
        raise ValueError("cut must be a cut like 'oi|hw' or a non-empty list of cuts, got an empty list")
    return [as_cut(c, labels) for c in cuts]


def _max_ranks(max_rank: int | Sequence[int] | None, count: int) -> list[int | None]:
    """One rank bound per cut (a scalar is validated later, with the other keywords)."""
    if not isinstance(max_rank, (list, tuple, np.ndarray)):
        return [max_rank] * count
    if len(max_rank) != count:
        raise ValueError(f"max_rank must be an int or one int per cut ({count} cuts), got {len(max_rank)} values")
    return [check_positive_int(r, "max_rank") for r in max_rank]


def truncate(
    tensor: Array,
    cut: CutLike | Sequence[CutLike],
    labels: str | Sequence[str] | None = None,
    max_rank: int | Sequence[int] | None = None,
    rel_error: float | None = None,
    cutoff: float | None = None,
    method: str = "auto",
    seed: int | np.random.Generator | None = None,
    *,
    metric: Mapping[str, Array] | None = None,
) -> tuple[Array, TruncationInfo]:
    """Truncate a tensor across one cut, or several cuts in turn.

    Across a cut ``A|B`` the tensor is replaced by the best approximation of
    rank ``r`` of its matricization ``T_(A|B)`` (Eckart-Young), folded back to
    the original shape.  With a list of cuts the truncations are applied in
    order, each to the result of the previous one, as in the compressibility
    study of Singh, Jahromi and Orus (2024).

    Parameters
    ----------
    tensor
        Array of any order and backend.
    cut
        ``"oi|hw"``, a :class:`Cut`, or a sequence of them.
    labels
        One character per index (default ``"oihw"`` for 4-index tensors).
    max_rank
        Rank kept across each cut at most: an int for all cuts or one per cut.
    rel_error
        Target for the whole result, ``||T - T~||_F <= rel_error ||T||_F``.
        With several cuts the budget is spent in turn: step ``i`` of ``k`` may
        add at most an equal share of what is left, ``(rel_error ||T|| -
        ||T - T_(i-1)||) / (k - i)``, so by the triangle inequality the target
        holds for the whole sequence.
    cutoff
        Per cut, drop singular values below ``cutoff * s_max``.
    method, seed
        Passed to :func:`tnlib.truncated_svd`.
    metric
        ``{group: M}`` (:mod:`tnlib.metric`): measure everything in the norm
        ``||X||_M``.  Each cut is then the best rank-``r`` approximation in that
        norm (the truncated SVD of ``T_(A|B)`` with each group's square root
        applied, mapped back), and ``rel_error`` and the report are in that
        norm.  Every cut must keep each group on one side (``ValueError``
        otherwise).

    Returns
    -------
    truncated : array
        Same shape, dtype, backend and device as ``tensor``.
    info : TruncationInfo
        ``ranks`` kept per cut; ``rel_error``, ``norm_loss`` and
        ``discarded_weight`` of the whole result against ``tensor`` (in the
        metric's norm with ``metric``); ``steps`` holds each cut's own report
        (relative to its input) for several cuts.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> k = np.random.default_rng(0).standard_normal((8, 4, 3, 3))
    >>> kt, info = tnlib.truncate(k, ["o|ihw", "i|ohw"], max_rank=2)
    >>> kt.shape, info.ranks
    ((8, 4, 3, 3), (2, 2))
    """
    x = check_array(tensor, "tensor", min_ndim=2)
    labels = resolve_labels(labels, x.ndim)
    cuts = _as_cut_list(cut, labels)
    max_ranks = _max_ranks(max_rank, len(cuts))
    spec = TruncationSpec.from_kwargs(max_ranks[0], rel_error, cutoff)
    check_choice(method, "method", ("auto", *SVD_METHODS))
    rng = check_seed(seed)
    weights = Metric.build(metric, labels, x, partial(check_cuts, cuts=cuts))
    if weights is None:
        return _truncate_checked(x, cuts, labels, max_ranks, spec, method, rng)
    result, info = _truncate_checked(weights.to_metric_space(x), cuts, labels, max_ranks, spec, method, rng)
    return weights.from_metric_space(result), info


def _truncate_checked(
    x: Array, cuts: list[Cut], labels: str, max_ranks: list[int | None], spec: TruncationSpec, method: str,
    rng: np.random.Generator,
) -> tuple[Array, TruncationInfo]:
    """:func:`truncate` on validated arguments, in the Frobenius norm."""
    norm = B.frobenius_norm(x)
    current, steps, spent = x, [], 0.0
    for i, c in enumerate(cuts):
        step_error = spec.rel_error
        if spec.rel_error is not None and len(cuts) > 1:
            current_norm = B.frobenius_norm(current)
            budget = max(spec.rel_error * norm - spent, 0.0) / (len(cuts) - i)
            step_error = min(budget / current_norm, 1.0) if current_norm > 0 else 0.0
        step_spec = replace(spec, max_rank=max_ranks[i], rel_error=step_error)
        u, s, vh, info = truncated_svd_checked(matricize_checked(current, c, labels), step_spec, method, rng)
        current = fold((u * s[None, :]) @ vh, c, labels, x.shape)
        steps.append(replace(info, cut=str(c)))
        if len(cuts) > 1:
            spent = B.frobenius_norm(current - x)
    if len(cuts) == 1:
        return current, steps[0]
    return current, _sequence_info(x, current, norm, steps)


def _sequence_info(x: Array, result: Array, norm: float, steps: list[TruncationInfo]) -> TruncationInfo:
    """Report of a sequence of truncations, measured on the dense result."""
    ranks = tuple(step.rank for step in steps)
    if norm == 0.0:
        return TruncationInfo(ranks, 0.0, 0.0, 0.0, steps=tuple(steps))
    kept = min(B.frobenius_norm(result) / norm, 1.0)  # projections never add norm; clip rounding
    return TruncationInfo(
        ranks=ranks,
        rel_error=B.frobenius_norm(result - x) / norm,
        norm_loss=1.0 - kept,
        discarded_weight=1.0 - kept**2,
        steps=tuple(steps),
    )
