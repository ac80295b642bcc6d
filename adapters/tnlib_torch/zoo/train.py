"""Evaluation and (re)training of classifiers: cross-entropy, top-k accuracy, resumable SGD/AdamW.

The model maps a batch of inputs to logits of shape ``(batch, classes)``; the targets are
class indices of shape ``(batch,)``.  For a sample with logits ``z`` and target ``t`` the loss
is the cross-entropy ``logsumexp(z) - z[t]``; the sample is a top-k hit when ``t`` is among the
``k`` largest logits (ties broken as :func:`torch.topk` breaks them), with ``k = min(5, classes)``
for top-5.  A loader is any re-iterable of ``(inputs, targets)`` batches, such as a
:class:`torch.utils.data.DataLoader`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tnlib_torch._checks import check_bool, check_module
from tnlib_torch.zoo import checkpoint as _checkpoint
from tnlib_torch.zoo.train_setup import (
    OPTIMIZERS,
    SCHEDULES,
    checked_config,
    checked_path,
    make_optimizer,
    make_scheduler,
)

__all__ = ["OPTIMIZERS", "SCHEDULES", "EpochRecord", "History", "TrainingDiverged", "evaluate", "fine_tune"]

Loader = Iterable[tuple[Tensor, Tensor]]


@dataclass
class EpochRecord:
    """One epoch of :func:`fine_tune`.

    ``train_loss`` and ``train_top1`` are the sample-weighted means over the epoch of each
    batch's cross-entropy and top-1 hits, taken in training mode with the weights before that
    batch's step; ``val`` is :func:`evaluate` on the validation loader after the epoch (``None``
    without one); ``seconds`` is the wall time of the epoch, validation included.
    """

    epoch: int
    lr: float
    train_loss: float
    train_top1: float
    val: dict[str, float] | None
    seconds: float


@dataclass
class History:
    """The records of the epochs of :func:`fine_tune`, first epoch first."""

    records: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """``{"records": [one dict per epoch]}``: plain numbers, strings and ``None`` (JSON-ready)."""
        return {"records": [asdict(record) for record in self.records]}

    @classmethod
    def from_dict(cls, data: dict[str, list[dict[str, Any]]]) -> History:
        """The history that :meth:`to_dict` described."""
        return cls([EpochRecord(**record) for record in data["records"]])


def evaluate(model: nn.Module, loader: Loader, device: torch.device | str | None = None,
             hits: bool = False) -> dict[str, Any]:
    """Mean cross-entropy and top-1/top-5 accuracy of ``model`` over every sample of ``loader``.

    Parameters
    ----------
    model : nn.Module
        Maps inputs to logits ``(batch, classes)``.  It runs in eval mode under
        :func:`torch.inference_mode`; every module's training flag is restored afterwards.
    loader : iterable of (inputs, targets)
        The batches; ``targets`` are class indices ``(batch,)``.  Batches may differ in size.
    device : torch.device or str, optional
        Where the pass runs: the model is moved there (in place) and each batch too.  ``None``:
        the device of the model's first parameter (the CPU for a model without parameters).
    hits : bool
        Also return which samples are top-1 hits.

    Returns
    -------
    dict
        ``{"top1", "top5", "loss", "count"}``: the fractions of samples that are top-1 and top-5
        hits (top-``min(5, classes)``), the cross-entropy summed over all samples and divided by
        their number ``count`` (a sample-weighted mean, not a mean of batch means).  With
        ``hits=True`` also ``"hits"``: a NumPy bool array of ``count`` entries, the top-1 hit of
        each sample in loader order (its mean is ``top1``).

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module``, ``hits`` not a bool, or the targets are not a tensor
        of integers.
    ValueError
        If ``loader`` yields no samples, the logits or targets have the wrong shape, or a target
        is not a class index in ``[0, classes)``.
    """
    (result,) = evaluate_outputs(model, lambda inputs: (model(inputs),), loader, 1, device, hits)
    return result


def evaluate_outputs(model: nn.Module, forward: Callable[[Tensor], Iterable[Tensor]], loader: Loader, outputs: int,
                     device: torch.device | str | None = None, hits: bool = False) -> list[dict[str, Any]]:
    """:func:`evaluate` of ``outputs`` classifiers built from ``model``'s modules, in one pass over ``loader``.

    ``forward(inputs)`` gives, for one batch on ``device``, the logits of each of the ``outputs``
    classifiers in turn (an iterator may compute them one at a time, e.g. each with other weights
    in one layer).  ``model`` is set up as :func:`evaluate` sets it up (moved to ``device``, eval
    mode under :func:`torch.inference_mode`, the training flags restored after) and each logits is
    checked and tallied as :func:`evaluate` does.  Returns one :func:`evaluate` dict per classifier.
    """
    check_bool(hits, "hits")
    device = _device(model, device)
    tallies = [_Tally(hits) for _ in range(outputs)]
    with _training_mode(model, False), torch.inference_mode():
        for inputs, targets in loader:
            targets = _class_indices(targets, device)
            for tally, logits in zip(tallies, forward(inputs.to(device)), strict=True):
                tally.add(_checked_logits(logits, targets), targets)
        return [tally.means("loader") for tally in tallies]


def fine_tune(
    model: nn.Module,
    train_loader: Loader,
    epochs: int,
    *,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    step_size: int | None = None,
    gamma: float = 0.1,
    val_loader: Loader | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Train ``model`` in place for ``epochs`` epochs on ``train_loader``, minimizing cross-entropy.

    Each step minimizes the batch's mean cross-entropy by SGD with momentum (plus
    ``weight_decay / 2 * ||params||^2``, the L2 penalty SGD adds to the gradient) or by AdamW
    (decoupled weight decay).  The learning rate is set per epoch by the schedule.  The model
    may be pretrained or freshly initialized; its training flags are restored at the end.

    Parameters
    ----------
    model : nn.Module
        Maps inputs to logits ``(batch, classes)``; all of its parameters are optimized.
    train_loader : iterable of (inputs, targets)
        Re-iterated every epoch.  For reproducible shuffling give a ``DataLoader`` its own seeded
        ``generator``; its state is saved in and restored from the checkpoint.
    epochs : int
        The number of epochs of the whole run, >= 1 (a resumed run counts those done before).
    lr : float
        The initial learning rate, > 0.
    optimizer : {"sgd", "adamw"}
        ``torch.optim.SGD`` or ``torch.optim.AdamW``.
    momentum : float
        In ``[0, 1)``: SGD's momentum, AdamW's ``beta1`` (``beta2 = 0.999``).
    nesterov : bool
        Nesterov momentum (SGD with ``momentum > 0`` only).
    weight_decay : float
        >= 0: SGD's L2 penalty coefficient, AdamW's decoupled decay.
    schedule : {"cosine", "step", "constant"}
        ``"cosine"``: ``lr (1 + cos(pi e / epochs)) / 2`` in epoch ``e = 0, 1, ...``
        (``CosineAnnealingLR`` down to 0); ``"step"``: ``lr * gamma ** (e // step_size)``
        (``StepLR``); ``"constant"``: ``lr``.
    step_size, gamma : int, float
        The step schedule's period in epochs (required by it, refused by the others) and factor.
    val_loader : iterable of (inputs, targets), optional
        Evaluated by :func:`evaluate` after every epoch.
    checkpoint : str or os.PathLike, optional
        A file written atomically after every epoch: model, optimizer and scheduler states, the
        history, the states of torch's CPU and CUDA generators and of ``train_loader.generator``
        (not Python's ``random`` or NumPy's), and a fingerprint of the run: the model's parameter
        names and shapes, the arguments ``epochs`` to ``seed`` but the loaders, and whether
        ``train_loader`` has a generator.  If the file exists at the start, the run resumes after
        its last epoch (a complete run only loads it) and ends with the weights an uninterrupted
        run would have; a checkpoint with another fingerprint is refused.
    device : torch.device or str, optional
        Where training runs (the model is moved there); ``None``: the first parameter's device.
    seed : int
        ``torch.manual_seed(seed)`` is called at the start (dropout and the like draw from it).
    progress : bool
        A tqdm bar per epoch with the running loss and top-1; none if tqdm is not installed.

    Returns
    -------
    History
        One :class:`EpochRecord` per epoch, the resumed run's earlier epochs included.

    Raises
    ------
    TypeError, ValueError
        For arguments of the wrong type or value (the message names the argument), a loader
        with no samples, targets that are not class indices in ``[0, classes)``, a checkpoint
        file that is not one of ``fine_tune`` (empty, truncated, or holding Python objects;
        it is read with ``weights_only=True``, so no code in it runs), or a checkpoint of a
        different run (the message says what differs).
    FileNotFoundError
        If the checkpoint's folder does not exist.
    TrainingDiverged
        (a ``FloatingPointError``) If a batch's loss, or the parameters after a step, are not
        finite: the message and its ``epoch`` and ``step`` say where, its ``history`` holds the
        completed epochs.  The checkpoint keeps the last completed epoch.
    """
    config = checked_config(
        epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        schedule=schedule, step_size=step_size, gamma=gamma, seed=seed,
    )
    path = checked_path(checkpoint)
    device = _device(model, device)
    generator = getattr(train_loader, "generator", None)
    generator = generator if isinstance(generator, torch.Generator) else None
    torch.manual_seed(seed)
    opt = make_optimizer(model, config)
    scheduler = make_scheduler(opt, config)
    fingerprint = _checkpoint.fingerprint(model, {**config, "loader_generator": generator is not None})
    history = History()
    if path is not None and path.exists():
        history = History.from_dict(_checkpoint.resume(path, fingerprint, model, opt, scheduler, generator))
    with _training_mode(model, True):
        for epoch in range(len(history.records) + 1, config["epochs"] + 1):
            started = time.perf_counter()
            lr_now = opt.param_groups[0]["lr"]
            bar = _progress_bar(train_loader, f"epoch {epoch}/{config['epochs']}", progress)
            try:
                train = _train_epoch(model, bar, opt, device, epoch).means("train_loader")
            except TrainingDiverged as error:
                error.history = history
                raise
            val = None if val_loader is None else evaluate(model, val_loader, device)
            scheduler.step()
            history.records.append(
                EpochRecord(epoch, lr_now, train["loss"], train["top1"], val, time.perf_counter() - started)
            )
            if path is not None:
                _checkpoint.save(path, fingerprint, model, opt, scheduler, history.to_dict(), generator)
    return history


