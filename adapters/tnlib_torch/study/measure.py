"""The measurements of the compressibility study, one plain record each.

The study of Singh, Jahromi & Orus (2024), "Tensor network compressibility of
convolutional models", takes a trained CNN and measures

1. its accuracy (:func:`baseline`);
2. the spectrum and entanglement entropies of every conv kernel across every cut
   of its labels ``"oihw"`` (:func:`layer_spectra`);
3. a truncation sweep: one layer's kernel truncated across one cut at a relative
   error, alone (:func:`truncate_one`; every cut and level of one layer in one
   task, :func:`sweep_layer`) or every selected layer at once
   (:func:`truncate_all`), and the accuracy that is left;
4. the recovery of an aggressive truncation by fine-tuning (:func:`recovery`),
   beside the untruncated model fine-tuned the same way (:func:`recovery_control`);
5. cut truncation against CP, Tucker-2 and MPS layers at the same parameter
   budget, before and after fine-tuning, is :mod:`tnlib_torch.study.decomposition`.

Each function is a pure task: it takes everything it needs, never modifies the
model it is given (it works on a deep copy), and returns plain records (``str``,
``int``, ``float``, ``bool``, ``None``, lists and dicts: ``json.dumps(...,
allow_nan=False)`` accepts them) that carry a ``key`` list naming the
measurement, so a pipeline can append them to a JSONL file and skip the keys it
already holds.  A key names a measurement within one study: what a study
holds fixed (the layers that ``"all"`` selects, ``epochs``, ``lr``, ``seed``,
``cp_max_iter``) is recorded beside it, not in it.  A number that is not finite (the loss of a diverged run) is
recorded as ``None``.  The same arguments and seed give the same record: wall
times are not recorded, since they never repeat (time the tasks outside).

**Grouped convs are not measured.**  A conv with ``groups > 1`` is truncated
group by group (:func:`tnlib_torch.truncate_conv_`), so it has one spectrum and
one kept rank per group across each cut, not one; the study's networks (the
vanilla CNN, the CIFAR ResNets) have none.  A selection skips them, and naming
one as a layer is a ``ValueError``.  Layers are named as in
``model.named_modules()`` and selected by the glob patterns ``include``
(:func:`~tnlib_torch.study.selection.select_dense_convs`, ``*`` also matching dots).
The records and the fine-tuning are :mod:`~tnlib_torch.study.measure_tools`.

**Cuts** are written as :func:`tnlib.all_cuts` writes them (``"ihw|o"`` is
recorded, and keyed, as ``"o|ihw"``), one cut per truncation.

**Fine-tuning** is :func:`tnlib_torch.fine_tune` with its defaults (SGD with
momentum 0.9, weight decay 5e-4, a cosine schedule) and the given ``epochs``,
``lr`` and ``seed``, every parameter trained.  A fine-tuned truncated model is a
dense model again: the gradient steps move its kernels out of the truncated
subspace, and their rank across the cut grows back.  That is what the paper
does (it retrains the truncated model); :func:`~tnlib_torch.study.decomposition.decomposition_at_params`, whose
layers are factorized, keeps its ranks.  A training loader with its own
``generator`` (as :func:`tnlib_torch.loader` builds) has that generator seeded
with ``seed`` first, so the shuffles do not depend on what ran before; a loader
without one shuffles from torch's global generator, which
:func:`tnlib_torch.fine_tune` seeds.
"""

from __future__ import annotations

