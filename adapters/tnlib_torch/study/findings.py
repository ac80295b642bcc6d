"""The findings of a compressibility study: numbers computed from its records, by pure functions.

- :func:`tolerated_norm_loss` (one layer truncated alone) and :func:`tolerated_norm_loss_all`
  (every layer at once): the largest truncation that keeps the accuracy within a tolerance of the
  baseline, the fraction of the kernel's norm it removes, and the paired test of that claim;
- :func:`cut_spectra` and :func:`most_compressible`: each kernel's entropy across each cut next to its
  maximum, the norm a truncation to a fixed fraction of the rank loses, and the cuts that the levels
  cannot truncate at all;
- :func:`drop_predictors`: how well the kernel's norm loss and the data error rank the accuracy drop
  (the seed paper's question), and :func:`depth_trend`: the tolerated norm loss against depth;
- :func:`recovery_gains`: what fine-tuning gives back after a truncation, less what the same
  fine-tuning does to the model left whole (:func:`control_curve`);
- :func:`decompositions` and :func:`rank_decompositions`: the decompositions at equal parameter budget,
  before and after fine-tuning, ranked with a paired test of the first against the second;
- :func:`summarize`: all of them at once, as :class:`Findings`, what :mod:`tnlib_torch.study.report`
  states.

None of them needs matplotlib; the statistics are :mod:`tnlib_torch.study.statistics`.

Within tolerance
----------------
A truncation keeps the accuracy when its top-1 accuracy is at most ``tolerance`` below the
baseline's (``0.01``: one point).  Accuracies are ratios of counts, so a drop of exactly
``tolerance`` is within it, whatever the rounding of the floats.  A layer tolerates a cut up to the
largest level such that it and every smaller level tried keep the accuracy: accuracy is noisy, and a
larger level that happens to pass after a smaller one failed is not one the layer tolerates.  The
norm loss ``1 - ||K~|| / ||K||`` and relative error ``||K - K~|| / ||K||`` reported are those
realized at that level.  Levels that change nothing (``noop``: the kept rank is the full rank) are
left out: they keep the accuracy trivially; a cut that no level changes cannot be truncated.

That rule reads the point estimates.  Where the records hold the per-sample ``hits``, the tolerated
truncation also carries the paired comparison with the baseline on the same test samples
(:func:`~tnlib_torch.study.statistics.paired_comparison`), whose verdict says whether the samples show
it within the tolerance (``"within"``) or cannot tell (``"undecided"``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from tnlib_torch.study.records import (
    Record,
    accuracy_curve,
    count,
    field,
    hits,
    layers_max,
    number,
    of_kind,
    saves,
    unchanged,
)
from tnlib_torch.study.statistics import (
    Correlation,
    PairedComparison,
    paired_comparison,
    spearman,
    spearman_difference,
)

__all__ = [
    "RANK_FRACTION",
    "CutSpectrum",
    "Curve",
    "Decomposition",
    "DepthTrend",
    "Findings",
    "MIN_LAYERS",
    "Predictors",
    "Ranking",
    "RecoveryGain",
    "Tolerated",
    "control_curve",
    "cut_spectra",
    "decompositions",
    "depth_trend",
    "drop_predictors",
    "most_compressible",
    "rank_decompositions",
    "recovery_gains",
    "require_baseline",
    "summarize",
    "tolerated_norm_loss",
    "tolerated_norm_loss_all",
    "untruncated_cuts",
]

#: Absorbs the rounding of accuracies (ratios of counts) in the comparison with the tolerance.
_SLACK = 1e-9
#: The fraction of a cut's full rank at which :func:`cut_spectra` measures the norm lost.
RANK_FRACTION = 0.25
#: A decomposition with fewer parameters than this fraction of its budget is not compared at equal parameters.
_SHORT_OF_BUDGET = 0.9
#: The modes of a decomposition; records without ``mode`` were made data-free.
_DATA_FREE = "data-free"


def _comparison(record: Record, baseline: Record, tolerance: float, *path: str) -> PairedComparison | None:
    """The paired comparison of an evaluation with the baseline's; ``None`` if either lacks hits."""
    model, reference = hits(record, *path), hits(baseline)
    if model is None or reference is None:
        return None
    if model.size != reference.size:
        raise ValueError(f"the record {list(record['key'])} was evaluated on {model.size} test samples, the "
                         f"baseline on {reference.size}: their hits do not compare")
    return paired_comparison(model, reference, tolerance)


