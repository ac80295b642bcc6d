"""How much each rank-one term, channel and kernel position carries in a CP model (CPAC-Conv).

Wang, Guo and Yue (CPAC-Conv) read the significance of feature maps off the
values of a CP-decomposed kernel.  tnlib makes this precise.  The score of
rank-one term ``r`` is its Frobenius norm,

    s_r = |w_r| prod_n ||a^(n)_r||_2,

and the importance of index ``i`` of a set ``S`` of modes (one mode, e.g. the
output channels, or several, e.g. the kernel positions ``(h, w)``) is the share
of the model's energy it carries when the terms are counted as orthogonal,

    I_S(i_S) = sum_r s_r^2 prod_{n in S} (a^(n)_r[i_n] / ||a^(n)_r||)^2 / sum_r s_r^2,

which sums to 1 over ``i_S``.  When the terms are mutually orthogonal (as in
an SVD) ``I_S`` is exactly the share of ``||T~||_F^2`` in the slices of
``i_S``; otherwise it attributes each term's energy to the indices its factors
weight, ignoring the overlaps between terms.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import autoray as ar

from tnlib.cuts import resolve_labels
from tnlib.decompositions.cp_fit import normalize
from tnlib.decompositions.cp_tensor import CPTensor

Array = Any


class CPSignificance:
    """Scores of the rank-one terms of a CP model and the importances they imply.

    Attributes
    ----------
    scores
        ``s_r`` for every term, shape ``(R,)``.
    labels
        One letter per mode (``"oihw"`` for a 4-D kernel by default).
    """

    def __init__(self, model: CPTensor, labels: str | Sequence[str] | None = None) -> None:
        if not isinstance(model, CPTensor):
            raise TypeError(f"model must be a CPTensor, got {type(model).__name__}")
        self.labels = resolve_labels(labels, len(model.shape))
        norms, self._units = normalize(model.factors)
        self.scores = ar.do("abs", model.weights) * norms

    def importance(self, labels: str | Sequence[str]) -> Array:
        """``I_S`` over the modes named by ``labels`` (in that order), summing to 1.

        ``importance("o")`` ranks output channels, ``importance("i")`` input
        channels and ``importance("hw")`` kernel positions.
        """
        labels = list(labels)
        unknown = [label for label in labels if label not in self.labels]
        if not labels or unknown or len(set(labels)) != len(labels):
            raise ValueError(f"labels must name distinct modes among {self.labels!r}, got {''.join(labels)!r}")
        energy = self.scores**2
        letters = string.ascii_lowercase[: len(labels)]  # einsum letters, whatever the labels are
        squares = [self._units[self.labels.index(label)] ** 2 for label in labels]
        subscripts = ",".join(["z"] + [letter + "z" for letter in letters]) + "->" + letters
        joint = ar.do("einsum", subscripts, energy, *squares)
        total = ar.do("sum", energy)
        return joint / total if float(total) > 0 else joint


def cp_significance(model: CPTensor, labels: str | Sequence[str] | None = None) -> CPSignificance:
    """Term scores and channel/position importances of a CP model (see module docs).

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> kernel = np.random.default_rng(0).standard_normal((8, 4, 3, 3))
    >>> sig = tnlib.cp_significance(tnlib.cp(kernel, 5, seed=0))
    >>> sig.importance("o").shape, round(float(sig.importance("hw").sum()), 12)
    ((8,), 1.0)
    """
    return CPSignificance(model, labels)