import copy
import glob
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import tnlib
from tnlib import KERNEL_LABELS, Cut, TruncationInfo
from tnlib.cuts import cut_matrix_shape, fold
from tnlib.truncation import TruncationSpec
from tnlib_torch._checks import check_module
from tnlib_torch.compression.accounting import count_params
from tnlib_torch.compression.calibrated import output_error
from tnlib_torch.compression.calibration import LayerMoments, input_moments
from tnlib_torch.compression.surgery import truncated_layer
from tnlib_torch.layers.reports import as_stored
from tnlib_torch.study.measure_tools import (
    Loader,
    Record,
    canonical_cut,
    check_fraction,
    check_training,
    evaluation_fields,
    fine_tuned,
    layer_entry,
    metrics,
    record,
    to_channels_last,
    truncated_copy,
)
from tnlib_torch.study.selection import Patterns, checked_dense_conv, dense_convs, select_dense_convs
from tnlib_torch.study.suffix import evaluate_variants

__all__ = [
    "ALL",
    "DEFAULT_LEVELS",
    "baseline",
    "layer_spectra",
    "recovery",
    "recovery_control",
    "sweep_layer",
    "truncate_all",
    "truncate_one",
]

#: The relative errors at which :func:`layer_spectra` reports the rank needed.
DEFAULT_LEVELS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)
#: The ``target`` of :func:`recovery` that truncates every selected layer.
ALL = "all"


# -- the measurements ------------------------------------------------------------------------------------


def baseline(model: nn.Module, loader: Loader) -> Record:
    """The accuracy of the model as it is.

    Parameters
    ----------
    model
        A classifier; it is only evaluated.
    loader
        The test batches.

    Returns
    -------
    dict
        ``key = ["baseline"]``; ``params`` (the whole model's), ``layers`` (the
        names of its dense convs, in model order), and ``top1``, ``top5``,
        ``loss``, ``count`` of :func:`tnlib_torch.evaluate`.
    """
    layers = list(dense_convs(model))
    return record("baseline", params=count_params(model), layers=layers, **metrics(model, loader))


def layer_spectra(model: nn.Module, include: Patterns = None,
                  levels: Sequence[float] = DEFAULT_LEVELS) -> list[Record]:
    """The spectrum of every selected conv kernel across every cut, and its entropies.

    The kernel ``K`` (``(out, in, kh, kw)``, labels ``"oihw"``) is taken in
    double precision, and :func:`tnlib.spectra` gives the singular values of
    its matricization across each of the 7 cuts of :func:`tnlib.all_cuts`.

    Parameters
    ----------
    model
        A CNN; it is only read.
    include
        Glob pattern(s) selecting dense convs (:func:`~tnlib_torch.study.selection.select_dense_convs`);
        ``None``: all, in model order.
    levels
        Relative errors in (0, 1) at which the rank needed is reported.

    Returns
    -------
    list of dict
        One record per layer and cut, layer after layer: ``key = ["spectrum",
        layer, cut]``; ``layer``, ``cut``, ``shape`` (of the kernel),
        ``matrix_shape`` (rows, columns across the cut), ``singular_values``
        (descending), ``norm`` (``||K||_F``), ``rank`` (the non-zero values),
        ``entropy`` (von Neumann entropy of the Schmidt weights ``s_k^2 /
        ||K||^2``, in bits), ``renyi2`` (the Renyi-2 entropy, in bits),
        ``levels`` and ``ranks_for_levels`` (the smallest rank with
        ``rel_error <= level``, :meth:`tnlib.Spectrum.rank_for`).

    Examples
    --------
    >>> import torch
    >>> import tnlib_torch as tt
    >>> _ = torch.manual_seed(0)
    >>> records = layer_spectra(tt.vanilla_cnn(in_channels=1, widths=(4, 4, 8, 8)), include="conv2", levels=[0.5])
    >>> [r["key"] for r in records][:2], records[0]["matrix_shape"], len(records)
    ([['spectrum', 'conv2', 'o|ihw'], ['spectrum', 'conv2', 'i|ohw']], [4, 36], 7)
    """
    names = select_dense_convs(model, include)
    levels = _checked_levels(levels)
    convs = dense_convs(model)
    records = []
    for name in names:
        kernel = convs[name].weight.detach().double()
        for cut, spectrum in tnlib.spectra(kernel, KERNEL_LABELS).items():
            records.append(record(
                "spectrum", name, cut, layer=name, cut=cut, shape=kernel.shape, matrix_shape=spectrum.matrix_shape,
                singular_values=spectrum.singular_values.tolist(), norm=spectrum.norm, rank=spectrum.rank,
                entropy=spectrum.entropy(), renyi2=spectrum.entropy(alpha=2), levels=levels,
                ranks_for_levels=[spectrum.rank_for(level) for level in levels],
            ))
    return records


def truncate_one(model: nn.Module, layer: str, cut: str | Cut, level: float, loader: Loader,
                 calibration: Loader | None = None) -> Record:
    """The accuracy left when one layer's kernel alone is truncated across a cut.

    A deep copy of ``model`` has the kernel of ``layer`` replaced by its
    truncation across ``cut`` at ``rel_error=level``
    (:func:`tnlib_torch.truncate_model_`, :func:`tnlib_torch.truncate_conv_`
    of that one layer): the fewest singular values kept with ``||K - K~||_F <=
    level ||K||_F``.  The copy is evaluated on ``loader``.  This is the plain
    reference of one record of :func:`sweep_layer`, which measures a whole layer
    at once, far faster.

    Parameters
    ----------
    calibration
        Batches ``(inputs, targets)`` whose inputs give the layer's input
        moment ``M`` for ``data_error``; ``None``: no ``data_error``.

    Returns
    -------
    dict
        ``key = ["sweep", layer, cut, level]``; ``layer``, ``cut``, ``level``,
        ``shape``, ``rank`` (kept), ``rel_error`` and ``norm_loss`` (realized,
        ``1 - ||K~|| / ||K||``), ``params`` (the layer's, weight and bias; the
        truncated kernel stays dense), ``factored_params`` (the layer stored as
        the two factors across the cut, ``rank * (rows + columns)`` plus the
        bias), the test metrics of :func:`~tnlib_torch.study.measure_tools.metrics`
        (``top1``, ``top5``, ``loss``, ``count``, ...), ``noop`` (the rank kept is
        the full rank ``min(rows, columns)`` across the cut: the kernel is
        unchanged), ``saves`` (``factored_params < params``) and ``data_error``:
        the relative error of the layer's outputs on the calibration inputs,
        ``sqrt(tr(D M D^T) / tr(K M K^T))`` with ``D = K - K~`` as matrices
        ``(out, in kh kw)`` (:func:`tnlib_torch.compression.calibrated.output_error`),
        or ``None`` without ``calibration``.

    Raises
    ------
    ValueError
        ``layer`` is not a dense conv of the model (the message lists some that
        are); a cut that does not split ``"oihw"``; ``level`` outside (0, 1).
    TypeError
        Arguments of the wrong type.
    """
    name, cut, level = checked_dense_conv(model, layer), canonical_cut(cut), check_fraction(level, "level")
    moments = _layer_moments(model, name, calibration)
    truncated, (entry,) = truncated_copy(model, [name], cut, level)
    kernel = dense_convs(truncated)[name].weight.detach()
    noop = entry["rank"] == _full_rank(entry["shape"], cut)
    return _sweep_record(name, cut, level, entry, metrics(truncated, loader), noop,
                         _data_error(moments, _kernel(model, name), kernel))


