"""The one truncation vocabulary shared by every truncating function, and its report.

Every function of tnlib that discards singular values (or the terms of a
decomposition) takes the same keywords and means the same by them:

``max_rank``
    An upper bound on the rank kept across one cut, a cap: a bound above what
    the shape allows simply does not bind.  :func:`tnlib.mps` calls it
    ``max_bond`` (one per bond) and :func:`tnlib.tucker` ``ranks`` (one per
    mode), with the same meaning.  (CP's ``rank`` is not a cap but the number
    of terms fitted.)
``rel_error``
    A target for the relative Frobenius error ``||T - T~||_F / ||T||_F``.  The
    smallest rank meeting it is kept, so the result meets the target.
``cutoff``
    Singular values below ``cutoff * s_max`` are dropped.

Given together, each criterion allows some rank and the smallest of them is kept
("the most restrictive wins"); the ``rel_error`` target is then met unless
``max_rank`` or ``cutoff`` binds first.  The realized error is always reported.

Two measures of what was lost are reported, because papers use both:

* the relative error ``||T - T~|| / ||T||``,
* the norm loss ``1 - ||T~|| / ||T||``.

For a truncated SVD (an orthogonal projection) with discarded singular values
``s_k, k >= r``: ``rel_error**2 = sum_{k>=r} s_k**2 / sum_k s_k**2``, the
*discarded weight*, and ``norm_loss = 1 - sqrt(1 - rel_error**2)``, which is
smaller than the relative error (about half its square when small).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tnlib._validation import check_fraction, check_positive_int


@dataclass(frozen=True)
class TruncationSpec:
    """Validated truncation keywords: ``max_rank``, ``rel_error``, ``cutoff``.

    Build it with :meth:`from_kwargs`, which checks each value and names the
    offending argument.
    """

    max_rank: int | None = None
    rel_error: float | None = None
    cutoff: float | None = None

    @classmethod
    def from_kwargs(
        cls,
        max_rank: int | None = None,
        rel_error: float | None = None,
        cutoff: float | None = None,
        *,
        rank_name: str = "max_rank",
    ) -> TruncationSpec:
        return cls(
            max_rank=None if max_rank is None else check_positive_int(max_rank, rank_name),
            rel_error=None if rel_error is None else check_fraction(rel_error, "rel_error"),
            cutoff=None if cutoff is None else check_fraction(cutoff, "cutoff"),
        )

    @property
    def is_trivial(self) -> bool:
        """True when nothing is asked for (the full thin decomposition is kept)."""
        return self.max_rank is None and self.rel_error is None and self.cutoff is None

    def kept_rank(self, sq_values: np.ndarray, total_sq: float | None = None) -> int:
        """The rank to keep, given descending squared singular values.

        Parameters
        ----------
        sq_values
            Squared singular values ``s_k**2`` in descending order (host float64).
            May be a leading part of the spectrum (as from a randomized method).
        total_sq
            ``||T||_F**2``. When ``None`` the values are the whole spectrum.

        Returns
        -------
        int
            The smallest rank any criterion allows.  For ``rel_error`` it is the
            smallest ``r`` with ``tail(r) <= rel_error**2 * total_sq``; if the
            values given do not reach the target, all of them are kept.
        """
        n = len(sq_values)
        rank = n
        if self.max_rank is not None:
            rank = min(rank, self.max_rank)
        if self.cutoff is not None:
            values = np.sqrt(sq_values)
            rank = min(rank, int(np.count_nonzero(values >= self.cutoff * values[0])) if n else 0)
        if self.rel_error is not None:
            tails = tail_weights(sq_values, total_sq)
            total = tails[0]
            # a few ulps of slack, so that a target read off a curve, e.g.
            # Spectrum.rel_error(r), gives back rank r despite rounding
            meeting = np.flatnonzero(tails <= (self.rel_error**2) * total * (1 + 8 * np.finfo(float).eps))
            rank = min(rank, int(meeting[0]) if meeting.size else n)
        return rank


def tail_weights(sq_values: np.ndarray, total_sq: float | None = None) -> np.ndarray:
    """``tail[r] = ||T||**2 - sum_{k<r} s_k**2`` for ``r = 0..n`` (length ``n + 1``).

    Summed from the small end so that small tails keep their relative accuracy.
    With ``total_sq`` given, the weight outside the values (``total_sq -
    sum s_k**2``, clipped at 0) is added to every tail.
    """
    sq_values = np.asarray(sq_values, dtype=np.float64)
    outside = 0.0 if total_sq is None else max(float(total_sq) - float(sq_values.sum()), 0.0)
    tails = np.zeros(len(sq_values) + 1)
    tails[:-1] = np.cumsum(sq_values[::-1])[::-1]
    return tails + outside


@dataclass(frozen=True)
class TruncationInfo:
    """What a truncation did.

    Attributes
    ----------
    ranks
        The rank kept at each truncation step (one entry for a single cut).
    rel_error
        Realized relative error ``||T - T~||_F / ||T||_F`` of the whole result.
    norm_loss
        ``1 - ||T~||_F / ||T||_F``.
    discarded_weight
        Fraction of the squared norm removed, ``1 - ||T~||**2 / ||T||**2``.  For
        a single truncated SVD it equals ``rel_error**2`` and the sum of the
        discarded Schmidt weights.
    cut
        The cut truncated, for a single step across a cut (``None`` otherwise).
    steps
        The report of each step of a multi-step truncation, in order.
    """

    ranks: tuple[int, ...]
    rel_error: float
    norm_loss: float
    discarded_weight: float
    cut: str | None = None
    steps: tuple[TruncationInfo, ...] = field(default=())

    @property
    def rank(self) -> int:
        """The kept rank of a single-step truncation."""
        if len(self.ranks) != 1:
            raise AttributeError(f"this truncation kept several ranks {self.ranks}; read .ranks instead")
        return self.ranks[0]

    @classmethod
    def from_spectrum(
        cls, sq_values: np.ndarray, rank: int, total_sq: float | None = None, cut: str | None = None
    ) -> TruncationInfo:
        """Report of keeping the leading ``rank`` of the squared singular values.

        Exact for any truncation that projects orthogonally onto the kept
        singular subspace (SVD, Gram and randomized methods alike).
        """
        tails = tail_weights(sq_values, total_sq)
        total = tails[0]
        if total == 0.0:
            return cls((int(rank),), 0.0, 0.0, 0.0, cut)
        discarded = float(min(max(tails[rank] / total, 0.0), 1.0))
        return cls(
            ranks=(int(rank),),
            rel_error=float(np.sqrt(discarded)),
            norm_loss=float(1.0 - np.sqrt(1.0 - discarded)),
            discarded_weight=discarded,
            cut=cut,
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict."""
        out = asdict(self)
        out["ranks"] = list(self.ranks)
        out["steps"] = [step.to_dict() for step in self.steps]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TruncationInfo:
        """The report that :meth:`to_dict` wrote (``cut`` and ``steps`` optional).

        Examples
        --------
        >>> info = TruncationInfo((2,), 0.5, 0.134, 0.25, "o|ihw")
        >>> TruncationInfo.from_dict(info.to_dict()) == info
        True
        """
        if not isinstance(data, dict) or not {"ranks", "rel_error", "norm_loss", "discarded_weight"} <= set(data):
            raise ValueError("data must be a dict with the keys 'ranks', 'rel_error', 'norm_loss' and "
                             f"'discarded_weight' (as written by TruncationInfo.to_dict), got {data!r:.80}")
        return cls(tuple(int(r) for r in data["ranks"]), float(data["rel_error"]), float(data["norm_loss"]),
                   float(data["discarded_weight"]), data.get("cut"),
                   tuple(cls.from_dict(step) for step in data.get("steps", ())))
