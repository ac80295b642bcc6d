"""Calibration on data: the second moments of the layers' inputs, and BatchNorm statistics.

:func:`input_moments` runs a model once over calibration data and returns, for every selected
``nn.Conv2d`` (and ``nn.Linear``), the second moment ``M = E[P P^T]`` of its inputs ``P``: for a
conv the unfolded input patch of one group, index ``(i, h, w)`` in the kernel's own order, over
every output position of every sample.  ``M`` is the data metric of :mod:`tnlib.metric`:
``||(W - W~) L||_F**2 = E ||(W - W~) P||**2`` for ``L L^T = M``, so a truncation of the kernel
``W`` (labels ``"oihw"``) with ``metric={"ihw": M}`` is optimal for, and reports, the relative
error of the layer's outputs on that data (bias excluded).

:func:`recalibrate_batchnorm` re-estimates every BatchNorm's running statistics on data, as a
compressed model needs after its layers changed, or (given the network it came from) corrects
them by the change measured on the same data.

Both check their arguments first and leave the model as they found it when anything fails
(training flags, BatchNorm buffers and momentum; no hook is left behind).  See
docs/torch_calibration.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from math import prod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tnlib._validation import check_choice
from tnlib.metric import kronecker_factors
from tnlib_torch._checks import check_bool, check_count, check_module
from tnlib_torch.compression.data_pass import evaluation_mode, input_batches, model_device, run_on_data
from tnlib_torch.compression.surgery import select_modules

__all__ = ["DEFAULT_MAX_FULL", "LayerMoments", "input_moments", "recalibrate_batchnorm"]

#: A conv whose patch has at most this many entries (``C/G * kh * kw``) gets the full moment,
#: ``DEFAULT_MAX_FULL**2 * 8`` bytes = 42.5 MB per group at most (256 channels of a 3x3 kernel);
#: a larger one gets the Kronecker-factored moment ``{"i", "hw"}``.
DEFAULT_MAX_FULL = 2304

#: Inputs of a ``torch.Tensor`` given as ``data`` are run in batches of this many samples.
DEFAULT_BATCH = 128

#: The unfolded patches of one layer are processed in chunks of at most this many entries
#: (float32: 16 MiB, float64: 32 MiB), whole samples at a time (one sample's patches if they are more).
CHUNK_ENTRIES = 2**22

#: An input channel is dead when its diagonal entry of the ``i``-marginal is at most this
#: fraction of the largest one of the layer.
DEAD_TOLERANCE = 1e-12

#: The structures :meth:`LayerMoments.metric` serves, and the groups of their metric.
CONV_GROUPS = {"svd": ("ihw",), "tucker2": ("i", "hw"), "mps": ("i", "h", "w"), "cp": ("i", "h", "w")}


@dataclass(frozen=True, eq=False)
class LayerMoments:
    """The second moment of one layer's inputs, as :func:`input_moments` collected it.

    Attributes
    ----------
    name
        The layer's qualified name in the model.
    labels
        The labels of the kernel's input side: ``"ihw"`` for a conv, ``"i"`` for a linear layer.
    dims
        Their dimensions: ``(C/G, kh, kw)`` or ``(in_features,)``.
    moments
        One mapping per conv group (one for a linear layer or an ungrouped conv), from label
        groups to read-only float64 numpy matrices: the full moment ``{"ihw": M}`` (``{"i": M}``
        for a linear layer), or the Kronecker-factored ``{"i": M_i, "hw": M_hw}``.
    samples
        The number of samples (batch entries) run through the model.
    positions
        The number of input vectors averaged per group: ``samples`` times the conv's output
        positions (times the leading dimensions of a linear layer's input beyond the batch).

    A moment is singular when some input channel is zero on the whole data (a dead ReLU
    channel feeding the layer, or a dead input); :attr:`dead_inputs` lists those channels,
    whose kernel slices the data cannot see and the metric's regularization decides.
    """

    name: str
    labels: str
    dims: tuple[int, ...]
    moments: tuple[Mapping[str, np.ndarray], ...]
    samples: int
    positions: int

    @property
    def groups(self) -> int:
        """The number of conv groups (``len(moments)``)."""
        return len(self.moments)

    @property
    def full(self) -> bool:
        """Whether the full moment over ``labels`` was collected (not its Kronecker factors)."""
        return self.labels in self.moments[0]

    @property
    def dead_inputs(self) -> tuple[int, ...]:
        """The input channels (label ``"i"``, numbered over all groups) of zero second moment.

        Channel ``c`` of group ``g`` (number ``g * C/G + c``) is dead when the diagonal entry
        ``T_i[c, c] = sum_hw M_g[(c, hw), (c, hw)] = E ||P_c||**2`` of the ``i``-marginal is at most
        ``DEAD_TOLERANCE = 1e-12`` times the largest such entry of the layer (every channel when
        all are zero): the channel's input is zero at every position of every sample, up to
        round-off, so the moment is singular and the kernel's slice for it is invisible to the
        data.  For a linear layer the channels are the input features, ``T_i = M``.
        """
        diagonals = np.concatenate([self._channel_energy(moment) for moment in self.moments])
        return tuple(int(c) for c in np.flatnonzero(diagonals <= DEAD_TOLERANCE * diagonals.max()))

    def _channel_energy(self, moment: Mapping[str, np.ndarray]) -> np.ndarray:
        """The diagonal of one group's ``i``-marginal ``T_i``; factored: ``M_i tr(M_i)``, as ``tr M_i = sqrt(tr M)``."""
        if not self.full:
            return np.diagonal(moment["i"]) * np.trace(moment["i"])
        return np.diagonal(moment[self.labels]).reshape(self.dims[0], -1).sum(axis=1)

    def metric(self, kind: str = "svd", group: int = 0) -> dict[str, np.ndarray]:
        """The metric of one group's kernel in the form a structure needs, ready for ``metric=``.

        Parameters
        ----------
        kind
            ``"svd"`` (the cut ``o|ihw``, or ``o|i`` of a linear layer): ``{"ihw": M}``, the
            Kronecker product ``M_i (x) M_hw`` when only the factors were collected.
            ``"tucker2"`` (modes ``o`` and ``i``): ``{"i": M_i, "hw": M_hw}``, from the full moment
            by :func:`tnlib.metric.kronecker_factors`.  ``"mps"`` and ``"cp"``: one matrix per label,
            ``{"i", "h", "w"}``, likewise.  The factored forms equal the full moment exactly
            when channel and spatial statistics are independent; otherwise the structure's
            guarantees hold in the norm of their Kronecker product.
        group
            Which conv group, ``0 <= group < groups``.

        Returns
        -------
        dict
            ``{label group: float64 matrix}``: this record's own read-only arrays when the stored form
            is the one asked for, new arrays otherwise.
        """
        kinds = CONV_GROUPS if self.labels == "ihw" else {"svd": ("i",)}
        parts = kinds[check_choice(kind, "kind", kinds)]
        moment = self.moments[check_count(group, "group", 0, self.groups - 1, f"for a layer of {self.groups} groups")]
        if tuple(moment) == parts:
            return dict(moment)
        if self.full:
            return kronecker_factors(moment[self.labels], self.labels, self.dims, parts)
        if parts == (self.labels,):
            return {self.labels: np.kron(moment["i"], moment["hw"])}
        return {"i": moment["i"], **kronecker_factors(moment["hw"], "hw", self.dims[1:], ("h", "w"))}

    def split_metric(self, parts: Sequence[str], group: int = 0) -> dict[str, np.ndarray]:
        """One conv group's metric as the Kronecker product of a factor per part of ``"ihw"``.

        ``parts`` splits the labels ``"ihw"`` into one or two disjoint groups, each written in
        ``"ihw"``'s order, e.g. ``("iw", "h")``: the input-side labels of an SVD cut and its
        output-side ones (the cut ``oh|iw`` leaves ``iw`` whole on one side and ``h`` on the
        other).  One part, ``("ihw",)``, is :meth:`metric` ``("svd")``.  From the full moment the
        factors are its scaled partial traces (:func:`tnlib.metric.kronecker_factors`), the
        finest Kronecker approximation the cut allows, exact when the two parts' statistics are
        independent; from the stored factors ``{"i", "hw"}`` each part is the Kronecker product
        of the per-label factors of :meth:`metric` ``("mps")`` (``{"i", "hw"}`` itself when asked).
        """
        if self.labels != "ihw":
            raise ValueError(f"split_metric is for a conv's moments (labels 'ihw'), got labels {self.labels!r}")
        parts = tuple(parts)
        if len(parts) not in (1, 2) or "".join(sorted("".join(parts))) != "hiw" or any(
                part != "".join(c for c in "ihw" if c in part) for part in parts):
            raise ValueError(f"parts must split 'ihw' into one or two groups, each in the order of 'ihw', "
                             f"got {parts!r}")
        if parts == ("ihw",):
            return self.metric("svd", group)
        moment = self.moments[check_count(group, "group", 0, self.groups - 1, f"for a layer of {self.groups} groups")]
        if tuple(moment) == parts:
            return dict(moment)
        if self.full:
            return kronecker_factors(moment[self.labels], self.labels, self.dims, parts)
        single = self.metric("mps", group)
        return {part: reduce(np.kron, [single[c] for c in part]) for part in parts}


class _Moment:
    """A float64 accumulator of one layer's input moments on the model's device.

    Each chunk's products are summed in the input's precision (float32 for float32 or narrower
    inputs, float64 for float64 ones) and added to the float64 sums.
    """

    def __init__(self, name: str, layer: nn.Module, max_full: int, device: torch.device) -> None:
        self.name, self.layer, self.positions = name, layer, 0
        if isinstance(layer, nn.Conv2d):
            self.labels, self.groups = "ihw", layer.groups
            self.dims = (layer.in_channels // layer.groups, *layer.kernel_size)
        else:
            self.labels, self.groups, self.dims = "i", 1, (layer.in_features,)
        size = prod(self.dims)
        self.full = self.labels == "i" or size <= max_full
        shapes = [(size, size)] if self.full else [(self.dims[0],) * 2, (size // self.dims[0],) * 2]
        self.sums = [torch.zeros((self.groups, *s), dtype=torch.float64, device=device) for s in shapes]

    def hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        width = self.dims[0] * self.groups
        if x.ndim < (3 if self.labels == "ihw" else 1) or x.shape[-3 if self.labels == "ihw" else -1] != width:
            kind = "channels" if self.labels == "ihw" else "features"
            raise ValueError(f"the layer takes inputs of {width} {kind}, got shape {tuple(x.shape)}")
        if self.labels == "i":
            self._add_rows(x.reshape(-1, x.shape[-1]))
        else:
            self._add_patches(x if x.ndim == 4 else x.unsqueeze(0))

    def _add_rows(self, rows: torch.Tensor) -> None:
        for part in rows.split(max(1, CHUNK_ENTRIES // rows.shape[1])):
            _add_gram(self.sums[0], _working(part).T.unsqueeze(0))
            self.positions += part.shape[0]

    def _add_patches(self, x: torch.Tensor) -> None:
        step = max(1, CHUNK_ENTRIES // max(1, x[:1].numel() * prod(self.layer.kernel_size)))
        for part in x.split(step):
            patches = conv_patches(self.layer, _working(part))  # (n, G, C/G, Ho, Wo, kh, kw), a view
            if self.full:
                _add_gram(self.sums[0], patches.permute(1, 2, 5, 6, 0, 3, 4).reshape(self.groups, prod(self.dims), -1))
            else:
                self.sums[0] += torch.einsum("ngchwab,ngdhwab->gcd", patches, patches).to(torch.float64)
                spatial = torch.einsum("ngchwab,ngchwef->gabef", patches, patches)
                self.sums[1] += spatial.reshape(self.sums[1].shape).to(torch.float64)
            self.positions += prod(patches.shape[i] for i in (0, 3, 4))

    def result(self, samples: int) -> LayerMoments:
        """The averages; the factored form's two partial traces scaled by ``tr(M)**-1/2`` each."""
        means = [s.cpu().numpy() / self.positions for s in self.sums]
        if not all(np.isfinite(m).all() for m in means):
            raise ValueError(f"data: the inputs of layer {self.name!r} are not finite (NaN or inf activations)")
        if self.full:
            moments = [{self.labels: means[0][g]} for g in range(self.groups)]
        else:
            scale = [np.sqrt(max(np.trace(means[0][g]), np.finfo(float).tiny)) for g in range(self.groups)]
            moments = [{"i": means[0][g] / scale[g], "hw": means[1][g] / scale[g]} for g in range(self.groups)]
        for moment in moments:
            for matrix in moment.values():
                matrix.setflags(write=False)
        return LayerMoments(self.name, self.labels, self.dims, tuple(moments), samples, self.positions)


def _working(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the precision its products are formed in: float64 stays, anything else becomes float32."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _add_gram(total: torch.Tensor, rows: torch.Tensor) -> None:
    """``total[g] += rows[g] @ rows[g]^T`` for every group ``g``, products in ``rows``' precision.

    One matrix product per group (torch's batched product is slower on the CPU), added to
    ``total``'s float64.
    """
    for group, part in enumerate(rows):
        total[group] += (part @ part.T).to(total.dtype)


def conv_patches(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The conv's input patches as a view ``(n, G, C/G, Ho, Wo, kh, kw)`` of ``x`` padded as the conv pads.

    ``patches[n, g, c, y, z, a, b] = x_pad[n, g C/G + c, y s_h + a d_h, z s_w + b d_w]`` (stride ``s``,
    dilation ``d``), the entries :func:`torch.nn.functional.unfold` would copy, for any ``padding_mode``.
    """
    pad = conv._reversed_padding_repeated_twice
    if any(pad):
        x = F.pad(x, pad, mode="constant" if conv.padding_mode == "zeros" else conv.padding_mode)
    for axis, (size, stride, dilation) in enumerate(zip(conv.kernel_size, conv.stride, conv.dilation)):
        x = x.unfold(2 + axis, dilation * (size - 1) + 1, stride)[..., ::dilation]
    n, channels, rows, cols = x.shape[:4]
    return x.reshape(n, conv.groups, channels // conv.groups, rows, cols, *conv.kernel_size)


def input_moments(
    model: nn.Module,
    data: Any,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    linear: bool = False,
    samples: int | None = None,
    max_full: int = DEFAULT_MAX_FULL,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, LayerMoments]:
    """The second moments of the inputs of the model's convs (and linear layers), in one pass.

    For a conv of ``G`` groups, the patch ``P`` of group ``g`` is the unfolded input it multiplies
    (``F.unfold`` with the conv's kernel size, dilation and stride, after padding as the conv does,
    any ``padding_mode``), index ``(i, h, w)`` of ``C/G * kh * kw`` entries in the kernel's order.
    The moment is ``M_g = E[P P^T]``, averaged over every output position of every sample:
    the metric of the group's kernel ``W_g`` (labels ``"oihw"``), in which
    ``||W_g - W~_g||_M**2 = E ||(W_g - W~_g) P||**2``, the error of the group's outputs (bias
    excluded).  For a linear layer ``P`` is the input vector (every leading index a position).

    If ``C/G * kh * kw > max_full`` only the Kronecker factors are kept: with the partial traces
    ``T_i = sum_hw M[(i, hw), (j, hw)]`` and ``T_hw = sum_i M[(i, hw), (i, hw')]`` (accumulated
    directly, the full ``M`` never formed), ``M_i = T_i / sqrt(tr M)``, ``M_hw = T_hw / sqrt(tr M)``,
    so that ``M_i (x) M_hw`` has the trace of ``M`` and equals it exactly when channel and
    spatial statistics are independent (:func:`tnlib.metric.kronecker_factors` of the full ``M``
    gives the same two matrices).

    Precision: the products of one chunk of patches (at most ``CHUNK_ENTRIES`` entries, whole
    samples) are summed in the input's precision, the chunks' sums in float64.  A float64 model
    gets float64 products throughout (round-off ~1e-16); float32 inputs (and narrower ones, cast
    to float32) get a relative round-off of order ``1e-7 * sqrt(positions per chunk)`` of the
    largest entry, below 1e-4 for chunks of a few ten thousand positions, usually far less
    (the matrix product sums in blocks), for twice the speed of float64 products.

    The pass runs in eval mode without gradients (the training flags are restored afterwards),
    with forward pre-hooks that are always removed.  Memory: one float64 accumulator per group
    of each selected layer, ``(C/G * kh * kw)**2 * 8`` bytes when full (at most ``max_full**2 * 8``,
    42.5 MB at the default), ``((C/G)**2 + (kh*kw)**2) * 8`` when factored,
    ``in_features**2 * 8`` for a linear layer; plus one chunk of at most ``CHUNK_ENTRIES`` patch
    entries in the input's precision and the model's own forward pass of one batch.

    Parameters
    ----------
    model
        Any ``nn.Module`` whose parameters and buffers lie on one device (not ``meta``).
    data
        A ``DataLoader`` or any iterable of input batches or of ``(input, target, ...)`` pairs
        (the first entry is the input), or one tensor of inputs (run in batches of
        ``batch_size``).  Inputs are floating-point and finite; they are moved to the model's
        device.
    include, exclude
        Glob patterns on the layers' qualified names, as :func:`select_convs` takes them;
        a pattern of ``include`` that matches no layer is a ``ValueError``.
    linear
        Also collect the moments of the ``nn.Linear`` layers (always the full ``{"i": M}``).
    samples
        Use at most this many samples (the last batch is cut); ``None``: all of ``data``.
    max_full
        The largest patch size ``C/G * kh * kw`` that gets the full moment.
    batch_size
        The batch size when ``data`` is a tensor.

    Returns
    -------
    dict
        ``{name: LayerMoments}`` in model order.

    Raises
    ------
    TypeError, ValueError
        Before anything is changed, or with the model restored: a bad argument, an empty
        ``data``, non-finite or non-floating inputs, a forward pass that fails (the message
        names the batch, its shape and the layer that failed), or no layer selected.
    """
    check_module(model)
    samples = None if samples is None else check_count(samples, "samples")
    max_full = check_count(max_full, "max_full")
    check_bool(linear, "linear")
    layers = select_modules(model, (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,), include, exclude)
    if not layers:
        raise ValueError("include and exclude select no layer of the model; there is nothing to calibrate")
    device = model_device(model)
    batches = input_batches(data, batch_size)
    accumulators = [_Moment(name, layer, max_full, device) for name, layer in layers]
    handles = [a.layer.register_forward_pre_hook(a.hook) for a in accumulators]
    try:
        with evaluation_mode(model, train=()):
            seen = run_on_data(model, batches, samples, device)
    finally:
        for handle in handles:
            handle.remove()
    return {a.name: a.result(seen) for a in accumulators}


def recalibrate_batchnorm(
    model: nn.Module, data: Any, *, samples: int | None = None, batch_size: int = DEFAULT_BATCH,
    reference: nn.Module | None = None,
) -> nn.Module:
    """Re-estimate the running mean and variance of every BatchNorm of ``model`` on ``data``.

    Each BatchNorm that tracks running statistics averages its batch statistics on ``data``
    cumulatively: over ``k`` batches, the mean ``m`` of the ``k`` batch means and the mean ``v``
    of the ``k`` unbiased batch variances (torch's cumulative moving average, as
    :func:`torch.optim.swa_utils.update_bn`).  During the pass only the BatchNorms are in
    training mode (dropout and the rest in eval mode), with no gradients.

    Without ``reference`` the running statistics become ``(m, v)``.  With ``reference`` (the
    network ``model`` was made from, whose BatchNorm statistics ``model`` holds now, e.g. from
    the whole training set), the data estimate only the change ``model`` made, paired on the same
    samples: with ``(m_ref, v_ref)`` the reference's averages on ``data`` and ``(mu, var)`` the
    statistics ``model`` holds,

        mu <- mu + (m - m_ref),        var <- var * v / v_ref,

    so the sampling error the two networks share on ``data`` cancels, and a few hundred images
    correct the statistics without replacing the larger sample they came from (a channel with
    ``v_ref`` at most ``eps`` times the layer's largest gets ``v``).  On ResNet-20 compressed to a
    quarter of its block convs' parameters and refitted (1,000 JPEG CIFAR-10 images), plain
    re-estimation kept 72.2% top-1, the published statistics 74.7%, the paired correction 75.0%
    (docs/torch_calibration.md).

    Afterwards every training flag and momentum is what it was, and nothing but the BatchNorms'
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` has changed (of ``model``;
    ``reference`` is left as it was); on any failure those are restored too.  A model without
    such a BatchNorm is returned as it is, ``data`` unread.

    Parameters
    ----------
    model
        Any ``nn.Module`` on one device.
    data, samples, batch_size
        As :func:`input_moments` takes them; all the batches weigh alike in the average, the
        last one cut by ``samples`` too.
    reference
        Optional: a module with a BatchNorm of the same name and width for every one of
        ``model``'s (others are ignored), on any one device.  ``data`` is then read twice, so it
        must be re-iterable (a tensor, a ``DataLoader``, a list), not a one-shot iterator.

    Returns
    -------
    nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        If ``reference`` lacks one of ``model``'s BatchNorms (named), as well as for the data
        errors of :func:`input_moments`.
    TypeError
        If ``reference`` is not a module, or is given with a one-shot iterator as ``data``.
    """
    check_module(model)
    samples = None if samples is None else check_count(samples, "samples")
    norms = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats}
    if not norms:
        return model
    if reference is not None:
        check_module(reference, "reference")
        references = _matching_norms(reference, norms)
        if isinstance(data, Iterator):
            raise TypeError("data is read twice with reference (once per network), so it must be re-iterable: "
                            f"a tensor, a DataLoader or a list of batches, got a one-shot {type(data).__name__}")
    estimated = _batch_statistics(model, list(norms.values()), data, samples, batch_size)
    if reference is not None:
        paired = _batch_statistics(reference, references, data, samples, batch_size)
        estimated = [_corrected(norm, stats, ref) for norm, stats, ref in zip(norms.values(), estimated, paired)]
    with torch.no_grad():
        for norm, stats in zip(norms.values(), estimated):
            for buffer, value in zip(_statistics(norm), stats):
                buffer.copy_(value)
    return model


def _matching_norms(reference: nn.Module, norms: Mapping[str, _BatchNorm]) -> list[_BatchNorm]:
    """The BatchNorms of ``reference`` with the names of ``norms``, each of the same width."""
    modules = dict(reference.named_modules())
    matched = []
    for name, norm in norms.items():
        other = modules.get(name)
        alike = isinstance(other, _BatchNorm) and other.track_running_stats and other.num_features == norm.num_features
        if not alike:
            raise ValueError(f"reference has no BatchNorm {name!r} of {norm.num_features} features tracking "
                             f"running statistics, as the model has; expected the network the model was made from")
        matched.append(other)
    return matched


def _batch_statistics(model: nn.Module, norms: Sequence[_BatchNorm], data: Any, samples: int | None,
                      batch_size: int) -> list[list[torch.Tensor]]:
    """Each norm's cumulative average of batch statistics on ``data`` (mean, variance, batch count).

    The norms' buffers and momenta, and the model's training flags, are as they were afterwards.
    """
    saved = [(m.momentum, [b.clone() for b in _statistics(m)]) for m in norms]
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
        with evaluation_mode(model, train=norms):
            run_on_data(model, input_batches(data, batch_size), samples, model_device(model))
        return [[b.clone() for b in _statistics(norm)] for norm in norms]
    finally:
        for norm, (momentum, buffers) in zip(norms, saved):
            norm.momentum = momentum
            for buffer, old in zip(_statistics(norm), buffers):
                buffer.copy_(old)


def _corrected(norm: _BatchNorm, stats: Sequence[torch.Tensor],
               reference: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``norm``'s running statistics moved by the paired change ``stats`` against ``reference`` on the same data."""
    mean, var, batches = stats
    ref_mean, ref_var = (r.to(mean.device) for r in reference[:2])
    live = ref_var > torch.finfo(ref_var.dtype).eps * ref_var.max().clamp(min=torch.finfo(ref_var.dtype).tiny)
    ratio = torch.where(live, var / torch.where(live, ref_var, 1.0), 1.0)
    return [norm.running_mean + (mean - ref_mean), torch.where(live, norm.running_var * ratio, var), batches]


def _statistics(norm: _BatchNorm) -> list[torch.Tensor]:
    return [norm.running_mean, norm.running_var, norm.num_batches_tracked]