@dataclasses.dataclass(frozen=True)
class Tolerated:
    """The largest truncation that keeps the accuracy (see the module notes), and what it did.

    Attributes
    ----------
    level : float
        The relative error the kernel(s) were truncated to.
    norm_loss, rel_error : float
        Realized at that level; for every layer truncated at once, the largest among the layers.
    top1 : float
        The accuracy left.
    count : int
        The test samples it was measured on.
    params, factored_params : float
        The parameters of the truncated layer(s) dense, and stored as the two factors across the cut.
    saves : bool
        Whether the two factors have fewer parameters than dense.
    comparison : PairedComparison or None
        With the baseline, on the same samples; ``None`` without per-sample hits.
    """

    level: float
    norm_loss: float
    rel_error: float
    top1: float
    count: int
    params: float
    factored_params: float
    saves: bool
    comparison: PairedComparison | None


@dataclasses.dataclass(frozen=True)
class Curve:
    """Top-1 accuracy before fine-tuning and after each epoch (``top1[0]`` is before), on ``count`` samples."""

    top1: tuple[float, ...]
    count: int

    @property
    def before(self) -> float:
        return self.top1[0]

    @property
    def after(self) -> float:
        return self.top1[-1]

    @property
    def change(self) -> float:
        """What the fine-tuning changed, ``after - before``."""
        return self.after - self.before


@dataclasses.dataclass(frozen=True)
class RecoveryGain:
    """The fine-tuning of a truncated model (``curve``) beside that of the untruncated one (``control``)."""

    target: str
    cut: str
    level: float
    curve: Curve
    control: Curve | None

    @property
    def gain(self) -> float | None:
        """What fine-tuning repairs of the truncation: the accuracy it recovers less the control's change.

        ``None`` without a control.
        """
        return None if self.control is None else self.curve.change - self.control.change


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """One decomposition at its parameter budget: the parameters of its layers and the top-1 accuracy.

    ``mode`` is ``"data-free"`` or ``"calibrated"``; ``count`` the test samples of ``before`` and ``after``;
    ``equal_params`` whether it spends at least 0.9 x budget of the parameters (the record's
    ``equal_params``; in older records, from ``ratio``), so that it compares with the others; ``tuning``
    the paired comparison of its accuracy after fine-tuning with before (``None`` without hits).
    """

    method: str
    budget: float
    mode: str
    params_before: float
    params_after: float
    ratio: float
    before: float
    after: float
    count: int
    equal_params: bool
    tuning: PairedComparison | None = None

    @property
    def lowered(self) -> bool:
        """Whether fine-tuning lowered its accuracy: significantly by the paired test of ``tuning`` (after
        against before on the same samples), or by more than a point without per-sample hits."""
        if self.tuning is None:
            return self.before - self.after > 0.01
        return self.tuning.difference < 0 and self.tuning.p_value < 1 - self.tuning.confidence

    @property
    def short_of_budget(self) -> bool:
        """Whether it keeps fewer than 0.9 x budget of the parameters: then it is not compared at equal parameters."""
        return not self.equal_params


def require_baseline(records: Sequence[Record]) -> Record:
    """The baseline record of ``records``.

    Raises
    ------
    ValueError
        If there is none: every accuracy of the report is compared with it.
    """
    baselines = of_kind(records, "baseline")
    if not baselines:
        raise ValueError("the records hold no baseline (a record with key ['baseline']); the report compares every "
                         "accuracy with the baseline's, so measure it first (tnlib_torch.study.measure.baseline)")
    return baselines[0]