# -- one pass ---------------------------------------------------------------------------------------


class _Tally:
    """Sums over the samples seen so far: cross-entropy, top-1 and top-5 hits, the count, and with
    ``hits`` each sample's top-1 hit."""

    def __init__(self, hits: bool = False) -> None:
        self.loss, self.top1, self.top5, self.count = 0.0, 0, 0, 0
        self.hits: list[Tensor] | None = [] if hits else None

    def add(self, logits: Tensor, targets: Tensor, loss_sum: Tensor | None = None) -> None:
        """Count a batch whose cross-entropies sum to ``loss_sum`` (computed from the logits when ``None``)."""
        if loss_sum is None:
            loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == targets[:, None]
        self.loss += float(loss_sum)
        self.top1 += int(hits[:, 0].sum())
        self.top5 += int(hits.any(dim=1).sum())
        self.count += len(targets)
        if self.hits is not None:
            self.hits.append(hits[:, 0].cpu())

    def means(self, loader_name: str) -> dict[str, Any]:
        """The sample-weighted means (and the count) of :func:`evaluate`, and the hits if kept."""
        if self.count == 0:
            raise ValueError(f"{loader_name} yielded no samples")
        means = {"top1": self.top1 / self.count, "top5": self.top5 / self.count, "loss": self.loss / self.count,
                 "count": self.count}
        if self.hits is not None:
            means["hits"] = torch.cat(self.hits).numpy()
        return means


