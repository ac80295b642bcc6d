"""The checked arguments of :func:`tnlib_torch.fine_tune`, and the optimizer and scheduler they make."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tnlib_torch._checks import check_count, check_path

__all__ = ["OPTIMIZERS", "SCHEDULES", "checked_config", "checked_path", "make_optimizer", "make_scheduler"]

#: The optimizers ``fine_tune`` knows.
OPTIMIZERS = ("sgd", "adamw")
#: The learning-rate schedules ``fine_tune`` knows.
SCHEDULES = ("cosine", "step", "constant")

#: For each real argument of ``fine_tune``: its allowed range, in words and as a test.
_REAL_RANGES = {
    "lr": ("> 0", lambda value: value > 0),
    "momentum": ("in [0, 1)", lambda value: 0 <= value < 1),
    "weight_decay": (">= 0", lambda value: value >= 0),
    "gamma": ("> 0", lambda value: value > 0),
}


def checked_config(**arguments: Any) -> dict[str, Any]:
    """The training arguments of ``fine_tune``, checked, as plain values (part of the fingerprint)."""
    config = dict(arguments)
    config["epochs"] = check_count(arguments["epochs"], "epochs", 1)
    config["seed"] = check_count(arguments["seed"], "seed", 0)
    for name, (allowed, test) in _REAL_RANGES.items():
        value = arguments[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        if not (math.isfinite(value) and test(value)):
            raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
        config[name] = float(value)
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if arguments[name] not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {arguments[name]!r}")
    if config["schedule"] == "step":
        if arguments["step_size"] is None:
            raise ValueError("schedule='step' needs step_size, the number of epochs between two decays")
        config["step_size"] = check_count(arguments["step_size"], "step_size", 1)
    elif arguments["step_size"] is not None:
        raise ValueError(f"step_size is used by schedule='step' only, got it with schedule={config['schedule']!r}")
    config["nesterov"] = bool(arguments["nesterov"])
    if config["nesterov"] and (config["optimizer"] != "sgd" or config["momentum"] == 0):
        raise ValueError("nesterov=True needs optimizer='sgd' with momentum > 0")
    return config


def checked_path(checkpoint: str | os.PathLike[str] | None) -> Path | None:
    """The checkpoint's path, if any; its folder must exist (it is checked before any training)."""
    if checkpoint is None:
        return None
    path = check_path(checkpoint, "checkpoint")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of checkpoint {str(path)!r} does not exist")
    return path


def make_optimizer(model: nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD or AdamW over all of the model's parameters; ``momentum`` is AdamW's ``beta1``."""
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                               nesterov=config["nesterov"], weight_decay=config["weight_decay"])
    return torch.optim.AdamW(model.parameters(), lr=config["lr"], betas=(config["momentum"], 0.999),
                             weight_decay=config["weight_decay"])


def make_scheduler(optimizer: torch.optim.Optimizer, config: dict[str, Any]) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch schedule: cosine annealing to 0 over ``epochs``, step decay, or constant."""
    if config["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"])
    if config["schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config["step_size"], gamma=config["gamma"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