def _check_tolerance(tolerance: object) -> float:
    """A drop of accuracy in [0, 1)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a real number in [0, 1), got {type(tolerance).__name__}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1) (0.01: one point of accuracy), got {tolerance!r}")
    return float(tolerance)


def _tolerated(sweep: list[Record], baseline: Record, tolerance: float,
               measure: Callable[[Record, str], float]) -> Tolerated | None:
    """The largest level of ``sweep`` up to which every level keeps the accuracy; ``None`` if the first does not.

    ``measure(record, name)`` reads the record's ``norm_loss`` and ``rel_error``.
    """
    kept, top1 = None, number(baseline, "top1")
    for record in sorted(sweep, key=lambda record: number(record, "level")):
        if top1 - number(record, "top1") > tolerance + _SLACK:
            break
        kept = record
    if kept is None:
        return None
    return Tolerated(level=number(kept, "level"), norm_loss=measure(kept, "norm_loss"),
                     rel_error=measure(kept, "rel_error"), top1=number(kept, "top1"), count=count(kept),
                     params=number(kept, "params"), factored_params=number(kept, "factored_params"),
                     saves=saves(kept), comparison=_comparison(kept, baseline, tolerance))


def _sweeps(records: Sequence[Record]) -> dict[str, dict[str, list[Record]]]:
    """The ``sweep`` records by layer and cut, in the study's order."""
    sweeps: dict[str, dict[str, list[Record]]] = {}
    for record in of_kind(records, "sweep"):
        sweeps.setdefault(field(record, "layer"), {}).setdefault(field(record, "cut"), []).append(record)
    return sweeps


def tolerated_norm_loss(records: Sequence[Record], tolerance: float = 0.01) -> dict[str, dict[str, Tolerated | None]]:
    """The largest truncation of each layer alone, per cut, that keeps the accuracy within ``tolerance``.

    From the ``sweep`` records, their no-op levels left out (see the module notes for the rule).

    Returns
    -------
    dict
        ``{layer: {cut: Tolerated or None}}``, layers and cuts in the study's order; ``None`` where even
        the smallest level loses more than ``tolerance``; a cut whose every level is a no-op is left out
        (:func:`untruncated_cuts`).

    Raises
    ------
    ValueError
        Without a baseline, or with a malformed record.

    Examples
    --------
    >>> records = [{"key": ["baseline"], "top1": 0.9, "count": 1000}] + [
    ...     {"key": ["sweep", "conv1", "o|ihw", level], "layer": "conv1", "cut": "o|ihw", "level": level, "top1": top1,
    ...      "count": 1000, "rel_error": level, "norm_loss": level / 10, "params": 100, "factored_params": 60}
    ...     for level, top1 in [(0.1, 0.9), (0.3, 0.89), (0.5, 0.8)]]
    >>> kept = tolerated_norm_loss(records)["conv1"]["o|ihw"]
    >>> kept.level, kept.top1, kept.norm_loss, kept.saves
    (0.3, 0.89, 0.03, True)
    >>> tolerated_norm_loss(records, tolerance=0.001)["conv1"]["o|ihw"].level
    0.1
    """
    baseline, tolerance = require_baseline(records), _check_tolerance(tolerance)
    found: dict[str, dict[str, Tolerated | None]] = {}
    for layer, by_cut in _sweeps(records).items():
        for cut, sweep in by_cut.items():
            changed = [record for record in sweep if not unchanged(record)]
            if changed:
                found.setdefault(layer, {})[cut] = _tolerated(changed, baseline, tolerance, number)
    return found


def untruncated_cuts(records: Sequence[Record]) -> dict[str, list[str]]:
    """The cuts of each layer that no ``sweep`` level changed (every level a no-op): ``{layer: [cut, ...]}``."""
    found: dict[str, list[str]] = {}
    for layer, by_cut in _sweeps(records).items():
        for cut, sweep in by_cut.items():
            if all(unchanged(record) for record in sweep):
                found.setdefault(layer, []).append(cut)
    return found


def tolerated_norm_loss_all(records: Sequence[Record], tolerance: float = 0.01) -> dict[str, Tolerated | None]:
    """As :func:`tolerated_norm_loss`, for every layer truncated at once (the ``sweep_all`` records).

    The norm loss and relative error are the largest among the layers (:func:`~tnlib_torch.study.records.layers_max`).

    Returns
    -------
    dict
        ``{cut: Tolerated or None}``; a cut whose every level changes no kernel is left out.
    """
    baseline, tolerance = require_baseline(records), _check_tolerance(tolerance)
    sweeps: dict[str, list[Record]] = {}
    for record in of_kind(records, "sweep_all"):
        sweeps.setdefault(field(record, "cut"), []).append(record)
    found = {}
    for cut, sweep in sweeps.items():
        changed = [record for record in sweep if not unchanged(record)]
        if changed:
            found[cut] = _tolerated(changed, baseline, tolerance, layers_max)
    return found


