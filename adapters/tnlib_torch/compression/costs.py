"""Parameters and MACs of a factorized layer at any ranks, without building it.

A factorized layer (:class:`tnlib_torch.FactorizedModule`) is a chain of
sub-layers.  With ``G`` groups, sub-layer ``s`` maps ``w_s`` to ``w_(s+1)``
channels per group through a kernel of area ``a_s`` (a linear sub-layer has
area 1), or, when depthwise, filters each of its ``G w_s`` channels alone
(``w_(s+1) = w_s``); it yields ``p_s`` output positions per sample (the
pixels of a conv's output, the rows of a linear's).  Its weight has

    n_s = G a_s w_s w_(s+1)     (depthwise: n_s = G a_s w_s)

entries and its calls cost ``n_s p_s`` multiply-accumulates, so a chain has
``sum_s n_s + bias`` parameters and ``sum_s n_s p_s`` MACs, exactly the counts of
:func:`tnlib_torch.count_params` and :func:`tnlib_torch.layer_costs`.  The areas,
positions and depthwise flags (the layer's own ``depthwise``, since at width 1
a depthwise conv looks like a dense one) do not depend on the widths: they are read once
off one layer of the structure, built on the meta device and run on a meta
input, and the widths then vary freely (also as NumPy arrays, for many
candidate ranks at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np
import torch
from torch import nn

from tnlib_torch.compression.accounting import run_with_hooks
from tnlib_torch.layers.chain import FactorizedModule

Widths = Sequence["int | np.ndarray"]


@dataclass(frozen=True)
class ChainCosts:
    """Parameter and MAC counts of one factorized structure as functions of its widths (see module docs)."""

    groups: int
    areas: tuple[int, ...]
    positions: tuple[int, ...]
    depthwise: tuple[bool, ...]
    bias: int

    @classmethod
    def of(cls, layer: FactorizedModule, input_shape: Sequence[int] | None) -> ChainCosts:
        """The counts of ``layer``'s structure on one sample of shape ``input_shape`` (no batch dimension).

        Without ``input_shape`` the positions are 0: parameters only.  Build
        ``layer`` on the meta device to spend no memory and no arithmetic.
        """
        stages = list(layer.layers)
        positions = dict.fromkeys(stages, 0)

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            channels = output.shape[1] if isinstance(module, nn.Conv2d) else output.shape[-1]
            positions[module] += output.numel() // channels

        if input_shape is not None:
            run_with_hooks(layer, input_shape, stages, hook)
        groups = getattr(layer, "groups", 1)
        return cls(
            groups=groups,
            areas=tuple(prod(getattr(stage, "kernel_size", (1,))) for stage in stages),
            positions=tuple(positions[stage] for stage in stages),
            depthwise=tuple(getattr(layer, "depthwise", (False,) * len(stages))),
            bias=sum(stage.bias.numel() for stage in stages if stage.bias is not None),
        )

    def _entries(self, widths: Widths) -> list:
        if len(widths) != len(self.areas) + 1:
            raise ValueError(f"widths must have {len(self.areas) + 1} entries, one per junction, got {len(widths)}")
        return [self.groups * area * widths[s] * (1 if depthwise else widths[s + 1])
                for s, (area, depthwise) in enumerate(zip(self.areas, self.depthwise))]

    def params(self, widths: Widths) -> int | np.ndarray:
        """Parameters (weights and bias) at the given widths ``(w_0, ..., w_n)``."""
        return sum(self._entries(widths)) + self.bias

    def macs(self, widths: Widths) -> int | np.ndarray:
        """MACs for one sample at the given widths."""
        return sum(n * p for n, p in zip(self._entries(widths), self.positions))