def sweep_layer(model: nn.Module, layer: str, cuts: Sequence[str | Cut], levels: Sequence[float], loader: Loader,
                calibration: Loader | None = None) -> list[Record]:
    """Every record of :func:`truncate_one` for one layer, each cut and each level, measured at once.

    The records equal those of :func:`truncate_one` (to round-off: the kernels
    are computed in double precision here, by another solver), made with far
    less work:

    * **One SVD per cut.**  The kernel's matricization across a cut is
      decomposed once (in double precision); the kept rank of each level is
      the fewest values with ``rel_error <= level``
      (:meth:`tnlib.truncation.TruncationSpec.kept_rank`), its report
      :meth:`tnlib.TruncationInfo.from_spectrum`.  Levels that keep the same
      rank share one truncated kernel and one evaluation (each still gets its
      own record).  A level that keeps the full rank ``min(rows, columns)``
      leaves the kernel unchanged (``noop``): its metrics are the model's own,
      evaluated once.
    * **One pass over the test loader, re-running only what the layer
      influences** (:func:`tnlib_torch.study.suffix.evaluate_variants`): per
      batch the traced network runs once, then only the nodes downstream of the
      layer run for each distinct kernel, in the channels-last layout
      (:func:`~tnlib_torch.study.measure_tools.to_channels_last`).  A model
      ``torch.fx`` cannot trace is run whole per kernel, with the same records.
    * **One calibration pass**: the layer's input moment is collected once,
      and each kernel's ``data_error`` follows from it.

    Parameters
    ----------
    model
        A classifier; it is not modified (a deep copy is evaluated).
    layer
        The name of a dense conv of ``model``.
    cuts
        Distinct cuts of ``"oihw"`` (``"o|ihw"``, ``"oi|hw"``, ..., or :class:`tnlib.Cut`).
    levels
        Distinct relative errors in (0, 1).
    loader
        The test batches (never shuffled: the records' ``hits`` are in loader order).
    calibration
        Batches ``(inputs, targets)`` for ``data_error``, as in :func:`truncate_one`; ``None``: none.

    Returns
    -------
    list of dict
        One :func:`truncate_one` record per cut and level, cut-major, in the
        given orders, with ``hits`` (the packed top-1 hits,
        :func:`tnlib_torch.study.hits.pack_hits`).

    Raises
    ------
    ValueError
        A ``layer`` that is not a dense conv of the model, a cut that does not
        split ``"oihw"``, a level outside (0, 1), a cut or level given twice,
        an empty ``cuts`` or ``levels``.
    TypeError
        Arguments of the wrong type.

    Examples
    --------
    >>> import torch
    >>> import tnlib_torch as tt
    >>> _ = torch.manual_seed(0)
    >>> model = tt.vanilla_cnn(in_channels=1, widths=(4, 4, 8, 8))
    >>> batches = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))]
    >>> records = sweep_layer(model, "conv2", ["o|ihw", "oi|hw"], [0.1, 0.5], batches)
    >>> [(r["cut"], r["level"], r["rank"], r["noop"]) for r in records]
    [('o|ihw', 0.1, 4, True), ('o|ihw', 0.5, 3, False), ('oi|hw', 0.1, 8, False), ('oi|hw', 0.5, 5, False)]
    """
    name = checked_dense_conv(model, layer)
    cuts = _checked_grid(cuts, "cuts", canonical_cut, "cuts of 'oihw'")
    levels = _checked_levels(levels)
    moments = _layer_moments(model, name, calibration)
    conv, weight = dense_convs(model)[name], _kernel(model, name)
    plan, kernels = [], {}
    for cut in cuts:
        svd = _CutSVD(weight, cut)
        for level in levels:
            rank = svd.kept_rank(level)
            if rank < svd.full_rank and (cut, rank) not in kernels:
                kernels[cut, rank] = svd.kernel(rank)
            plan.append((cut, level, svd, rank))
    work = to_channels_last(copy.deepcopy(model))
    original, evaluated = evaluate_variants(work, name, list(kernels.values()), loader, hits=True)
    evaluations = dict(zip(kernels, map(evaluation_fields, evaluated)))
    errors = {key: _data_error(moments, weight, kernel) for key, kernel in kernels.items()}
    records = []
    for cut, level, svd, rank in plan:
        noop = rank == svd.full_rank
        entry = layer_entry(truncated_layer(name, conv, svd.info(rank)))
        evaluation = evaluation_fields(original) if noop else evaluations[cut, rank]
        error = _data_error(moments, weight, weight) if noop else errors[cut, rank]
        records.append(_sweep_record(name, cut, level, entry, evaluation, noop, error))
    return records