# -- spectra --------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CutSpectrum:
    """A kernel's spectrum across one cut, summarized (:func:`cut_spectra`).

    Attributes
    ----------
    layer, cut : str
    entropy : float
        Von Neumann entropy of the Schmidt weights, bits.
    max_entropy : float
        ``log2(min(rows, columns))``: the entropy of a flat spectrum of full rank.
    normalized_entropy : float or None
        ``entropy / max_entropy``; ``None`` across a cut with one row or column (nothing to spread).
    full_rank : int
        ``min(rows, columns)``.
    norm_loss : float
        ``1 - ||K_r|| / ||K||`` of the truncation to ``r = ceil(RANK_FRACTION x full_rank)`` singular values.
    truncatable : bool
        Whether some level of the record's ``levels`` keeps fewer singular values than the non-zero ones
        (``ranks_for_levels``); ``False``: the spectrum is too flat for those levels to cut anything.
    levels : tuple of float
        The record's levels (empty in records without them).
    """

    layer: str
    cut: str
    entropy: float
    max_entropy: float
    normalized_entropy: float | None
    full_rank: int
    norm_loss: float
    truncatable: bool
    levels: tuple[float, ...]


def _cut_spectrum(record: Record, rank_fraction: float) -> CutSpectrum:
    rows, columns = (int(number(record, "matrix_shape", axis)) for axis in (0, 1))
    values = np.asarray(field(record, "singular_values"), dtype=float)
    if values.ndim != 1 or not values.size or not np.all(np.isfinite(values) & (values >= 0)):
        raise ValueError(f"the record {list(record['key'])} has no singular values (a list of finite numbers >= 0)")
    full = min(rows, columns)
    kept = max(1, math.ceil(rank_fraction * full))
    weights = np.sort(values)[::-1] ** 2
    total = float(weights.sum())
    norm_loss = 1 - math.sqrt(float(weights[:kept].sum()) / total) if total > 0 else 0.0  # a zero kernel loses none
    ranks, nonzero = record.get("ranks_for_levels"), int(np.count_nonzero(values))
    truncatable = True if ranks is None else any(
        number(record, "ranks_for_levels", i) < nonzero for i in range(len(ranks)))
    levels = tuple(number(record, "levels", i) for i in range(len(record.get("levels") or ())))
    entropy, most = number(record, "entropy"), math.log2(full)
    return CutSpectrum(layer=field(record, "layer"), cut=field(record, "cut"), entropy=entropy, max_entropy=most,
                       normalized_entropy=entropy / most if most > 0 else None, full_rank=full,
                       norm_loss=max(0.0, norm_loss), truncatable=truncatable, levels=levels)


def cut_spectra(records: Sequence[Record], rank_fraction: float = RANK_FRACTION) -> dict[str, dict[str, CutSpectrum]]:
    """Each kernel's spectrum across each cut (``spectrum`` records): ``{layer: {cut: CutSpectrum}}``.

    Entropies alone do not compare across cuts: a matrix of 3 rows has at most log2(3) = 1.585 bits,
    one of 32 rows 5 bits, so each entropy comes with its maximum and the ratio.  The norm a truncation
    to a fixed fraction of the full rank loses compares directly.
    """
    if isinstance(rank_fraction, bool) or not isinstance(rank_fraction, numbers.Real) or not 0 < rank_fraction <= 1:
        raise ValueError(f"rank_fraction must be a real number in (0, 1], got {rank_fraction!r}")
    found: dict[str, dict[str, CutSpectrum]] = {}
    for record in of_kind(records, "spectrum"):
        summary = _cut_spectrum(record, float(rank_fraction))
        found.setdefault(summary.layer, {})[summary.cut] = summary
    return found