def _logits(model: nn.Module, inputs: Tensor, targets: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """The model's logits for a batch moved to ``device``, and the moved targets; shapes and classes checked."""
    targets = _class_indices(targets, device)
    return _checked_logits(model(inputs.to(device)), targets), targets


def _class_indices(targets: Tensor, device: torch.device) -> Tensor:
    """``targets`` on ``device`` as int64, checked to be a tensor of integers."""
    if not isinstance(targets, Tensor) or targets.dtype.is_floating_point or targets.dtype.is_complex \
            or targets.dtype == torch.bool:
        raise TypeError(f"targets must be a tensor of integer class indices, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    return targets.to(device).long()


def _checked_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """``logits`` checked to be ``(batch, classes)`` for ``targets`` of class indices in ``[0, classes)``."""
    if targets.ndim != 1 or logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
        raise ValueError(
            "the model must return logits of shape (batch, classes) for targets of class indices (batch,); "
            f"got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    classes = logits.shape[1]
    outside = targets[(targets < 0) | (targets >= classes)]
    if outside.numel():
        raise ValueError(f"targets must be class indices in [0, {classes}) (the model returns {classes} logits), "
                         f"got {int(outside[0])}")
    return logits


def _train_epoch(model: nn.Module, bar: Any, optimizer: torch.optim.Optimizer, device: torch.device,
                 epoch: int) -> _Tally:
    """One step per batch of ``bar`` (the loader in a progress bar, closed at the end); the running tally.

    Raises :class:`FloatingPointError` at the first step whose loss, or whose updated parameters,
    are not finite (before that step's update when the loss is).
    """
    tally = _Tally()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        for step, (inputs, targets) in enumerate(bar, 1):
            logits, targets = _logits(model, inputs, targets, device)
            loss = F.cross_entropy(logits, targets)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise _diverged(epoch, step, f"the batch's loss is {value}", optimizer)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if not _all_finite(parameters, device):
                raise _diverged(epoch, step, "the update made parameters NaN or infinite", optimizer)
            tally.add(logits.detach(), targets, loss.detach() * len(targets))
            bar.set_postfix(loss=f"{tally.loss / tally.count:.4f}", top1=f"{tally.top1 / tally.count:.3f}",
                            refresh=False)
    finally:
        bar.close()
    return tally


def _all_finite(tensors: list[Tensor], device: torch.device) -> bool:
    """Whether every entry of ``tensors`` is finite (one reduction on ``device``, one synchronization)."""
    return not tensors or bool(torch.stack([torch.isfinite(t).all().to(device) for t in tensors]).all())


class TrainingDiverged(FloatingPointError):
    """:func:`fine_tune` stopped because a loss, or the parameters after a step, were not finite.

    ``epoch`` and ``step`` say where (both from 1); ``history`` holds the epochs completed before.
    """

    def __init__(self, message: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step
        self.history = History()


def _diverged(epoch: int, step: int, what: str, optimizer: torch.optim.Optimizer) -> TrainingDiverged:
    return TrainingDiverged(
        f"fine_tune diverged in epoch {epoch}, step {step} (batch {step} of the epoch): {what}. The model holds the "
        f"weights of that step; the checkpoint, if any, those of the last completed epoch (it is not overwritten). "
        f"Lower lr (now {optimizer.param_groups[0]['lr']:g}) or look for NaN or infinite inputs",
        epoch, step,
    )


class _NoBar:
    """The batches of a loader, with the calls of a tqdm bar doing nothing."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.loader)

    def set_postfix(self, **values: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(loader: Loader, description: str, progress: bool) -> Any:
    """A tqdm bar over ``loader`` if ``progress`` and tqdm is installed, else a :class:`_NoBar`."""
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(loader, desc=description, unit="batch", dynamic_ncols=True)
    return _NoBar(loader)


@contextlib.contextmanager
def _training_mode(model: nn.Module, mode: bool) -> Iterator[None]:
    """Every module of ``model`` in training mode ``mode`` inside; each one's own flag restored after."""
    flags = [(module, module.training) for module in model.modules()]
    model.train(mode)
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


# -- devices ---------------------------------------------------------------------------------------------


def _device(model: object, device: torch.device | str | None) -> torch.device:
    """The device a pass runs on (the model moved there when given), ``model`` checked."""
    check_module(model)
    if device is None:
        first = next(model.parameters(), None)
        return torch.device("cpu") if first is None else first.device
    device = torch.device(device)
    model.to(device)
    return device