def truncate_all(model: nn.Module, cut: str | Cut, level: float, loader: Loader, include: Patterns = None) -> Record:
    """The accuracy left when every selected layer is truncated across a cut at once.

    As :func:`truncate_one`, for all the layers ``include`` selects together,
    each at ``rel_error=level`` for its own kernel.

    Returns
    -------
    dict
        ``key = ["sweep_all", cut, level]``; ``cut``, ``level``, ``layers``
        (one entry per layer: ``layer``, ``shape``, ``rank``, ``rel_error``,
        ``norm_loss``, ``params``, ``factored_params``), ``params`` and
        ``factored_params`` (their sums over the layers), ``noop`` (every layer
        keeps its full rank across the cut: the model is unchanged), ``saves``
        (``factored_params < params``), and the test metrics of
        :func:`~tnlib_torch.study.measure_tools.metrics`.
    """
    names, cut, level = select_dense_convs(model, include), canonical_cut(cut), check_fraction(level, "level")
    truncated, entries = truncated_copy(model, names, cut, level)
    params, factored = sum(e["params"] for e in entries), sum(e["factored_params"] for e in entries)
    return record(
        "sweep_all", cut, level, cut=cut, level=level, layers=entries, params=params, factored_params=factored,
        noop=all(e["rank"] == _full_rank(e["shape"], cut) for e in entries), saves=factored < params,
        **metrics(truncated, loader),
    )


def recovery(model: nn.Module, target: str, cut: str | Cut, level: float, train_loader: Loader, test_loader: Loader,
             epochs: int, lr: float, seed: int, include: Patterns = None) -> Record:
    """How much accuracy fine-tuning recovers after a truncation.

    A deep copy of ``model`` is truncated as by :func:`truncate_one` (``target``
    a layer name) or :func:`truncate_all` (``target="all"``, the layers
    ``include`` selects), evaluated on ``test_loader``, then fine-tuned for
    ``epochs`` on ``train_loader`` (:func:`tnlib_torch.fine_tune`, learning
    rate ``lr``, ``seed``) and evaluated after every epoch.  The kernels leave
    the truncated subspace as they train (see the module notes).

    Returns
    -------
    dict
        ``key = ["recovery", target, cut, level]``; ``target``, ``cut``,
        ``level``, ``layers`` (the truncation, as in :func:`truncate_all`),
        ``epochs``, ``lr``, ``seed``, ``before`` (``top1``, ``top5``,
        ``loss``, ``count`` after the truncation), ``history`` (one entry per
        epoch: ``epoch``, ``lr``, ``train_loss``, ``train_top1`` and the test
        ``top1``, ``top5``, ``loss``, ``count`` after it) and ``after`` (the
        test metrics after the last epoch).
    """
    if target == ALL:
        names = select_dense_convs(model, include)
    elif include is not None:
        raise ValueError(f"include selects the layers of target={ALL!r} only, got target={target!r}")
    else:
        names = [checked_dense_conv(model, target)]
    cut, level = canonical_cut(cut), check_fraction(level, "level")
    check_training(epochs, lr, seed)
    truncated, entries = truncated_copy(model, names, cut, level)
    trained = fine_tuned(truncated, train_loader, test_loader, epochs, lr, seed)
    return record("recovery", target, cut, level, target=target, cut=cut, level=level, layers=entries, **trained)


def recovery_control(model: nn.Module, train_loader: Loader, test_loader: Loader, epochs: int, lr: float,
                     seed: int) -> Record:
    """The control of :func:`recovery`: the untruncated model, fine-tuned identically.

    Returns
    -------
    dict
        ``key = ["recovery_control"]``; ``epochs``, ``lr``, ``seed``,
        ``before``, ``history`` and ``after`` as in :func:`recovery`.
    """
    check_module(model)
    check_training(epochs, lr, seed)
    trained = fine_tuned(copy.deepcopy(model), train_loader, test_loader, epochs, lr, seed)
    return record("recovery_control", **trained)