def most_compressible(spectra: dict[str, dict[str, CutSpectrum]]) -> dict[str, CutSpectrum | None]:
    """The cut of each layer that loses the least norm at the fixed rank fraction, among those truncatable.

    Ties go to the lower normalized entropy, then to the first cut.  ``None`` if no cut of the layer
    can be truncated at the levels.
    """
    def rank(item: CutSpectrum) -> tuple[float, float]:
        return item.norm_loss, item.normalized_entropy if item.normalized_entropy is not None else 0.0

    return {layer: min((item for item in by_cut.values() if item.truncatable), key=rank, default=None)
            for layer, by_cut in spectra.items()}


# -- what predicts the accuracy drop --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Predictors:
    """How well two measures of a truncation rank the accuracy drop it causes (:func:`drop_predictors`).

    Attributes
    ----------
    norm_loss, data_error : Correlation or None
        Spearman's rank correlation of the drop (baseline top-1 less top-1) with the kernel's norm loss,
        and with the data error (the layer's relative output error on the calibration data).
    difference : Correlation or None
        ``rho(drop, norm_loss) - rho(drop, data_error)`` on the records with both (bootstrap interval):
        below zero, the data error ranks the drop better.
    unavailable : tuple of str
        Why a correlation is missing, in words.
    """

    norm_loss: Correlation | None
    data_error: Correlation | None
    difference: Correlation | None
    unavailable: tuple[str, ...]


def _correlation(x: list[float], y: list[float], what: str, missing: list[str]) -> Correlation | None:
    """:func:`spearman` of ``x`` and ``y``, or ``None`` with the reason added to ``missing``."""
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        missing.append(f"{what}: {len(x)} truncations, " + ("fewer than 4" if len(x) < 4 else "one of them constant"))
        return None
    return spearman(x, y)


def drop_predictors(records: Sequence[Record], seed: int = 0) -> Predictors:
    """Spearman's correlation of the accuracy drop with the norm loss and with the data error, across truncations.

    Over every one-layer truncation (``sweep``: layer x cut x level) that changed its kernel; the data
    error only where recorded (``None`` without calibration data, missing in older records).  The two
    correlations share the drop, so which predicts better is their difference with a paired bootstrap
    interval (:func:`~tnlib_torch.study.statistics.spearman_difference`, seeded with ``seed``).
    """
    top1 = number(require_baseline(records), "top1")
    every = of_kind(records, "sweep")
    sweeps = [record for record in every if not unchanged(record)]
    if not every:
        return Predictors(None, None, None, ())  # not measured: nothing to say
    if not sweeps:
        return Predictors(None, None, None, ("rank correlations: no one-layer truncation changed a kernel",))
    drops = [top1 - number(record, "top1") for record in sweeps]
    losses = [number(record, "norm_loss") for record in sweeps]
    with_data = [i for i, record in enumerate(sweeps) if record.get("data_error") is not None]
    missing: list[str] = []
    by_norm = _correlation(losses, drops, "norm loss", missing)
    if not with_data:
        missing.append("data error: the sweep records hold none (no calibration data, or records made before it "
                       "was recorded)")
        return Predictors(by_norm, None, None, tuple(missing))
    data = [number(sweeps[i], "data_error") for i in with_data]
    drops_data = [drops[i] for i in with_data]
    by_data = _correlation(data, drops_data, "data error", missing)
    difference = None
    if by_data is not None and by_norm is not None:
        difference = spearman_difference(drops_data, [losses[i] for i in with_data], data, seed=seed)
    return Predictors(by_norm, by_data, difference, tuple(missing))


@dataclasses.dataclass(frozen=True)
class DepthTrend:
    """The tolerated norm loss of each layer against its depth (:func:`depth_trend`).

    Attributes
    ----------
    per_layer : dict
        ``{layer: median}`` in model order: the median over the layer's truncatable cuts of the
        tolerated norm loss (0 where even the smallest level loses more).
    correlation : Correlation or None
        Spearman's correlation of those medians with the layer's index; ``None`` with fewer than
        :data:`MIN_LAYERS` layers (the Fisher interval needs about that many) or constant medians.
    """

    per_layer: dict[str, float]
    correlation: Correlation | None


#: The fewest layers :func:`depth_trend` correlates with depth.
MIN_LAYERS = 10


