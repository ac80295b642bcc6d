"""Many variants of one layer's weight evaluated in one pass, re-running only what the layer influences.

A one-layer sweep evaluates the same network again and again with one kernel changed.  Everything
upstream of that kernel, and every branch that does not pass through it (the shortcut of a residual
block), computes the same values for every variant.  :func:`evaluate_variants` traces the model with
:func:`torch.fx.symbolic_trace` and splits its graph in two:

* the **downstream** nodes: those that read the layer's weight (the ``call_module`` of the layer, of a
  module that holds the weight, or a ``get_attr`` of the weight) and every node that uses one of
  them, the output included;
* the **frontier**: the nodes that are not downstream but feed a downstream node (for a conv inside
  a ResNet block, the conv's input and the shortcut's input).

Per test batch, the whole graph runs once with the layer's own weight (the original model's logits,
for free) and keeps the frontier's values; then, for each variant, the weight is overwritten in place
and only the downstream nodes run, from the frontier.  The loader is read once for all the variants.
The logits are those of the full model with that weight (the same operations on the same values),
tallied by :func:`tnlib_torch.zoo.train.evaluate_outputs`, the tally of :func:`tnlib_torch.evaluate`.

A model that ``torch.fx`` cannot trace (data-dependent control flow, say), or whose traced graph never
reads the weight, is run whole for every variant instead: the same results, more slowly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from tnlib_torch._checks import check_module
from tnlib_torch.zoo.train import Loader, evaluate_outputs

__all__ = ["evaluate_variants"]

#: Runs the whole model on a batch: its logits and the frontier's values.
Prefix = Callable[[Tensor], tuple[Tensor, Sequence[Any]]]
#: Runs the downstream nodes from the frontier's values: the logits.
Suffix = Callable[..., Tensor]


def evaluate_variants(model: nn.Module, layer: str, weights: Sequence[Tensor], loader: Loader,
                      hits: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`tnlib_torch.evaluate` of ``model`` as it is and with each of ``weights`` in ``layer``.

    Parameters
    ----------
    model
        A classifier; its parameters and buffers lie on one device, where each batch is moved.  It
        runs in eval mode under :func:`torch.inference_mode`.  The weight of ``layer`` is
        overwritten in place during the pass and restored bit for bit at the end (also when an
        error stops the pass), as is every module's training flag.
    layer
        The name of a module of ``model`` (``model.named_modules()``) with a tensor ``weight``.
    weights
        The variants: tensors of the weight's shape (copied into it, in its dtype).
    loader
        The ``(inputs, targets)`` batches, read once.
    hits
        Also return each sample's top-1 hit (:func:`tnlib_torch.evaluate`'s ``hits``).

    Returns
    -------
    original : dict
        :func:`tnlib_torch.evaluate` of the model as it is.
    variants : list of dict
        :func:`tnlib_torch.evaluate` of the model with ``weights[k]`` in ``layer``, in order.

    Raises
    ------
    TypeError
        ``model`` is not a module, ``layer`` not a string, a weight not a tensor.
    ValueError
        ``layer`` names no module with a tensor weight; a weight of another shape; and the errors of
        :func:`tnlib_torch.evaluate`.
    """
    check_module(model)
    weight = _layer_weight(model, layer)
    weights = _checked_weights(weights, weight, layer)
    prefix, suffix = _split(model, weight)
    original = weight.detach().clone()

    def forward(inputs: Tensor) -> Iterator[Tensor]:
        with torch.no_grad():
            logits, frontier = prefix(inputs)
            yield logits
            for variant in weights:
                weight.copy_(variant)
                yield suffix(*frontier)
            weight.copy_(original)

    try:
        results = evaluate_outputs(model, forward, loader, 1 + len(weights), hits=hits)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    return results[0], results[1:]


def _layer_weight(model: nn.Module, layer: str) -> Tensor:
    if not isinstance(layer, str):
        raise TypeError(f"layer must be the name of a module (str), got {type(layer).__name__}")
    module = dict(model.named_modules()).get(layer)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        why = "is not a module of the model" if module is None else "has no tensor weight"
        raise ValueError(f"layer {layer!r} {why}")
    return weight


def _checked_weights(weights: Sequence[Tensor], weight: Tensor, layer: str) -> list[Tensor]:
    if isinstance(weights, Tensor) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a sequence of tensors, got {type(weights).__name__}")
    for k, variant in enumerate(weights):
        if not isinstance(variant, Tensor):
            raise TypeError(f"weights[{k}] must be a tensor, got {type(variant).__name__}")
        if variant.shape != weight.shape:
            raise ValueError(f"weights[{k}] has shape {tuple(variant.shape)}, not that of {layer}.weight "
                             f"{tuple(weight.shape)}")
    return list(weights)


# -- the split of the graph ----------------------------------------------------------------------------


def _split(model: nn.Module, weight: Tensor) -> tuple[Prefix, Suffix]:
    """The prefix and suffix runs of ``model`` around ``weight``; the whole model twice if it cannot be split."""
    try:
        traced = fx.symbolic_trace(model)
    except Exception:  # fx refuses many models (control flow on values, ...): run them whole
        traced = None
    nodes = [] if traced is None else list(traced.graph.nodes)
    sources = {node for node in nodes if _reads(traced, node, weight)}
    if not sources:
        return (lambda inputs: (model(inputs), (inputs,))), model
    downstream: set[fx.Node] = set()
    for node in nodes:  # in topological order
        if node in sources or node.op == "output" or any(arg in downstream for arg in node.all_input_nodes):
            downstream.add(node)
    frontier = [node for node in nodes if node not in downstream and any(user in downstream for user in node.users)]
    return _prefix(traced, nodes, frontier), _suffix(traced, nodes, downstream, frontier)


def _reads(traced: fx.GraphModule, node: fx.Node, weight: Tensor) -> bool:
    """Whether ``node`` reads ``weight``: a call of a module holding it, or the attribute itself."""
    if node.op == "call_module":
        return any(parameter is weight for parameter in traced.get_submodule(node.target).parameters())
    if node.op == "get_attr":
        owner, _, name = node.target.rpartition(".")
        return getattr(traced.get_submodule(owner), name, None) is weight
    return False


def _prefix(traced: fx.GraphModule, nodes: list[fx.Node], frontier: list[fx.Node]) -> Prefix:
    """The whole graph, returning its output and the frontier's values."""
    graph, copies = fx.Graph(), {}
    for node in nodes:
        if node.op == "output":
            result = fx.map_arg(node.args[0], copies.__getitem__)
            graph.output((result, tuple(copies[f] for f in frontier)))
        else:
            copies[node] = graph.node_copy(node, copies.__getitem__)
    return fx.GraphModule(traced, graph)


def _suffix(traced: fx.GraphModule, nodes: list[fx.Node], downstream: set[fx.Node],
            frontier: list[fx.Node]) -> Suffix:
    """The downstream nodes, from the frontier's values (its arguments, in order)."""
    graph = fx.Graph()
    copies = {node: graph.placeholder(f"frontier_{k}") for k, node in enumerate(frontier)}
    for node in nodes:
        if node in downstream:
            copies[node] = graph.node_copy(node, copies.__getitem__)
    return fx.GraphModule(traced, graph)