# -- the one-layer sweep ------------------------------------------------------------------------------------


class _CutSVD:
    """One SVD of a kernel across a cut, in double precision: the rank, report and kernel of every level."""

    def __init__(self, weight: Tensor, cut: str) -> None:
        kernel = weight.detach().double()
        self.weight, self.cut, self.parsed = weight, cut, Cut(cut)
        self.u, self.s, self.vh, _ = tnlib.truncated_svd(tnlib.matricize(kernel, cut, KERNEL_LABELS))
        self.squares = self.s.cpu().numpy() ** 2
        self.full_rank = len(self.squares)

    def kept_rank(self, level: float) -> int:
        """The fewest singular values with ``rel_error <= level``, as :func:`tnlib.truncate` keeps."""
        return TruncationSpec.from_kwargs(rel_error=level).kept_rank(self.squares)

    def info(self, rank: int) -> TruncationInfo:
        """The report of keeping ``rank`` values (errors of the stored kernel for a half-precision one)."""
        info = TruncationInfo.from_spectrum(self.squares, rank, cut=self.cut)
        return as_stored(info, self.weight, self.kernel(rank)) if self.weight.dtype in _HALF_DTYPES else info

    def kernel(self, rank: int) -> Tensor:
        """The kernel truncated to ``rank``, in the weight's dtype and device."""
        matrix = (self.u[:, :rank] * self.s[:rank]) @ self.vh[:rank]
        return fold(matrix, self.parsed, KERNEL_LABELS, self.weight.shape).to(self.weight.dtype)


#: Dtypes whose truncated kernels are rounded when stored, so their errors are measured on the stored kernel.
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _sweep_record(name: str, cut: str, level: float, entry: Record, evaluation: Record, noop: bool,
                  data_error: float | None) -> Record:
    """The record ``["sweep", name, cut, level]`` of :func:`truncate_one` and :func:`sweep_layer`."""
    fields = {**entry, "cut": cut, "level": level}  # an entry may carry its own "cut" (a LayerCompression's)
    return record("sweep", name, cut, level, **fields, **evaluation, noop=noop,
                  saves=entry["factored_params"] < entry["params"], data_error=data_error)


def _kernel(model: nn.Module, name: str) -> Tensor:
    return dense_convs(model)[name].weight.detach()


def _full_rank(shape: Sequence[int], cut: str) -> int:
    """``min(rows, columns)`` of a dense kernel of ``shape`` matricized across ``cut``."""
    return min(cut_matrix_shape(shape, Cut(cut), KERNEL_LABELS))


def _layer_moments(model: nn.Module, name: str, calibration: Loader | None) -> LayerMoments | None:
    """The input moment of the layer ``name`` on the calibration inputs, in one pass; ``None`` without them."""
    if calibration is None:
        return None
    return input_moments(model, calibration, include=glob.escape(name))[name]


def _data_error(moments: LayerMoments | None, weight: Tensor, kernel: Tensor) -> float | None:
    """The relative output error of ``kernel`` for ``weight`` on the moments' data; ``None`` without moments."""
    return None if moments is None else output_error(moments, weight, kernel)


def _checked_grid(values: object, name: str, check: Callable[[Any], Any], what: str) -> list:
    """``values``: a non-empty sequence of distinct entries, each passed through ``check``."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"{name} must be a non-empty sequence of {what}, got {values!r}")
    checked = [check(value) for value in values]
    repeated = next((value for k, value in enumerate(checked) if value in checked[:k]), None)
    if repeated is not None:
        raise ValueError(f"{name} holds {repeated!r} twice")
    return checked


def _checked_levels(levels: object) -> list[float]:
    return _checked_grid(levels, "levels", lambda level: check_fraction(level, "levels"), "relative errors in (0, 1)")
