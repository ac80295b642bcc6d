"""One pass of a model over calibration data: batches read and checked, the failing layer named.

What :mod:`tnlib_torch.compression.calibration` shares between its passes: the data's batches
(a tensor split into batches, or any iterable of input batches or ``(input, target)`` pairs),
each checked (floating point, finite, not empty) before the model sees it; the model run on at
most ``samples`` of them with the layer that failed named in the error; eval mode and no
gradients for the pass, every training flag restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch
from torch import nn

from tnlib._validation import describe
from tnlib_torch._checks import check_count

__all__ = ["StopForward", "batch_input", "checked_inputs", "evaluation_mode", "forward", "input_batches",
           "layer_tracker", "model_device", "on_device", "run_on_data"]


def model_device(model: nn.Module) -> torch.device:
    """The one device of the model's parameters and buffers (CPU for a model without any)."""
    devices = {t.device for t in chain(model.parameters(), model.buffers())}
    if len(devices) > 1:
        raise ValueError(f"model must lie on one device, its tensors lie on {sorted(map(str, devices))}")
    device = devices.pop() if devices else torch.device("cpu")
    if device.type == "meta":
        raise ValueError("model is on the meta device; calibration runs its weights on data")
    return device


def input_batches(data: Any, batch_size: int) -> Iterable[Any]:
    """``data`` as an iterable of batches (a tensor split along its first index); its type checked."""
    batch_size = check_count(batch_size, "batch_size")
    if isinstance(data, torch.Tensor):
        if data.ndim == 0:
            raise ValueError("data must be a tensor of inputs with a batch index first, got a scalar")
        return data.split(batch_size)
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise TypeError(
            "data must be a tensor of inputs or an iterable (e.g. a DataLoader) of input batches "
            f"or (input, target) pairs, got {describe(data)}"
        )
    return data


def batch_input(batch: Any, index: int) -> torch.Tensor:
    """The input tensor of one batch: the batch itself, or the first entry of a tuple or list."""
    x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"data: batch {index} must be an input tensor or an (input, target) pair, got {describe(batch)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"data: the inputs of batch {index} must be floating-point, got {x.dtype}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"data: batch {index} has no sample (shape {tuple(x.shape)})")
    if x.is_meta:
        raise ValueError(f"data: the inputs of batch {index} lie on the meta device, which holds no values")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"data: the inputs of batch {index} have NaN or infinite entries")
    return x


def on_device(x: torch.Tensor, device: torch.device, index: int) -> torch.Tensor:
    """A batch's inputs on the model's ``device``: moved from the CPU (as a ``DataLoader`` yields them),
    refused from another accelerator (e.g. CUDA inputs for a model on the CPU)."""
    if x.device != device and x.device.type != "cpu":
        raise ValueError(f"data: the inputs of batch {index} lie on {x.device}, the model on {device}; "
                         "give the data on the model's device or on the CPU")
    return x.to(device)


class StopForward(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a hook to end a forward pass once it has what it needs; :func:`forward` takes it as an end."""


def checked_inputs(batches: Iterable[Any], samples: int | None,
                   device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """``(index, inputs)`` of each batch, checked, on ``device``, at most ``samples`` in all (the last batch cut).

    Raises ``ValueError`` when ``batches`` yields no batch.
    """
    seen = 0
    for index, batch in enumerate(batches):
        x = batch_input(batch, index)
        x = on_device(x if samples is None else x[: samples - seen], device, index)
        yield index, x
        seen += x.shape[0]
        if samples is not None and seen >= samples:
            break
    if seen == 0:
        raise ValueError("data yielded no batch; calibration needs at least one sample")


def forward(model: nn.Module, x: torch.Tensor, index: int, what: str = "the model's forward pass") -> None:
    """``model(x)``, ended early by :class:`StopForward`; any other failure a ``ValueError`` naming the batch
    ``index``, its shape and the layer that failed."""
    with layer_tracker(model) as entered:
        try:
            model(x)
        except StopForward:
            pass
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            where = f"in layer {entered[-1]}" if entered else "before any layer ran"
            raise ValueError(f"data: {what} failed on batch {index} of shape {tuple(x.shape)} {where}: {error}"
                             ) from error


def run_on_data(model: nn.Module, batches: Iterable[Any], samples: int | None, device: torch.device) -> int:
    """Run ``model`` on the inputs of ``batches`` (at most ``samples``); the number of samples run."""
    seen = 0
    for index, x in checked_inputs(batches, samples, device):
        forward(model, x, index)
        seen += x.shape[0]
    return seen


@contextmanager
def layer_tracker(model: nn.Module) -> Iterator[list[str]]:
    """A list that names each leaf layer as it starts its forward (``'conv1' (Conv2d)``)."""
    entered: list[str] = []

    def track(name: str) -> Callable[..., None]:
        return lambda module, args: entered.append(f"{name!r} ({type(module).__name__})")

    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    handles = [m.register_forward_pre_hook(track(n), prepend=True) for n, m in leaves]
    try:
        yield entered
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def evaluation_mode(model: nn.Module, train: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode for all but ``train`` (training mode), no gradients; every flag restored on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    for module in train:
        module.train()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag
