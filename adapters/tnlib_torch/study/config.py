"""The configuration of a compressibility study: :class:`StudyConfig`.

A :class:`StudyConfig` names everything that decides a study's results: the model and its
checkpoint, the data, the conv layers, cuts and truncation levels measured, the decompositions
compared, the calibration data, the training and fine-tuning schedules and the seed.  It is frozen
and validated on construction, so a config that exists is a valid one; its
:meth:`~StudyConfig.fingerprint` identifies the results it produces, which is how the output folder
(:mod:`tnlib_torch.study.store`) tells a resumed run from a different one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

import tnlib
from tnlib._validation import check_choice
from tnlib_torch._checks import check_count
from tnlib_torch.study.decomposition import DECOMPOSITION_METHODS
from tnlib_torch.zoo.models import MODELS

__all__ = ["ADDED", "DATASETS", "GRID", "KERNEL_CUTS", "NOT_FINGERPRINTED", "OLD_SPELLINGS", "RENAMED", "StudyConfig",
           "checked_fields", "upgraded"]

#: The data sets known by name; any other ``dataset`` is the path of an image folder.
DATASETS = ("digits", "cifar10", "cifar100")

#: The seven cuts of a conv kernel ``(o, i, h, w)``, each in its canonical spelling.
KERNEL_CUTS = tuple(str(cut) for cut in tnlib.all_cuts(tnlib.KERNEL_LABELS))

#: The fields that choose which measurements a study makes, not how any one is made: each record is
#: keyed by its cut, level or decomposition, and its value does not depend on the others.  A study may
#: be extended (more levels, cuts, decompositions or recovery levels) or narrowed in its folder: what
#: is recorded is reused, only what is missing is measured.
GRID = frozenset({"cuts", "levels", "recovery_levels", "decompositions"})

#: The fields left out of :meth:`StudyConfig.fingerprint`: the :data:`GRID`, and those that say where
#: the work runs and where data is read from, not what is computed.  ``device``: CPU and GPU kernels
#: agree to rounding, so a study started on one device may be resumed on another.  ``data_root``:
#: CIFAR is checked against its official md5 wherever it lies, so moving it changes nothing.
NOT_FINGERPRINTED = GRID | {"device", "data_root"}

#: The fields renamed since 0.1, by their old name.  A config written with an old name (the manifest of
#: an older study folder) still loads (:func:`upgraded`), and :meth:`StudyConfig.fingerprint` hashes each
#: such field under its old name, so a study keeps its fingerprint across the rename and its folder resumes.
RENAMED = {"layers": "include"}
_OLD_NAMES = {new: old for old, new in RENAMED.items()}

#: The fields added since 0.1, each with the value that makes a study do what it did before the field
#: existed, given the other fields: no calibration data, and fine-tuning at ``lr``, the rate of training.
#: A complete config of an earlier version (every other field given, none of these: the manifest of an
#: older study folder) is read with these values (:func:`upgraded`), and :meth:`StudyConfig.fingerprint`
#: hashes each only when it does something else, so such a folder keeps its fingerprint and resumes with
#: the config that makes its records, and only with that one.
ADDED: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "calibration_samples": lambda fields: 0,
    "retrain_lr": lambda fields: fields["lr"],
}

#: Values of a field spelled otherwise before, by field: read as the new spelling, stored and written so.
#: The decomposition ``"truncate"`` (the cut truncation, stored as two factors) is called ``"svd"``, the
#: name of :func:`tnlib_torch.compress`'s method that it runs.
OLD_SPELLINGS = {"decompositions": {"truncate": "svd"}}

_CANONICAL_CUTS = {tnlib.Cut(cut): cut for cut in KERNEL_CUTS}

Check = Callable[[Any, str], Any]


# -- checks of single values ----------------------------------------------------------------------------------------

def _check_str(value: Any, name: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty or blank, got {value!r}")
    return value


def _check_path(value: Any, name: str) -> str:
    """A non-empty path (str or os.PathLike), as a string."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    return _check_str(os.fspath(value), name)


def _optional(check: Check) -> Check:
    """``check``, letting ``None`` through."""
    return lambda value, name: None if value is None else check(value, name)


def _check_model(value: Any, name: str) -> str:
    """A key of :data:`~tnlib_torch.zoo.models.MODELS` or ``"package.module:factory"`` (not imported here)."""
    value = _check_str(value, name)
    module, colon, factory = value.partition(":")
    dotted = (module.split("."), factory.split("."))
    if value in MODELS or (colon and all(part.isidentifier() for parts in dotted for part in parts)):
        return value
    raise ValueError(
        f"{name} must be one of {', '.join(MODELS)} or a factory written 'package.module:factory', got {value!r}"
    )


