"""The decomposition stage of the study: the selected layers factorized at one parameter budget.

:func:`decomposition_at_params` compares the structures of :func:`tnlib_torch.compress` on the same
layers at the same share of their parameters, before and after fine-tuning, data-free or calibrated:

- ``"svd"``: the cut truncation of the sweep stored as its two factors, across the cut the budget
  chooses for each layer (``cut="auto"``) (:class:`~tnlib_torch.SVDConv2d`; called ``"truncate"`` in
  the study's config before);
- ``"cp"``: :class:`~tnlib_torch.CPConv2d`, fitted by ALS;
- ``"tucker2"``: :class:`~tnlib_torch.Tucker2Conv2d`;
- ``"mps"``: :class:`~tnlib_torch.MPSConv2d`.

**Equal parameters.**  ``compress``'s budget policy gives each layer the ranks that minimize the sum of
the layers' squared relative errors (of the kernels data-free, of the layers' outputs on the calibration
data when calibrated) while the selected layers keep at most ``budget`` of their parameters.  So the
factorized layers hold at most ``budget`` of the dense ones' parameters (``ratio`` in the record), and a
comparison is fair only if every method also spends nearly all of it: :data:`EQUAL_SHARE` is the share
of the budget that the study expects every method to reach (``ratio >= EQUAL_SHARE * budget``); the
record says whether it did (``equal_params``), so that a report never ranks a method that was given
fewer parameters as if it had as many.

**Modes.**  ``"data-free"`` fits each kernel in the Frobenius norm.  ``"calibrated"`` gives ``compress``
the calibration batches: the second moments of every selected layer's inputs are gathered in one pass,
every fit and every error estimate of the allocation is in the layer's data metric (the error of its
outputs on the data), and the BatchNorm statistics are re-estimated on the data at the end (``compress``'s
defaults: no refinement, every layer weighed alike).

**Fine-tuning** is that of the recovery stage (:func:`~tnlib_torch.study.measure_tools.fine_tuned`:
:func:`tnlib_torch.fine_tune`, SGD with momentum, a cosine schedule, every parameter trained).  The
factorized layers stay factorized: their factors are trained, their ranks kept, so the parameters after
fine-tuning are those before.  Give it the rate of fine-tuning a converged model
(:attr:`~tnlib_torch.study.config.StudyConfig.fine_tune_lr`): at the rate of training from scratch the
factorized CP layers leave their fit (on the digits CNN at half the parameters, 98.0% top-1 before, 82.7%
after two epochs at 0.05, 98.9% at 0.005).  A CP fit whose rank-one terms cancel (their squared norms
summing to many times the kernel's) is lost at any rate: the calibrated CP layers of that CNN (600 to
4,700 times) fell to 10-17% at 0.05, 0.005 and 0.0005 alike; the record keeps the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from tnlib._validation import check_choice
from tnlib_torch._checks import check_count
from tnlib_torch.compression.compress import compress
from tnlib_torch.study.measure_tools import (
    Loader,
    Record,
    check_fraction,
    check_training,
    fine_tuned,
    layer_entry,
    record,
)
from tnlib_torch.study.selection import Patterns, select_dense_convs

__all__ = ["DATA_FREE", "CALIBRATED", "DECOMPOSITION_METHODS", "EQUAL_SHARE", "MODES", "decomposition_at_params"]

#: The methods of :func:`decomposition_at_params`; ``"svd"``: a cut truncation as two factors, the cut chosen per layer.
DECOMPOSITION_METHODS = ("svd", "cp", "tucker2", "mps")
#: The mode of a decomposition fitted without data, and of one calibrated on data.
DATA_FREE, CALIBRATED = "data-free", "calibrated"
#: The modes of :func:`decomposition_at_params`, the last element of its records' keys.
MODES = (DATA_FREE, CALIBRATED)
#: The share of its budget a decomposition must spend to be compared at equal parameters:
#: ``EQUAL_SHARE * budget <= ratio <= budget``.
EQUAL_SHARE = 0.9


def decomposition_at_params(model: nn.Module, method: str, budget: float, train_loader: Loader, test_loader: Loader,
                            epochs: int, lr: float, seed: int, include: Patterns = None, cp_max_iter: int = 50,
                            calibration: Iterable | None = None) -> Record:
    """One factorization of the selected layers at a parameter budget, before and after fine-tuning.

    A deep copy of ``model`` is compressed by ``tnlib_torch.compress(model, method, budget=budget,
    seed=seed, calibration=calibration, sensitivity="none")`` on the dense convs that ``include`` selects
    (see the module notes; the calibrated budget weighs every layer's output error alike, as the studies
    recorded before ``compress`` weighed a classifier's layers by their Fisher sensitivity), evaluated on
    ``test_loader``, fine-tuned for ``epochs`` on ``train_loader`` at the rate ``lr`` and evaluated after
    every epoch.  CP is fitted by ALS with at most ``cp_max_iter`` sweeps per fit.
    ``seed`` seeds every fit that draws (CP, the randomized SVD of an MPS or an SVD split) and the
    fine-tuning, so the same arguments give the same record.  A 1x1 conv is a matrix, whose best
    approximation by every method is its truncated SVD: it becomes an SVD split whatever the method
    (select the kxk convs to compare the methods on the kernels alone).  Grouped convs are never selected.

    Parameters
    ----------
    model
        A trained classifier; it is left as it is.
    method
        One of :data:`DECOMPOSITION_METHODS`.
    budget
        The share in (0, 1] of the selected layers' parameters the factorized layers may keep.
    train_loader, test_loader
        The fine-tuning batches and the test batches (in a fixed order).
    epochs, lr, seed
        The fine-tuning: epochs (at least 1), learning rate, seed.
    include
        Glob pattern(s) of the dense convs compressed
        (:func:`~tnlib_torch.study.selection.select_dense_convs`); ``None``: every one.
    cp_max_iter
        The most ALS sweeps of a CP fit.
    calibration
        ``None`` fits without data (mode ``"data-free"``); else the calibration batches,
        ``(inputs, targets)`` pairs or input tensors (mode ``"calibrated"``).

    Returns
    -------
    dict
        ``key = ["decomposition", method, budget, mode]``; ``method``, ``budget``, ``mode``,
        ``calibration_samples`` (the samples the calibration batches held, 0 data-free), ``layers``
        (per layer, :func:`~tnlib_torch.study.measure_tools.layer_entry` of its
        :class:`~tnlib_torch.LayerCompression`: ``layer``, ``structure``, ``ranks``, ``params_before``,
        ``params_after``, ``rel_error`` and ``norm_loss`` of the kernel, ``output_error`` when
        calibrated, ``note``, ...), ``params_before`` and ``params_after`` (sums over the selected
        layers), ``ratio`` (``params_after / params_before``, at most ``budget``), ``equal_params``
        (``ratio >= EQUAL_SHARE * budget``), ``model_params_before``, ``model_params_after``, and
        ``epochs``, ``lr``, ``seed``, ``before``, ``history``, ``after`` of the fine-tuning
        (:func:`~tnlib_torch.study.measure.recovery`).

    Raises
    ------
    ValueError
        An unknown ``method``, a ``budget`` outside (0, 1] or below what the smallest ranks of the
        layers reach, an ``include`` that selects no dense conv, calibration data that does not fit the
        model (``compress``'s errors).
    TypeError
        Arguments of the wrong type.
    """
    method = check_choice(method, "method", DECOMPOSITION_METHODS)
    budget, names = check_fraction(budget, "budget", one=True), set(select_dense_convs(model, include))
    check_training(epochs, lr, seed)
    cp_max_iter = check_count(cp_max_iter, "cp_max_iter", 1)
    fit = {"max_iter": cp_max_iter} if method == "cp" else None
    compressed, report = compress(model, method, budget=budget, fit=fit, seed=seed, calibration=calibration,
                                  sensitivity="none", where=lambda name, _: name in names)
    entries = [layer_entry(layer) for layer in report.layers.values()]
    before, after = sum(e["params_before"] for e in entries), sum(e["params_after"] for e in entries)
    samples = 0 if report.calibration is None else report.calibration["samples"]
    trained = fine_tuned(compressed, train_loader, test_loader, epochs, lr, seed)
    mode = DATA_FREE if calibration is None else CALIBRATED
    return record(
        "decomposition", method, budget, mode, method=method, budget=budget, mode=mode, calibration_samples=samples,
        layers=entries, params_before=before, params_after=after, ratio=after / before,
        equal_params=after >= EQUAL_SHARE * budget * before, model_params_before=report.params_before,
        model_params_after=report.params_after, **trained,
    )
