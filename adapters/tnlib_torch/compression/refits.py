"""How :func:`tnlib_torch.compression.refine.refine_` refits one factorized layer to target outputs.

* :class:`NormalEquations`: the float64 normal equations of a pointwise last stage (an ``nn.Linear``
  or a 1x1 conv), group by group, accumulated over the data in chunks, and their ridge
  least-squares solution, written only if it lowers the error;
* :func:`adam_fit`: full-batch Adam steps on all the layer's parameters over the samples
  :class:`KeptSamples` holds, the best parameters kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from tnlib_torch.compression.calibration import CHUNK_ENTRIES
from tnlib_torch.compression.data_pass import evaluation_mode
from tnlib_torch.layers.chain import FactorizedModule

__all__ = ["ADAM_SAMPLES", "KeptSamples", "NormalEquations", "adam_fit", "pointwise"]

#: The Adam path fits, and measures its errors, on the first this many samples of the data (the
#: captured inputs and outputs of the layer are kept in memory in the layer's dtype).
ADAM_SAMPLES = 256


def pointwise(stage: nn.Module) -> bool:
    """Whether ``stage`` maps each position's channels alone: a linear layer, or a 1x1 conv, stride 1, no padding."""
    if isinstance(stage, nn.Linear):
        return True
    return (isinstance(stage, nn.Conv2d) and stage.kernel_size == (1, 1) and stage.stride == (1, 1)
            and not any(stage._reversed_padding_repeated_twice))


#: The smallest output energy divided by, so that an all-zero output has a relative error of 0 when matched.
TINY = torch.finfo(torch.float64).tiny


def relative_error_of(squared: float, energy: float) -> float:
    return math.sqrt(max(squared, 0.0) / max(energy, TINY))


