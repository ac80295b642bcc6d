"""Whole-kernel reports of kernels decomposed or truncated group by group.

A grouped conv's kernel is ``G`` disjoint blocks ``K_g``, each treated on its
own.  The blocks are orthogonal in the Frobenius inner product, so the whole
kernel's error and discarded weight follow exactly from the groups' reports.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

import torch
from torch import Tensor

import tnlib


def truncation_report(infos: list[tnlib.TruncationInfo], ranks: tuple[int, ...], kernel: Tensor,
                      cut: str | None = None) -> tnlib.TruncationInfo:
    """The core's report for one group; for several, ``ranks`` and the errors of the whole kernel.

    ``kernel`` holds the groups one after another along its first axis.  With
    ``n_g = ||K_g||^2`` the whole kernel's squared error is ``sum_g rel_g^2 n_g``
    and its discarded weight ``sum_g dw_g n_g / sum_g n_g``: exact, from the
    groups' own reports (which ``steps`` holds), with no rounding of a dense
    difference.  Norms are taken in double precision.
    """
    if len(infos) == 1:
        return infos[0]
    sq_norms = [float(n) ** 2 for n in torch.linalg.vector_norm(kernel.double().reshape(len(infos), -1), dim=1)]
    total = sum(sq_norms)
    if total == 0.0:
        return tnlib.TruncationInfo(ranks, 0.0, 0.0, 0.0, cut, steps=tuple(infos))
    error_sq = sum(info.rel_error**2 * n for info, n in zip(infos, sq_norms))
    discarded = min(sum(info.discarded_weight * n for info, n in zip(infos, sq_norms)) / total, 1.0)
    return tnlib.TruncationInfo(ranks, math.sqrt(error_sq / total), 1.0 - math.sqrt(1.0 - discarded), discarded,
                                cut, steps=tuple(infos))


def relative_error(kernel: Tensor, approx: Tensor) -> float:
    """``||kernel - approx||_F / ||kernel||_F`` in double precision, 0 for a zero kernel."""
    norm = _norm(kernel)
    return _norm(kernel.double() - approx.double()) / norm if norm > 0 else 0.0


def _norm(x: Tensor) -> float:
    return float(torch.linalg.vector_norm(x.double()))


def norm_loss(kernel: Tensor, approx: Tensor) -> float:
    """``1 - ||approx||_F / ||kernel||_F`` in double precision, 0 for a zero kernel."""
    norm = _norm(kernel)
    return 1.0 - _norm(approx) / norm if norm > 0 else 0.0


def as_stored(info: Any, kernel: Tensor, stored: Tensor) -> Any:
    """``info`` (a dataclass report) with the errors of ``stored`` measured against ``kernel``.

    A fit computed in float64 and stored in a narrower dtype is rounded when
    stored; its exact report then describes a kernel the layer does not hold.
    ``rel_error`` (and ``norm_loss``, where the report has one) become those of
    the stored kernel, in double precision; the ranks, steps and discarded
    weight (the decomposition's own) stay.
    """
    measures = {"rel_error": relative_error, "norm_loss": norm_loss}
    return replace(info, **{f.name: measures[f.name](kernel, stored) for f in fields(info) if f.name in measures})