def depth_trend(records: Sequence[Record], one_layer: dict[str, dict[str, Tolerated | None]]) -> DepthTrend:
    """How the tolerated norm loss changes with depth: one median per layer, correlated with the layer's index.

    One number per layer, not per layer and cut: the cuts of one layer share its depth and its
    kernel, so they are not independent samples of the trend.
    """
    layers = field(require_baseline(records), "layers")
    per_layer = {layer: float(np.median([0.0 if kept is None else kept.norm_loss
                                         for kept in one_layer[layer].values()]))
                 for layer in layers if one_layer.get(layer)}
    depths = [layers.index(layer) for layer in per_layer]
    values = list(per_layer.values())
    enough = len(values) >= MIN_LAYERS and np.ptp(values) > 0
    return DepthTrend(per_layer, spearman(depths, values) if enough else None)


# -- fine-tuning ----------------------------------------------------------------------------------------------------

def _curve(record: Record) -> Curve:
    return Curve(tuple(accuracy_curve(record)[1]), count(record, "before"))


def _schedule(record: Record) -> dict[str, object]:
    """How a record was fine-tuned."""
    return {name: field(record, name) for name in ("epochs", "lr", "seed")}


def control_curve(records: Sequence[Record]) -> Curve | None:
    """The accuracy of the untruncated model fine-tuned like the recoveries (``recovery_control``).

    ``None`` if it was not measured.
    """
    controls = of_kind(records, "recovery_control")
    return _curve(controls[0]) if controls else None


def recovery_gains(records: Sequence[Record]) -> list[RecoveryGain]:
    """Each ``recovery`` record beside the control, in the order of the records.

    Raises
    ------
    ValueError
        If a recovery was fine-tuned with another ``epochs``, ``lr`` or ``seed`` than the control: the
        two would not compare.
    """
    controls, control = of_kind(records, "recovery_control"), control_curve(records)
    gains = []
    for record in of_kind(records, "recovery"):
        for other in controls:
            if _schedule(record) != _schedule(other):
                raise ValueError(f"the record {list(record['key'])} was fine-tuned with {_schedule(record)}, the "
                                 f"control with {_schedule(other)}: they do not compare")
        gains.append(RecoveryGain(target=field(record, "target"), cut=field(record, "cut"),
                                  level=number(record, "level"), curve=_curve(record),
                                  control=control))
    return gains


def _decomposition(record: Record) -> Decomposition:
    budget, ratio = number(record, "budget"), number(record, "ratio")
    equal = record.get("equal_params")
    before, after = hits(record, "before"), hits(record, "after")
    tuning = paired_comparison(after, before, 0.0) if before is not None and after is not None else None
    return Decomposition(method=field(record, "method"), budget=budget, mode=record.get("mode") or _DATA_FREE,
                         params_before=number(record, "params_before"), params_after=number(record, "params_after"),
                         ratio=ratio, before=number(record, "before", "top1"), after=number(record, "after", "top1"),
                         count=count(record, "before"),
                         equal_params=equal if isinstance(equal, bool) else ratio >= _SHORT_OF_BUDGET * budget,
                         tuning=tuning)


def decompositions(records: Sequence[Record]) -> list[Decomposition]:
    """The ``decomposition`` records, in their order, as :class:`Decomposition` (no ``mode``: data-free)."""
    return [_decomposition(record) for record in of_kind(records, "decomposition")]


@dataclasses.dataclass(frozen=True)
class Ranking:
    """The decompositions of one budget and mode, best first (:func:`rank_decompositions`).

    Attributes
    ----------
    budget : float
    mode : str
    phase : str
        ``"after"`` or ``"before"`` fine-tuning: the accuracy they are ranked by.
    methods : tuple of Decomposition
        Best first.
    lead : PairedComparison or None
        The first against the second on the same test samples at that phase (its ``p_value`` says
        whether they differ); ``None`` with one method or without per-sample hits.
    """

    budget: float
    mode: str
    phase: str
    methods: tuple[Decomposition, ...]
    lead: PairedComparison | None