class NormalEquations:
    """The float64 normal equations of the last stage, group by group, over ``[z; 1]`` (the 1 with a bias).

    ``gram[g] = sum [z_g; 1][z_g; 1]^T``, ``cross[g] = sum y_g [z_g; 1]^T`` and ``energy = sum ||y||**2``
    over every position; the squared error of the weights ``W[g] = [U_g, b_g]`` is then
    ``sum_g tr(W_g gram_g W_g^T) - 2 tr(W_g cross_g^T) + energy``.
    """

    def __init__(self, stage: nn.Conv2d | nn.Linear) -> None:
        self.stage = stage
        self.groups = stage.groups if isinstance(stage, nn.Conv2d) else 1
        out, width = stage.weight.shape[:2]
        self.bias = stage.bias is not None
        size = width + self.bias
        options = dict(dtype=torch.float64, device=stage.weight.device)
        self.gram = torch.zeros(self.groups, size, size, **options)
        self.cross = torch.zeros(self.groups, out // self.groups, size, **options)
        self.energy = torch.zeros((), **options)

    def _rows(self, t: Tensor) -> Tensor:
        """``t`` as ``(groups, channels per group, positions)`` in float64."""
        if isinstance(self.stage, nn.Linear):
            return t.reshape(-1, t.shape[-1]).T.to(torch.float64)[None]
        n, channels = t.shape[:2]
        return t.reshape(n, self.groups, channels // self.groups, -1).permute(1, 2, 0, 3).flatten(2).to(torch.float64)

    def add(self, z: Tensor, y: Tensor) -> None:
        step = max(1, CHUNK_ENTRIES // max(1, z[:1].numel(), y[:1].numel()))
        for z_part, y_part in zip(z.split(step), y.split(step)):
            rows, targets = self._rows(z_part), self._rows(y_part)
            if self.bias:
                rows = torch.cat([rows, rows.new_ones(self.groups, 1, rows.shape[2])], dim=1)
            self.gram += rows @ rows.transpose(1, 2)
            self.cross += targets @ rows.transpose(1, 2)
            self.energy += targets.square().sum()

    def _weights(self) -> Tensor:
        """The stage's current ``[U_g, b_g]``, float64, shape ``(groups, out per group, size)``."""
        weight = self.stage.weight.detach().reshape(self.cross.shape[0], self.cross.shape[1], -1)
        if self.bias:
            weight = torch.cat([weight, self.stage.bias.detach().reshape(*weight.shape[:2], 1)], dim=2)
        return weight.to(torch.float64)

    def _squared_error(self, w: Tensor) -> float:
        fitted = torch.einsum("goi,gij,goj->", w, self.gram, w)
        return float(fitted - 2 * (w * self.cross).sum() + self.energy)

    def refit(self, name: str, ridge: float) -> tuple[float, float]:
        """Write the ridge least-squares solution (if it errs less, as stored); the relative errors before, after."""
        if not all(bool(torch.isfinite(t).all()) for t in (self.gram, self.cross, self.energy)):
            raise ValueError(f"data: the activations at layer {name!r} are not finite (NaN or inf)")
        width = self.gram.shape[1] - self.bias
        diagonal = self.gram.diagonal(dim1=1, dim2=2)[:, :width]
        penalty = torch.zeros_like(self.gram[0])
        penalty.diagonal()[:width] = 1.0  # the bias is not penalized
        regularized = self.gram + ridge * diagonal.mean(dim=1)[:, None, None] * penalty
        solution = self.cross @ torch.linalg.pinv(regularized, hermitian=True)
        stored = solution.to(self.stage.weight.dtype)
        energy = float(self.energy)
        before, after = self._squared_error(self._weights()), self._squared_error(stored.to(torch.float64))
        if after >= before:
            return relative_error_of(before, energy), relative_error_of(before, energy)
        with torch.no_grad():
            self.stage.weight.copy_(stored[:, :, :width].reshape(self.stage.weight.shape))
            if self.bias:
                self.stage.bias.copy_(stored[:, :, width].reshape(-1))
        return relative_error_of(before, energy), relative_error_of(after, energy)


class KeptSamples:
    """The first :data:`ADAM_SAMPLES` samples of ``x~`` and ``y`` (``y`` in ``x~``'s dtype)."""

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.samples = 0

    def add(self, x: Tensor, y: Tensor) -> None:
        room = ADAM_SAMPLES - self.samples
        if room > 0:
            self.inputs.append(x[:room].clone())
            self.outputs.append(y[:room].to(x.dtype).clone())
            self.samples += self.inputs[-1].shape[0]

    def tensors(self) -> tuple[Tensor, Tensor]:
        return torch.cat(self.inputs), torch.cat(self.outputs)


def adam_fit(name: str, layer: FactorizedModule, x: Tensor, y: Tensor, steps: int, lr: float,
              batch_size: int) -> tuple[float, float]:
    """``steps`` full-batch Adam steps on ``sum ||layer(x) - y||**2 / sum ||y||**2``; the best parameters kept.

    The gradient of each step is accumulated over chunks of ``batch_size`` samples.  The loss is
    measured at the start and after every step; the parameters of the lowest loss are written (the
    layer is unchanged when no step improved on the start).  Returns the square roots of the start
    and the best loss, the relative errors before and after.
    """
    energy = max(float(sum(part.double().square().sum() for part in y.split(batch_size))), TINY)
    params = {key: p.detach().clone().requires_grad_(True) for key, p in layer.named_parameters()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)

    def loss(backward: bool) -> float:
        total = 0.0
        for x_part, y_part in zip(x.split(batch_size), y.split(batch_size)):
            value = (functional_call(layer, params, (x_part,)) - y_part).square().sum() / energy
            if backward:
                value.backward()
            total += float(value.detach())
        return total

    with evaluation_mode(layer, train=()), torch.enable_grad():
        start = best = loss(backward=True)
        if not math.isfinite(start):
            raise ValueError(f"data: the activations at layer {name!r} are not finite (NaN or inf)")
        kept = None
        for step in range(steps):
            optimizer.step()
            optimizer.zero_grad()
            value = loss(backward=step < steps - 1)
            if value < best:
                best, kept = value, {key: p.detach().clone() for key, p in params.items()}
    if kept is not None:
        with torch.no_grad():
            for key, p in layer.named_parameters():
                p.copy_(kept[key])
    return math.sqrt(start), math.sqrt(best)
