"""Sequential error correction: each factorized layer refitted to the original layer's outputs on data.

After :func:`tnlib_torch.compress` replaced layers by factorized ones, every factorized layer ``f~``
still computes an approximation of its dense original ``f`` fitted to the weights alone, and it sees
the outputs of the compressed (not the original) layers before it.  :func:`refine_` processes the
layers in the order a forward pass runs them; for layer ``k`` it runs the calibration data through
both models in lockstep batches, takes the input ``x~`` of layer ``k`` in the *compressed* model and
the output ``y = f(x)`` of layer ``k`` in the *original* model (its bias included), and refits ``f~``
to minimize

    E || f~(x~) - y ||**2

over every output position of every sample.  Later layers see the corrected earlier ones.  Each
model's forward pass stops as soon as layer ``k`` has run (:class:`StopForward` raised from a hook),
so a pass costs the network up to layer ``k`` only.

* **Least squares**, when the chain's last stage is pointwise (an ``nn.Linear``, or a 1x1 conv with
  stride 1 and no padding): with ``z`` the input of the last stage (the other stages run on ``x~``),
  its weight ``U`` and bias ``b`` become the minimizer of
  ``E ||U z + b - y||**2 + lam ||U||_F**2`` (per group for a grouped stage, which is block-diagonal),
  from the normal equations of ``[z; 1]`` accumulated in float64 over the data.  ``lam`` is ``ridge``
  times the mean diagonal of ``E[z z^T]`` (per group); the bias is not penalized.  The last stage is
  then optimal given the stages before it, up to the ridge.
* **Adam** otherwise (an :class:`SVDConv2d` whose output side is spatial, e.g. the cut ``"i|ohw"``):
  ``steps`` full-batch Adam steps on all the layer's parameters, minimizing
  ``sum ||f~(x~) - y||**2 / sum ||y||**2`` on the first :data:`ADAM_SAMPLES` samples, keeping the
  best parameters seen (the starting ones included).

* **The whole kernel** (``refit="kernel"``, for a layer whose patch has at most
  :data:`~tnlib_torch.compression.calibration.DEFAULT_MAX_FULL` entries): the pass collects the
  layer's input ``x`` in the *original* model instead of its output, and the layer is re-decomposed
  at its ranks from ``W* = W E[x x~^T] E[x~ x~^T]^-1``, the best dense kernel for the compressed
  inputs, in the metric ``E[x~ x~^T]`` (:mod:`tnlib_torch.compression.kernel_refit`); its errors
  exclude the bias.  Other layers take the two paths above.

In every case the layer is written only if that lowers its error, so ``error_after <= error_before``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from tnlib._validation import check_choice, check_nonnegative_real, describe
from tnlib_torch._checks import check_count, check_module
from tnlib_torch.compression.calibration import DEFAULT_BATCH
from tnlib_torch.compression.data_pass import (
    StopForward,
    checked_inputs,
    evaluation_mode,
    forward,
    input_batches,
    model_device,
)
from tnlib_torch.compression.kernel_refit import CrossMoments, kernel_refittable, refit_kernel
from tnlib_torch.compression.refits import (
    ADAM_SAMPLES,
    KeptSamples,
    NormalEquations,
    adam_fit,
    pointwise,
)
from tnlib_torch.layers.chain import FactorizedConv2d, FactorizedModule
from tnlib_torch.layers.geometry import ConvGeometry
from tnlib_torch.layers.svd import SVDLinear

__all__ = ["ADAM_SAMPLES", "REFITS", "LayerRefinement", "refine_"]

#: What :func:`refine_` refits: ``"stage"``, the last pointwise stage by least squares (else Adam);
#: ``"kernel"``, the whole kernel re-decomposed for the compressed inputs
#: (:mod:`tnlib_torch.compression.kernel_refit`; the ``"stage"`` path for a layer it does not serve).
REFITS = ("stage", "kernel")


@dataclass(frozen=True)
class LayerRefinement:
    """What :func:`refine_` did to one layer.

    Attributes
    ----------
    name
        The layer's qualified name.
    method
        ``"least_squares"`` (the last stage refitted in closed form), ``"adam"`` (all the layer's
        parameters optimized), ``"kernel"`` (the whole kernel re-decomposed, ``refit="kernel"``) or
        ``"skipped"`` (the layer is not factorized in ``compressed``).
    error_before, error_after
        The relative output error ``sqrt(sum ||f~(x~) - y||**2 / sum ||y||**2)`` of the layer before and
        after, over every output position of the ``samples`` samples; ``None`` when skipped.  For least
        squares both are evaluated from the accumulated float64 statistics of ``z`` and ``y`` (the
        stages before the last computed in the layer's dtype), the weights as stored.
    samples
        The samples the errors (and the fit) used: all the data read (at most ``samples`` of
        :func:`refine_`) for least squares and the kernel refit, at most :data:`ADAM_SAMPLES` for Adam, 0 when skipped.
    """

    name: str
    method: str
    error_before: float | None
    error_after: float | None
    samples: int

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict of every attribute."""
        return asdict(self)


def refine_(
    original: nn.Module,
    compressed: nn.Module,
    names: str | Sequence[str],
    data: Any,
    *,
    samples: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    steps: int = 50,
    lr: float = 1e-3,
    ridge: float = 1e-6,
    refit: str = "stage",
    fit: Mapping[str, Any] | None = None,
) -> dict[str, LayerRefinement]:
    """Refit the factorized layers of ``compressed`` to the outputs of ``original``, in forward order, in place.

    For each layer named (in the order the compressed model's forward pass first runs them, found by a
    forward pre-hook pass on the first batch), one pass over the data in lockstep batches collects the
    layer's input ``x~`` in ``compressed`` and its output ``y`` in ``original``; the layer is then
    refitted to minimize ``E ||f~(x~) - y||**2`` (see the module docs): the last stage by exact least
    squares when it is pointwise, else all its parameters by Adam.  Every later layer sees the
    refitted earlier ones.  Cost: one pass of both models up to layer ``k`` for every layer ``k``.

    Guarantees: least squares makes the last stage's weight and bias the minimizer of
    ``E ||U z + b - y||**2 + lam ||U||**2`` given the stages before it; a layer is only written if the
    new parameters (as stored, in the layer's dtype) err less on the same data, so
    ``error_after <= error_before`` for every layer.  Eval mode and no gradients during the passes,
    every training flag as it was afterwards; no hook is left behind; on any failure the parameters
    of ``compressed`` are restored.

    Parameters
    ----------
    original
        The uncompressed model; ``names[k]`` is an ``nn.Conv2d`` or ``nn.Linear`` in it.  Not changed.
    compressed
        The same module tree, except that some ``names[k]`` are :class:`FactorizedModule` computing the
        same shapes (the conv's geometry, the linear layer's features).  A name that is not factorized
        in it is skipped.
    names
        The layers' qualified names (one name, or a sequence without repeats).  Each factorized layer
        must run exactly once per forward pass of ``compressed``.
    data
        A tensor of inputs (run in batches of ``batch_size``) or a re-iterable of input batches or
        ``(input, target, ...)`` pairs (a list, a ``DataLoader``): it is read once per layer.  Inputs
        are floating-point and finite.  A shuffling loader gives each layer other batches.
    samples
        Use at most this many samples per pass; ``None``: all of ``data``.
    batch_size
        The batch size when ``data`` is a tensor, and the chunk size of the Adam fit.
    steps, lr
        Adam's steps and learning rate for layers whose last stage is not pointwise.
    ridge
        ``lam / mean(diag E[z z^T])`` of the least-squares fit, ``>= 0``; ``0`` gives the
        minimum-norm least-squares solution.  The kernel refit regularizes ``E[x~ x~^T]`` likewise.
    refit
        ``"stage"`` (default: the last pointwise stage, else Adam) or ``"kernel"`` (the whole
        kernel, see the module docs), :data:`REFITS`.
    fit
        Keywords of the layers' ``from_conv`` for the kernel refit (a CP fit's ``seed``,
        ``max_iter``); ``None``: their defaults.

    Returns
    -------
    dict
        ``{name: LayerRefinement}``, the refitted layers in the order processed, then the skipped ones.

    Raises
    ------
    TypeError, ValueError
        Before anything changes: a bad argument (named), a name missing from either model, a name
        that is not a conv or linear layer of ``original``, trees that differ elsewhere, a factorized
        layer of other shapes than its original, one that does not run once per forward pass,
        empty or non-re-iterable data, non-floating or non-finite inputs (any batch: all are read
        before the first layer is written).  With ``compressed`` restored: a forward pass that fails
        or non-finite activations at a layer.
    """
    check_module(original, "original")
    check_module(compressed, "compressed")
    names = _check_names(names)
    samples = None if samples is None else check_count(samples, "samples")
    steps = check_count(steps, "steps")
    lr = _check_lr(lr)
    ridge = check_nonnegative_real(ridge, "ridge")
    check_choice(refit, "refit", REFITS)
    if fit is not None and not isinstance(fit, Mapping):
        raise TypeError(f"fit must be a mapping of keywords for the layers' from_conv, got {describe(fit)}")
    layers = _factorized_layers(original, compressed, names)
    devices = model_device(original), model_device(compressed)
    batches = input_batches(data, batch_size)
    if iter(batches) is batches:
        raise TypeError(f"data must be re-iterable (a tensor, a list of batches, a DataLoader): it is read once per "
                        f"layer, got a one-shot iterator {describe(data)}")
    order = _forward_order(compressed, list(layers), batches, samples, devices[1])
    saved = {name: {k: v.detach().clone() for k, v in layers[name].state_dict().items()} for name in order}
    passes = _Passes(original, compressed, batches, samples, devices)
    try:
        results = {name: _refine_layer(name, layers[name], passes, steps, lr, ridge, batch_size, refit, fit or {})
                   for name in order}
    except BaseException:
        for name, state in saved.items():
            layers[name].load_state_dict(state)
        raise
    skipped = {name: LayerRefinement(name, "skipped", None, None, 0) for name in names if name not in layers}
    return {**results, **skipped}


def _check_names(names: Any) -> list[str]:
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a layer name or a sequence of layer names (str), got {describe(names)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"names must not repeat a layer, got {repeated} more than once")
    return list(names)


def _check_lr(lr: Any) -> float:
    lr = check_nonnegative_real(lr, "lr")
    if lr == 0.0:
        raise ValueError("lr must be > 0, got 0.0")
    return lr


def _within(name: str, layer: str) -> bool:
    """Whether the module ``name`` is ``layer`` or inside it."""
    return layer == "" or name == layer or name.startswith(layer + ".")


def _factorized_layers(original: nn.Module, compressed: nn.Module, names: list[str]) -> dict[str, FactorizedModule]:
    """The named layers factorized in ``compressed``, the two trees checked to agree everywhere else."""
    trees = {"original": dict(original.named_modules()), "compressed": dict(compressed.named_modules())}
    for name in names:
        for which, tree in trees.items():
            if name not in tree:
                raise ValueError(f"names: {name!r} is not a module of {which}")
        if not isinstance(trees["original"][name], (nn.Conv2d, nn.Linear)):
            raise TypeError(f"names: {name!r} must be an nn.Conv2d or nn.Linear in original, "
                            f"got {type(trees['original'][name]).__name__}")
    layers = {n: trees["compressed"][n] for n in names if isinstance(trees["compressed"][n], FactorizedModule)}
    rest = [{n: type(m) for n, m in tree.items() if not any(_within(n, layer) for layer in layers)}
            for tree in trees.values()]
    if rest[0] != rest[1]:
        where = min(n for n in rest[0].keys() | rest[1].keys() if rest[0].get(n) != rest[1].get(n))
        seen = [kinds.get(where, type(None)).__name__.replace("NoneType", "nothing") for kinds in rest]
        raise ValueError(f"original and compressed must have the same module tree apart from the factorized layers "
                         f"named; at {where!r} original has {seen[0]}, compressed {seen[1]}")
    for name, layer in layers.items():
        _check_shapes(name, trees["original"][name], layer)
    return layers


def _check_shapes(name: str, dense: nn.Module, layer: FactorizedModule) -> None:
    if isinstance(dense, nn.Conv2d) and isinstance(layer, FactorizedConv2d):
        same = ConvGeometry.of(dense, name) == layer.geometry
    elif isinstance(dense, nn.Linear) and isinstance(layer, SVDLinear):
        same = (dense.in_features, dense.out_features) == (layer.in_features, layer.out_features)
    else:
        same = False
    if not same:
        raise ValueError(f"layer {name!r}: the factorized {type(layer).__name__} does not compute the shapes of the "
                         f"original's {dense!r}")


def _forward_order(model: nn.Module, names: list[str], batches: Iterable[Any], samples: int | None,
                   device: torch.device) -> list[str]:
    """The factorized layers in the order ``model`` first runs them on the first batch; each must run once."""
    calls: list[str] = []
    handles = [model.get_submodule(name).register_forward_pre_hook(lambda m, a, n=name: calls.append(n))
               for name in names]
    try:
        index, x = next(checked_inputs(batches, samples, device))
        with evaluation_mode(model, train=()):
            forward(model, x, index, "the forward pass of compressed")
    finally:
        for handle in handles:
            handle.remove()
    for name in names:
        if calls.count(name) != 1:
            raise ValueError(f"layer {name!r} runs {calls.count(name)} times in a forward pass of compressed; "
                             f"refine_ fits a layer that runs once")
    return sorted(names, key=calls.index)


class _Passes:
    """The lockstep passes over the data: per batch, ``x~`` of a layer in ``compressed``, ``y`` in ``original``."""

    def __init__(self, original: nn.Module, compressed: nn.Module, batches: Iterable[Any], samples: int | None,
                 devices: tuple[torch.device, torch.device]) -> None:
        self.models, self.batches, self.samples, self.devices = (original, compressed), batches, samples, devices

    def run(self, name: str, sink: Callable[[Tensor, Tensor], None], original_input: bool = False) -> int:
        """Call ``sink(x~, y)`` on every batch (``y`` on ``x~``'s device); the number of samples read.

        ``y`` is the layer's output in the original model, or with ``original_input`` its input there.
        """
        captured: dict[str, Tensor] = {}

        def keep_output(module: nn.Module, args: Any, output: Tensor) -> None:
            captured["y"] = output
            raise StopForward

        def keep_input(module: nn.Module, args: Any, key: str = "x") -> None:
            captured[key] = args[0]
            raise StopForward

        original, compressed = (model.get_submodule(name) for model in self.models)
        handles = [original.register_forward_pre_hook(partial(keep_input, key="y")) if original_input
                   else original.register_forward_hook(keep_output), compressed.register_forward_pre_hook(keep_input)]
        seen = 0
        try:
            with evaluation_mode(self.models[0], train=()), evaluation_mode(self.models[1], train=()):
                for index, x in checked_inputs(self.batches, self.samples, self.devices[1]):
                    captured.clear()
                    for model, device, which in zip(self.models, self.devices, ("original", "compressed")):
                        forward(model, x.to(device), index, f"the forward pass of {which}")
                    if captured.keys() != {"x", "y"}:
                        raise ValueError(f"layer {name!r} did not run in the forward passes on batch {index}")
                    sink(captured["x"], captured["y"].to(captured["x"].device))
                    seen += x.shape[0]
        finally:
            for handle in handles:
                handle.remove()
        return seen


def _refine_layer(name: str, layer: FactorizedModule, passes: _Passes, steps: int, lr: float, ridge: float,
                  batch_size: int, refit: str, fit: Mapping[str, Any]) -> LayerRefinement:
    dense = passes.models[0].get_submodule(name)
    if refit == "kernel" and kernel_refittable(dense, layer):
        cross = CrossMoments(dense)
        seen = passes.run(name, cross.add, original_input=True)
        before, after = refit_kernel(name, dense, layer, cross, fit, ridge)
        return LayerRefinement(name, "kernel", before, after, seen)
    last = layer.layers[-1]
    if pointwise(last):
        system = NormalEquations(last)
        head = layer.layers[:-1]
        seen = passes.run(name, lambda x, y: system.add(head(x), y))
        before, after = system.refit(name, ridge)
        return LayerRefinement(name, "least_squares", before, after, seen)
    kept = KeptSamples()
    passes.run(name, kept.add)
    before, after = adam_fit(name, layer, *kept.tensors(), steps, lr, batch_size)
    return LayerRefinement(name, "adam", before, after, kept.samples)