def _check_cut(value: Any, name: str) -> str:
    """A cut of a conv kernel, in its canonical spelling (``"ihw|o"`` gives ``"o|ihw"``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a cut written like 'oi|hw', got {type(value).__name__}")
    try:
        cut = tnlib.Cut(value).check(tnlib.KERNEL_LABELS)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    return _CANONICAL_CUTS[cut]


def _check_level(value: Any, name: str) -> float:
    """A relative error strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in (0, 1), got {value!r}")
    if not 0.0 < value < 1.0:  # also refuses NaN
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_decomposition(value: Any, name: str) -> str:
    """A method of :func:`~tnlib_torch.study.decomposition.decomposition_at_params`; ``"truncate"`` is read as
    ``"svd"`` (:data:`OLD_SPELLINGS`)."""
    if isinstance(value, str):
        value = OLD_SPELLINGS["decompositions"].get(value, value)
    return check_choice(value, name, DECOMPOSITION_METHODS)


def _check_lr(value: Any, name: str) -> float:
    """A finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number > 0, got {value!r}")
    if not 0.0 < value < math.inf:  # also refuses NaN
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_device(value: Any, name: str) -> str:
    """A device string torch understands (``"cpu"``, ``"cuda:1"``, ...); it need not be present here."""
    value = _check_str(value, name)
    try:
        torch.device(value)
    except RuntimeError as error:
        raise ValueError(f"{name} must name a torch device such as 'cpu' or 'cuda:0', got {value!r}") from error
    return value


def _count(minimum: int) -> Check:
    return lambda value, name: check_count(value, name, minimum)


def _tuple_of(check: Check, allow_empty: bool = False, sort: bool = False) -> Check:
    """A check of a sequence whose items pass ``check``: a tuple, without repeats, sorted if asked."""

    def check_sequence(value: Any, name: str) -> tuple[Any, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a tuple or list, got {type(value).__name__} {value!r}")
        items = tuple(check(item, f"{name}[{i}]") for i, item in enumerate(value))
        if not items and not allow_empty:
            raise ValueError(f"{name} must not be empty")
        repeated = sorted({str(item) for item in items if items.count(item) > 1})
        if repeated:
            raise ValueError(f"{name} repeats {', '.join(repeated)} (after normalization); give each once")
        return tuple(sorted(items)) if sort else items

    return check_sequence


# -- the config -----------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What a compressibility study computes; frozen, validated, serializable, fingerprinted.

    Every field is checked on construction (and by :meth:`replace` and :meth:`from_dict`): a bad
    value raises ``TypeError`` or ``ValueError`` naming the field.  Sequences are stored as
    tuples, cuts in their canonical spelling, levels sorted; a repeated entry is refused.

    Attributes
    ----------
    model : str
        A key of :data:`tnlib_torch.zoo.models.MODELS`, or ``"package.module:factory"`` (only the form
        is checked here; the pipeline imports it).
    checkpoint : str or None
        Weights of the trained model; ``None`` trains it first for ``train_epochs``.
    dataset : str
        ``"digits"``, ``"cifar10"``, ``"cifar100"`` (:data:`DATASETS`), or else the path of an
        image folder ``path/<class>/<image>``.
    data_root : str or None
        Where CIFAR is kept (ignored otherwise).
    include : tuple of str
        Glob patterns of the conv layers studied (``fnmatch`` on module names); empty: every conv.
        Called ``layers`` in 0.1 (see :data:`RENAMED`).
    cuts : tuple of str
        Cuts of the kernels ``(o, i, h, w)``; default all seven (:data:`KERNEL_CUTS`).
    levels : tuple of float
        Relative errors ``||W - W~|| / ||W||`` each layer x cut is truncated to, in (0, 1).
    train_epochs : int
        Epochs of baseline training when there is no checkpoint (0 studies the untrained model).
    retrain_epochs : int
        Epochs of recovery fine-tuning after a truncation (0: none).
    recovery_levels : int
        How many of the largest levels get recovery fine-tuning, at most ``len(levels)``.
    decompositions : tuple of str
        The decompositions compared at equal parameters, methods of
        :func:`~tnlib_torch.study.decomposition.decomposition_at_params`: ``"svd"`` (the cut truncation
        across the cut the budget chooses per layer, stored as two factors; ``"truncate"``, its name
        before, is read as ``"svd"``),
        ``"cp"``, ``"tucker2"``, ``"mps"``.
    calibration_samples : int
        Training images (un-augmented, the first of a permutation seeded by ``seed``) on which the
        data-aware steps see the network: the data error of every truncation in the sweep, and a
        calibrated run of every decomposition beside its data-free one.  0: no calibration (no data
        error, data-free decompositions only).
    eval_samples : int or None
        The test samples evaluated at most; ``None`` evaluates them all.
    train_samples : int or None
        The training samples that training and fine-tuning see at most (a seeded subset, the same
        for every stage); ``None`` trains on them all.
    batch_size : int
    lr : float
        Learning rate of training from scratch (the baseline, when there is no checkpoint).
    retrain_lr : float or None
        Learning rate of fine-tuning (recovery, its control and the decompositions); ``None``: the rule
        of :attr:`fine_tune_lr`, ``lr / 10``.
    seed : int
        Seeds the data split, initialization, training and every randomized SVD.
    device : str
        Where the model runs, e.g. ``"cpu"`` or ``"cuda:0"``; it need not exist when the config is made.

    Examples
    --------
    >>> config = StudyConfig(cuts=["ihw|o", "hw|io"], levels=[0.5, 0.1])
    >>> config.cuts, config.levels
    (('o|ihw', 'oi|hw'), (0.1, 0.5))
    >>> StudyConfig.from_dict(config.to_dict()) == config
    True
    >>> config.replace(device="cuda", levels=[0.1, 0.5, 0.8]).fingerprint() == config.fingerprint()
    True
    >>> config.replace(eval_samples=500).fingerprint() == config.fingerprint()
    False
    >>> config.fine_tune_lr, config.replace(retrain_lr=0.01).fine_tune_lr
    (0.005, 0.01)
    """

    model: str = "vanilla_cnn"
    checkpoint: str | None = None
    dataset: str = "digits"
    data_root: str | None = None
    include: tuple[str, ...] = ()
    cuts: tuple[str, ...] = KERNEL_CUTS
    levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    train_epochs: int = 10
    retrain_epochs: int = 2
    recovery_levels: int = 1
    decompositions: tuple[str, ...] = ("svd", "cp", "tucker2", "mps")
    calibration_samples: int = 512
    eval_samples: int | None = None
    train_samples: int | None = None
    batch_size: int = 128
    lr: float = 0.05
    retrain_lr: float | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        values = checked_fields({field.name: getattr(self, field.name) for field in dataclasses.fields(self)})
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def fine_tune_lr(self) -> float:
        """The learning rate of every fine-tuning: ``retrain_lr`` if given, else ``lr / 10``.

        Fine-tuning starts from a converged model (the trained baseline, or its truncation or
        factorization, which keeps most of what it learned); the rate that trained it from scratch
        throws it out of its minimum before it can repair anything.  At ``lr = 0.05`` a pretrained
        ResNet-20 fine-tuned without any truncation lost 3 points, and the digits CNN with CP layers at
        half the parameters fell from 98.0% to 82.7% top-1 in two epochs, where ``lr / 10`` took it to
        98.9% and left the untruncated control at its 99.3%.  A tenth is the step a step schedule
        takes once training has converged at a rate (He et al. 2016 divide the rate by 10 at each step).
        """
        return self.lr / 10 if self.retrain_lr is None else self.retrain_lr

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON data: tuples become lists."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        """The config of ``data`` (as :meth:`to_dict` gives it); missing fields take their defaults.

        A field under its old name (:data:`RENAMED`, as an older manifest holds it) is read as the new one, a
        value under its old spelling (:data:`OLD_SPELLINGS`) as the new one; a complete config of an earlier
        version, without the fields :data:`ADDED` since, takes their values that reproduce it (:func:`upgraded`).

        Raises
        ------
        ValueError
            If ``data`` has a key that is not a field, gives a field under both its names, or a field's
            value is invalid.
        """
        data = upgraded(data)
        _check_names(data)
        return cls(**data)

    def replace(self, **changes: Any) -> StudyConfig:
        """A copy with ``changes`` applied, validated like a new config."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """16 hex digits identifying how the measurements of this config are made.

        The sha256 of the canonical JSON (sorted keys, no spaces) of every field but those of
        :data:`NOT_FINGERPRINTED`: the :data:`GRID` (which measurements are made), ``device`` and
        ``data_root`` (where the work runs and where data is read from).  Configs with equal
        fingerprints give equal records for the measurements they share, so they may share a
        folder.  Equal configs, and configs that differ only in those fields, have equal
        fingerprints, in every process and on every machine.

        Every other field changes the fingerprint, ``calibration_samples`` and the fine-tuning rate
        included (they change the sweep's data errors, the calibrated decompositions and every
        fine-tuned record).  The rate is hashed as it is used, :attr:`fine_tune_lr`, so ``retrain_lr=None``
        and the rate its rule gives are one study.  Each field is hashed under its name of 0.1
        (:data:`RENAMED`), and a field :data:`ADDED` since only when its value is not the one that
        reproduces the study of before (a positive ``calibration_samples``, a fine-tuning rate other
        than ``lr``), so neither a rename nor an addition changes the fingerprint of a study made before.
        """
        fields = {_OLD_NAMES.get(name, name): value for name, value in self.to_dict().items()
                  if name not in NOT_FINGERPRINTED and name not in ADDED}
        if self.calibration_samples:
            fields["calibration_samples"] = self.calibration_samples
        if self.fine_tune_lr != self.lr:
            fields["fine_tune_lr"] = self.fine_tune_lr
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_CHECKS: dict[str, Check] = {
    "model": _check_model,
    "checkpoint": _optional(_check_path),
    "dataset": _check_path,
    "data_root": _optional(_check_path),
    "include": _tuple_of(_check_str, allow_empty=True),
    "cuts": _tuple_of(_check_cut),
    "levels": _tuple_of(_check_level, sort=True),
    "train_epochs": _count(0),
    "retrain_epochs": _count(0),
    "recovery_levels": _count(0),
    "decompositions": _tuple_of(_check_decomposition),
    "calibration_samples": _count(0),
    "eval_samples": _optional(_count(1)),
    "train_samples": _optional(_count(1)),
    "batch_size": _count(1),
    "lr": _check_lr,
    "retrain_lr": _optional(_check_lr),
    "seed": _count(0),
    "device": _check_device,
}


def checked_fields(values: Mapping[str, Any], label: Callable[[str], str] = str) -> dict[str, Any]:
    """Every field of :class:`StudyConfig` in ``values`` checked and normalized as the config stores it.

    Parameters
    ----------
    values : mapping
        A value for each field, by name.
    label : callable
        How a message names the field ``name``: ``label(name)``, e.g. its command-line option
        (default: the field's name).

    Raises
    ------
    TypeError, ValueError
        The first bad value, named by ``label``; ``recovery_levels`` above the number of ``levels``.
    """
    checked = {name: _CHECKS[name](value, label(name)) for name, value in values.items()}
    if checked["recovery_levels"] > len(checked["levels"]):
        raise ValueError(f"{label('recovery_levels')} = {checked['recovery_levels']} exceeds the "
                         f"{len(checked['levels'])} level(s) of {label('levels')}")
    return checked


def upgraded(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (fields by name) as this version reads it: each old name of :data:`RENAMED` replaced by the new
    one and, when ``data`` is a complete config of an earlier version (every field but those :data:`ADDED`
    since, and none of those), the added fields with the values that reproduce its study (no calibration,
    fine-tuning at ``lr``).

    A config with some fields missing is not completed here: the missing fields take their defaults.  An old
    spelling of a value (:data:`OLD_SPELLINGS`) is read by the field's check.

    Raises
    ------
    TypeError
        If ``data`` is not a mapping.
    ValueError
        If ``data`` gives a field under both its old and its new name.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"a StudyConfig is made from a mapping of its fields, got {type(data).__name__}")
    both = [f"{old!r} and {new!r}" for old, new in RENAMED.items() if old in data and new in data]
    if both:
        raise ValueError(f"{', '.join(both)} are two names of one StudyConfig field (the first is the old one); "
                         "give one of them")
    fields = {RENAMED.get(name, name): value for name, value in data.items()}
    earlier = set(_CHECKS) - set(ADDED)
    if earlier <= set(fields) and not set(ADDED) & set(fields):
        fields.update({name: value(fields) for name, value in ADDED.items()})
    return fields


def _check_names(data: Mapping[str, Any]) -> None:
    """Refuse keys that are not fields of :class:`StudyConfig`; an old name says the new one."""
    unknown = sorted(map(str, set(data) - set(_CHECKS)))
    if unknown:
        renamed = "".join(f" ({name!r} is now {RENAMED[name]!r})" for name in unknown if name in RENAMED)
        raise ValueError(f"unknown StudyConfig field(s) {', '.join(map(repr, unknown))}{renamed}; "
                         f"the fields are {', '.join(_CHECKS)}")
