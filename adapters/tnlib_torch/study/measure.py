"""The measurements of the compressibility study, one plain record each.

The study of Singh, Jahromi & Orus (2024), "Tensor network compressibility of
convolutional models", takes a trained CNN and measures

1. its accuracy (:func:`baseline`);
2. the spectrum and entanglement entropies of every conv kernel across every cut
   of its labels ``"oihw"`` (:func:`layer_spectra`);
3. a truncation sweep: one layer's kernel truncated across one cut at a relative
   error, alone (:func:`truncate_one`) or every selected layer at once
   (:func:`truncate_all`), and the accuracy that is left;
4. the recovery of an aggressive truncation by fine-tuning (:func:`recovery`),
   beside the untruncated model fine-tuned the same way (:func:`recovery_control`);
5. cut truncation against CP, Tucker-2 and MPS layers at the same parameter
   budget, before and after fine-tuning (:func:`decomposition_at_params`).

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
does (it retrains the truncated model); :func:`decomposition_at_params`, whose
layers are factorized, keeps its ranks.  A training loader with its own
``generator`` (as :func:`tnlib_torch.loader` builds) has that generator seeded
with ``seed`` first, so the shuffles do not depend on what ran before; a loader
without one shuffles from torch's global generator, which
:func:`tnlib_torch.fine_tune` seeds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

import tnlib
from tnlib import KERNEL_LABELS, Cut
from tnlib_torch._checks import check_count, check_module
from tnlib_torch.compression.accounting import count_params
from tnlib_torch.compression.compress import compress
from tnlib_torch.study.measure_tools import (
    Loader,
    Record,
    canonical_cut,
    check_fraction,
    check_training,
    fine_tuned,
    layer_entry,
    metrics,
    record,
    truncated_copy,
)
from tnlib_torch.study.selection import Patterns, checked_dense_conv, dense_convs, select_dense_convs

__all__ = [
    "ALL",
    "DECOMPOSITION_METHODS",
    "DEFAULT_LEVELS",
    "baseline",
    "decomposition_at_params",
    "layer_spectra",
    "recovery",
    "recovery_control",
    "truncate_all",
    "truncate_one",
]

#: The methods of :func:`decomposition_at_params`; ``"svd"`` is the cut truncation stored as two factors.
DECOMPOSITION_METHODS = ("cp", "tucker2", "mps", "svd")
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
    if isinstance(levels, str) or not isinstance(levels, Sequence) or not levels:
        raise TypeError(f"levels must be a non-empty sequence of relative errors in (0, 1), got {levels!r}")
    levels = [check_fraction(level, "levels") for level in levels]
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


def truncate_one(model: nn.Module, layer: str, cut: str | Cut, level: float, loader: Loader) -> Record:
    """The accuracy left when one layer's kernel alone is truncated across a cut.

    A deep copy of ``model`` has the kernel of ``layer`` replaced by its
    truncation across ``cut`` at ``rel_error=level``
    (:func:`tnlib_torch.truncate_model_`, :func:`tnlib_torch.truncate_conv_`
    of that one layer): the fewest singular values kept with ``||K - K~||_F <=
    level ||K||_F``.  The copy is evaluated on ``loader``.

    Returns
    -------
    dict
        ``key = ["sweep", layer, cut, level]``; ``layer``, ``cut``, ``level``,
        ``shape``, ``rank`` (kept), ``rel_error`` and ``norm_loss`` (realized,
        ``1 - ||K~|| / ||K||``), ``params`` (the layer's, weight and bias; the
        truncated kernel stays dense), ``factored_params`` (the layer stored as
        the two factors across the cut, ``rank * (rows + columns)`` plus the
        bias), and ``top1``, ``top5``, ``loss``, ``count``.

    Raises
    ------
    ValueError
        ``layer`` is not a dense conv of the model (the message lists some that
        are); a cut that does not split ``"oihw"``; ``level`` outside (0, 1).
    TypeError
        Arguments of the wrong type.
    """
    name, cut, level = checked_dense_conv(model, layer), canonical_cut(cut), check_fraction(level, "level")
    truncated, (entry,) = truncated_copy(model, [name], cut, level)
    return record("sweep", name, cut, level, cut=cut, level=level, **entry, **metrics(truncated, loader))


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
        ``factored_params`` (their sums over the layers), and ``top1``,
        ``top5``, ``loss``, ``count``.
    """
    names, cut, level = select_dense_convs(model, include), canonical_cut(cut), check_fraction(level, "level")
    truncated, entries = truncated_copy(model, names, cut, level)
    return record(
        "sweep_all", cut, level, cut=cut, level=level, layers=entries,
        params=sum(e["params"] for e in entries), factored_params=sum(e["factored_params"] for e in entries),
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


def decomposition_at_params(model: nn.Module, method: str, budget: float, train_loader: Loader, test_loader: Loader,
                            epochs: int, lr: float, seed: int, include: Patterns = None,
                            cp_max_iter: int = 50) -> Record:
    """One factorization of the selected layers at a parameter budget, before and after fine-tuning.

    ``tnlib_torch.compress(model, method, budget=budget)`` replaces the
    selected convs by factorized layers (``"cp"``: :class:`CPConv2d`,
    ``"tucker2"``: :class:`Tucker2Conv2d`, ``"mps"``: :class:`MPSConv2d`,
    ``"svd"``: the cut truncation across ``"o|ihw"`` stored as two factors,
    :class:`SVDConv2d`) with ranks allocated so that they keep at most
    ``budget`` times their parameters.  The compressed copy is evaluated, then
    fine-tuned as in :func:`recovery` (its layers stay factorized).  CP is
    fitted by ALS with at most ``cp_max_iter`` sweeps.  ``seed`` is
    ``compress``'s ``seed``: it seeds every fit that draws (CP, a randomized
    SVD of an MPS or of an SVD split), so the same arguments give the same
    record.  A 1x1 conv becomes an SVD split whatever the method; select the
    kxk convs (``include``) to compare the methods on the kernels alone.

    Returns
    -------
    dict
        ``key = ["decomposition", method, budget]``; ``method``, ``budget``,
        ``layers`` (per layer, :func:`~tnlib_torch.study.measure_tools.layer_entry`
        of its :class:`~tnlib_torch.LayerCompression`: ``layer``, ``structure``, ``ranks``,
        ``params_before``, ``params_after``, ``rel_error``, ``norm_loss`` of the
        kernel, ``note``, ...), ``params_before`` and ``params_after`` (sums over
        the selected layers), ``ratio`` (``params_after / params_before``, at
        most ``budget``), ``model_params_before``, ``model_params_after``, and
        ``epochs``, ``lr``, ``seed``, ``before``, ``history``, ``after`` as in
        :func:`recovery`.

    Raises
    ------
    ValueError
        An unknown ``method``, a ``budget`` outside (0, 1] or too small for the
        smallest ranks of the layers, and the errors of :func:`truncate_one`.
    """
    if method not in DECOMPOSITION_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, DECOMPOSITION_METHODS))}; got {method!r}")
    budget, names = check_fraction(budget, "budget", one=True), set(select_dense_convs(model, include))
    check_training(epochs, lr, seed)
    cp_max_iter = check_count(cp_max_iter, "cp_max_iter", 1)
    fit = {"max_iter": cp_max_iter} if method == "cp" else None
    compressed, report = compress(model, method, budget=budget, fit=fit, seed=seed,
                                  where=lambda name, _: name in names)
    entries = [layer_entry(layer) for layer in report.layers.values()]
    before, after = sum(e["params_before"] for e in entries), sum(e["params_after"] for e in entries)
    trained = fine_tuned(compressed, train_loader, test_loader, epochs, lr, seed)
    return record(
        "decomposition", method, budget, method=method, budget=budget, layers=entries, params_before=before,
        params_after=after, ratio=after / before, model_params_before=report.params_before,
        model_params_after=report.params_after, **trained,
    )