def rank_decompositions(records: Sequence[Record], after: bool = True) -> list[Ranking]:
    """The ``decomposition`` records ranked per budget and mode, by top-1 ``after`` fine-tuning or before it.

    Rank by the accuracy before fine-tuning (``after=False``) when fine-tuning lowered the control's
    accuracy: the accuracies after it then mix what fine-tuning repairs with what it damages.
    """
    phase = "after" if after else "before"
    groups: dict[tuple[float, str], list[tuple[Decomposition, Record]]] = {}
    for row, record in zip(decompositions(records), of_kind(records, "decomposition")):
        groups.setdefault((row.budget, row.mode), []).append((row, record))
    rankings = []
    for (budget, mode), group in groups.items():
        group.sort(key=lambda item: -getattr(item[0], phase))
        lead = None
        if len(group) > 1:
            first, second = hits(group[0][1], phase), hits(group[1][1], phase)
            if first is not None and second is not None and first.size == second.size:
                lead = paired_comparison(first, second, tolerance=0.0)
        rankings.append(Ranking(budget, mode, phase, tuple(row for row, _ in group), lead))
    return rankings


@dataclasses.dataclass(frozen=True)
class Findings:
    """Everything a study's report states, computed once from its records (:func:`summarize`).

    Attributes
    ----------
    baseline : Record
        The ``baseline`` record; ``top1`` is its accuracy.
    tolerance : float
        The drop of top-1 accuracy a truncation may cause and still keep the accuracy.
    one_layer : dict
        :func:`tolerated_norm_loss`, ``{layer: {cut: Tolerated or None}}``.
    untruncated : dict
        :func:`untruncated_cuts`, ``{layer: [cut, ...]}``.
    all_layers : dict
        :func:`tolerated_norm_loss_all`, ``{cut: Tolerated or None}``.
    gains : list of RecoveryGain
        :func:`recovery_gains`.
    control : Curve or None
        :func:`control_curve`.
    decompositions : list of Decomposition
        :func:`decompositions`.
    rankings : list of Ranking
        :func:`rank_decompositions`, by the accuracy after fine-tuning unless it lowered the control's.
    spectra : dict
        :func:`cut_spectra`, ``{layer: {cut: CutSpectrum}}``.
    predictors : Predictors
        :func:`drop_predictors`.
    depth : DepthTrend
        :func:`depth_trend`.
    has_hits : bool
        Whether the baseline holds per-sample hits, so that accuracies compare by the paired test.
    """

    baseline: Record
    tolerance: float
    one_layer: dict[str, dict[str, Tolerated | None]]
    untruncated: dict[str, list[str]]
    all_layers: dict[str, Tolerated | None]
    gains: list[RecoveryGain]
    control: Curve | None
    decompositions: list[Decomposition]
    rankings: list[Ranking]
    spectra: dict[str, dict[str, CutSpectrum]]
    predictors: Predictors
    depth: DepthTrend
    has_hits: bool

    @property
    def top1(self) -> float:
        """The baseline's top-1 accuracy."""
        return number(self.baseline, "top1")

    @property
    def count(self) -> int:
        """The baseline's test samples."""
        return count(self.baseline)

    @property
    def control_lowered(self) -> bool:
        """Whether fine-tuning lowered the untruncated model's accuracy (the control's)."""
        return self.control is not None and self.control.change < 0


def summarize(records: Sequence[Record], tolerance: float = 0.01, seed: int = 0) -> Findings:
    """All the findings of ``records`` at ``tolerance`` (0.01: one point of accuracy); ``seed`` of the bootstrap.

    Raises
    ------
    ValueError
        Without a baseline, with a malformed record, or a tolerance outside [0, 1).
    """
    baseline, tolerance = require_baseline(records), _check_tolerance(tolerance)
    one_layer, control = tolerated_norm_loss(records, tolerance), control_curve(records)
    lowered = control is not None and control.change < 0
    return Findings(baseline=baseline, tolerance=tolerance, one_layer=one_layer,
                    untruncated=untruncated_cuts(records), all_layers=tolerated_norm_loss_all(records, tolerance),
                    gains=recovery_gains(records), control=control, decompositions=decompositions(records),
                    rankings=rank_decompositions(records, after=not lowered), spectra=cut_spectra(records),
                    predictors=drop_predictors(records, seed), depth=depth_trend(records, one_layer),
                    has_hits=hits(baseline) is not None)
