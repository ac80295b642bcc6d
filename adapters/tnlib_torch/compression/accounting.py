"""Parameter and multiply-accumulate (MAC) accounting of torch models.

MACs are counted by running one forward pass on an input of batch size 1 on
the meta device (shapes only: nothing is computed and no activation is
allocated), with forward hooks on the ``nn.Conv2d`` and ``nn.Linear`` *leaf*
modules (those without children), so any model built from these leaves is
covered, factorized layers included (they are containers of
``nn.Conv2d``/``nn.Linear``):

* ``nn.Conv2d``: ``output elements * (in_channels / groups) * kh * kw``, where
  the output elements are ``out_channels * H_out * W_out`` per sample;
* ``nn.Linear``: ``output elements * in_features``, i.e. ``in * out`` per
  sample times any leading dimensions between the batch and the features.

Bias additions, normalizations, activations, pooling and element-wise ops are
not MACs and are not counted.  A leaf called several times in the pass is
counted at every call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from math import prod
from typing import NamedTuple

import torch
from torch import nn

from tnlib_torch._checks import check_module

__all__ = ["MAC_RULES", "LayerCost", "count_macs", "count_params", "layer_costs"]


class LayerCost(NamedTuple):
    """``(params, macs)`` of one leaf layer."""

    params: int
    macs: int


def _conv2d_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    return output.numel() * (module.in_channels // module.groups) * prod(module.kernel_size)


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    return output.numel() * module.in_features


#: MACs of one call of a leaf module of each counted type, from its output.
MAC_RULES: dict[type[nn.Module], Callable[[nn.Module, torch.Tensor], int]] = {
    nn.Conv2d: _conv2d_macs,
    nn.Linear: _linear_macs,
}


def _check_input_size(input_size: object) -> tuple[int, ...]:
    expected = "a non-empty sequence of positive ints (the input shape without the batch dimension)"
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence):
        raise TypeError(f"input_size must be {expected}, got {input_size!r}")
    sizes = tuple(input_size)
    if not sizes or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in sizes):
        raise ValueError(f"input_size must be {expected}, got {input_size!r}")
    return sizes


def _mac_rule(module: nn.Module) -> Callable[[nn.Module, torch.Tensor], int] | None:
    if next(module.children(), None) is not None:
        return None
    return next((rule for kind, rule in MAC_RULES.items() if isinstance(module, kind)), None)


#: A forward hook: ``hook(module, inputs, output)``.
Hook = Callable[[nn.Module, tuple, torch.Tensor], None]


def run_with_hooks(model: nn.Module, input_size: Sequence[int], modules: Iterable[nn.Module], hook: Hook) -> None:
    """One forward pass of ``model`` on a sample of shape ``input_size``, ``hook`` after each of ``modules``.

    The pass runs under ``torch.no_grad()`` in eval mode on a batch of shape
    ``(1, *input_size)`` with the dtype of the model's first parameter
    (float32 for a model without any); the training flag of every sub-module is
    restored afterwards, and the hooks removed.  It runs on the meta device
    (:func:`_meta_pass`): shapes only, no activation is allocated, whatever the
    input size, and the model's tensors are not touched.  A model that cannot
    run on the meta device (an op with no meta kernel, a tensor attribute that
    is neither a parameter nor a buffer) runs instead on a zero input on the
    device of its first parameter.

    Raises
    ------
    ValueError
        The forward pass fails on an input of that shape (naming ``input_size``).
    """
    sizes = _check_input_size(input_size)
    modules = list(modules)
    modes = {module: module.training for module in model.modules()}
    like = next(itertools.chain(model.parameters(), model.buffers()), torch.zeros(()))
    try:
        model.eval()
        with torch.no_grad():
            try:
                calls: list[tuple] = []
                _meta_pass(model, sizes, like.dtype, modules, lambda *call: calls.append(call))
            except (NotImplementedError, RuntimeError) as error:
                if not _needs_real_tensors(error):
                    raise _input_size_error(sizes, error) from error
                _real_pass(model, torch.zeros((1, *sizes), dtype=like.dtype, device=like.device), modules, hook)
                return
    finally:
        for module, training in modes.items():
            module.training = training
    for call in calls:
        hook(*call)


def _meta_pass(model: nn.Module, sizes: tuple[int, ...], dtype: torch.dtype, modules: list[nn.Module],
               hook: Hook) -> None:
    """A forward pass with every parameter, buffer and the input on the meta device; ``model`` is not touched."""
    tensors = itertools.chain(model.named_parameters(remove_duplicate=False),
                              model.named_buffers(remove_duplicate=False))
    stand_ins: dict[int, torch.Tensor] = {}  # one meta tensor per tensor, so that tied weights stay tied
    meta = {name: stand_ins.setdefault(id(tensor), tensor.to("meta")) for name, tensor in tensors}
    x = torch.empty((1, *sizes), dtype=dtype, device="meta")
    _hooked(lambda: torch.func.functional_call(model, meta, (x,)), modules, hook)


def _real_pass(model: nn.Module, x: torch.Tensor, modules: list[nn.Module], hook: Hook) -> None:
    """A forward pass on ``x``; a failure names ``input_size``."""
    try:
        _hooked(lambda: model(x), modules, hook)
    except (NotImplementedError, RuntimeError) as error:
        raise _input_size_error(tuple(x.shape[1:]), error) from error


def _hooked(forward: Callable[[], object], modules: list[nn.Module], hook: Hook) -> None:
    """``forward()`` with ``hook`` after each call of ``modules``, the hooks removed afterwards."""
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()


def _needs_real_tensors(error: Exception) -> bool:
    """Whether a meta-device pass failed for want of real tensors (not for the input's shape)."""
    return isinstance(error, NotImplementedError) or "meta" in str(error).lower()


def _input_size_error(sizes: tuple[int, ...], error: Exception) -> ValueError:
    return ValueError(f"input_size {sizes} does not fit the model: its forward pass on a batch of shape "
                      f"{(1, *sizes)} failed ({type(error).__name__}: {error}); input_size is the shape of one "
                      f"input sample without the batch dimension, e.g. (3, 32, 32) for a CIFAR model")


def count_params(module: nn.Module) -> int:
    """Number of parameters of ``module`` and its sub-modules, each shared parameter once.

    Examples
    --------
    >>> from torch import nn
    >>> count_params(nn.Conv2d(3, 8, 3))            # 8 * 3 * 3 * 3 weights + 8 biases
    224
    """
    return sum(p.numel() for p in check_module(module, "module").parameters())


def layer_costs(model: nn.Module, input_size: Sequence[int]) -> dict[str, LayerCost]:
    """``{name: LayerCost(params, macs)}`` of every ``nn.Conv2d``/``nn.Linear`` leaf of ``model``.

    Parameters
    ----------
    model
        Any ``nn.Module``; layers are named as in ``model.named_modules()``.
    input_size
        Shape of one input sample, without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns
    -------
    dict[str, LayerCost]
        In ``named_modules()`` order.  ``params`` counts the layer's own
        parameters (weight and bias); ``macs`` its multiply-accumulates for one
        sample (0 for a layer the forward pass does not call).

    Notes
    -----
    The forward pass is :func:`run_with_hooks`'s: eval mode, no gradients, a
    zero input, every module's training flag restored afterwards.
    """
    model = check_module(model, "model")
    leaves = {module: (name, rule) for name, module in model.named_modules() if (rule := _mac_rule(module))}
    macs = dict.fromkeys(leaves, 0)

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        macs[module] += leaves[module][1](module, output)

    run_with_hooks(model, input_size, leaves, hook)
    return {name: LayerCost(count_params(module), macs[module]) for module, (name, _) in leaves.items()}


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on one sample of shape ``input_size``.

    The sum of the ``macs`` of :func:`layer_costs`; bias additions are not MACs.

    Examples
    --------
    >>> from torch import nn
    >>> count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 32, 32))   # 8*32*32 outputs * 3*3*3
    221184
    """
    return sum(cost.macs for cost in layer_costs(model, input_size).values())


def macs_of(costs: dict[str, LayerCost], name: str) -> int:
    """The MACs of the layer ``name`` and of its sub-layers, from :func:`layer_costs`."""
    return sum(cost.macs for leaf, cost in costs.items() if leaf == name or leaf.startswith(name + "."))
