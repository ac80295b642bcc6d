"""Factorized conv and linear layers, and what they share (see docs/torch_layers.md).

- :mod:`~tnlib_torch.layers.factorized`: :class:`Tucker2Conv2d`, :class:`MPSConv2d`;
- :mod:`~tnlib_torch.layers.svd`: :class:`SVDConv2d`, :class:`SVDLinear`, split along a cut;
- :mod:`~tnlib_torch.layers.cp`: :class:`CPConv2d` and its CPAC-Conv significance;
- :mod:`~tnlib_torch.layers.chain`: :class:`FactorizedModule` and :class:`FactorizedConv2d`,
  a chain of sub-convs and its group-by-group fit at one common rank;
- :mod:`~tnlib_torch.layers.geometry`: the conv semantics each sub-conv keeps, and folding;
- :mod:`~tnlib_torch.layers.reports`: the exact whole-kernel report of a grouped kernel.

Nothing here depends on the other subpackages of :mod:`tnlib_torch`.
"""

from tnlib_torch.layers.chain import FactorizedConv2d, FactorizedModule
from tnlib_torch.layers.cp import CPConv2d, CPFitInfo
from tnlib_torch.layers.factorized import MPS_ORDERS, MPSConv2d, Tucker2Conv2d
from tnlib_torch.layers.svd import SVDConv2d, SVDLinear

__all__ = [
    "MPS_ORDERS",
    "CPConv2d",
    "CPFitInfo",
    "FactorizedConv2d",
    "FactorizedModule",
    "MPSConv2d",
    "SVDConv2d",
    "SVDLinear",
    "Tucker2Conv2d",
]
