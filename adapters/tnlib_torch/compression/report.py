"""What :func:`tnlib_torch.compress` and :func:`tnlib_torch.truncate_model_` did, layer by layer and for the model.

:class:`LayerCompression` is the one record of a compressed layer: ``compress``
reports it, ``truncate_model_`` reports it (:data:`LayerReport` is the same
class), and the study's records are its :meth:`~LayerCompression.to_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tnlib import TruncationInfo

__all__ = ["CompressionReport", "LayerCompression", "LayerReport"]


@dataclass(frozen=True)
class LayerCompression:
    """One selected layer before and after compression (or truncation in place).

    Attributes
    ----------
    name
        The layer's name in ``model.named_modules()``.
    kind
        ``"Conv2d"`` or ``"Linear"``, the original layer's type.
    structure
        The layer's type after compression (``"Tucker2Conv2d"``, ``"CPConv2d"``,
        ``"MPSConv2d"``, ``"SVDConv2d"``, ``"SVDLinear"``), ``"truncated"`` for a
        dense kernel truncated in place, or the original type for a layer kept
        dense (``note`` says why).
    ranks
        The structure's ranks: ``(R_o, R_i)`` of Tucker-2, ``(R,)`` of CP, the
        bond dimensions of an MPS, ``(r,)`` of an SVD split, the truncation's
        kept ranks (group-major for a grouped conv: one per cut, for each group
        in turn); ``()`` for a layer kept dense.
    params_before, params_after
        Parameters of the layer (weights and bias); a truncated kernel keeps its size.
    rel_error, norm_loss
        ``||K - K~||_F / ||K||_F`` and ``1 - ||K~||_F / ||K||_F`` of the weight
        ``K`` and the weight ``K~`` the compressed layer computes (its folded
        kernel), in double precision.
    shape, groups
        The original weight's shape (``(out, in/groups, kh, kw)`` for a conv;
        ``None`` when unknown) and the conv's ``groups``.
    macs_before, macs_after
        Multiply-accumulates of the layer for one sample of the report's
        ``input_size`` (:func:`tnlib_torch.layer_costs`); ``None`` without it.
    factored_params
        For a truncation across a single cut: the parameters of the layer stored
        as the two factors across the cut, ``sum_g r_g (rows_g + columns_g)``
        plus the bias; ``None`` otherwise.
    note
        Why a layer was kept dense, else ``""``.
    info
        The :class:`tnlib.TruncationInfo` of a truncation in place, else ``None``.
    output_error
        With calibration: ``||W - W~||_M / ||W||_M``, the relative error of the layer's outputs
        (bias excluded) on the calibration inputs the original network gives it, from their
        second moment ``M`` (:func:`tnlib_torch.compression.calibrated.output_error`); else ``None``.
    refined_error
        With ``refine``: the relative error of the layer's outputs in the compressed network (its
        own inputs) against the original network's, bias included, after the refinement; else ``None``.
    cut
        The cut of an :class:`SVDConv2d` split (``"o|ihw"``, ``"oh|iw"``, ...; with ``cut="auto"`` the one
        the budget chose for this layer), else ``None``.
    """

    name: str
    kind: str
    structure: str
    ranks: tuple[int, ...]
    params_before: int
    params_after: int
    rel_error: float
    norm_loss: float
    shape: tuple[int, ...] | None = None
    groups: int = 1
    macs_before: int | None = None
    macs_after: int | None = None
    factored_params: int | None = None
    note: str = ""
    info: TruncationInfo | None = None
    output_error: float | None = None
    refined_error: float | None = None
    cut: str | None = None

    @property
    def params(self) -> int:
        """The layer's parameters after compression (:attr:`params_after`)."""
        return self.params_after

    @property
    def rank(self) -> int:
        """The one kept rank (an SVD split, CP, a dense conv truncated across one cut)."""
        if len(self.ranks) != 1:
            raise AttributeError(f"layer {self.name!r} has the ranks {self.ranks}, not one rank; read .ranks instead")
        return self.ranks[0]

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict of every attribute (``info`` as its own ``to_dict()``)."""
        out = asdict(self)
        out.update(ranks=list(self.ranks), shape=None if self.shape is None else list(self.shape),
                   info=None if self.info is None else self.info.to_dict())
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerCompression:
        """The record :meth:`to_dict` wrote, or a per-layer entry of a study record.

        A study entry names the layer ``layer`` and, for a truncation in place
        (the sweeps: ``rank``, ``params``, no ``structure``), is a dense conv
        truncated across one cut; attributes an entry lacks take their defaults.
        """
        names = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        if "name" not in values:
            values["name"] = data["layer"]
        if "structure" not in values:  # a sweep's entry: a dense conv truncated in place across one cut
            values.update(kind="Conv2d", structure="truncated", ranks=[data["rank"]],
                          params_before=data["params"], params_after=data["params"])
        values.setdefault("kind", "Conv2d")
        values["ranks"] = tuple(values["ranks"])
        if values.get("shape") is not None:
            values["shape"] = tuple(values["shape"])
        if values.get("info") is not None:
            values["info"] = TruncationInfo.from_dict(values["info"])
        return cls(**values)


#: What :func:`tnlib_torch.truncate_model_` reports per layer: the same class as :class:`LayerCompression`.
LayerReport = LayerCompression


@dataclass(frozen=True)
class CompressionReport:
    """The per-layer reports of one compression and the totals of the whole model.

    Attributes
    ----------
    method
        The ``method`` given to :func:`tnlib_torch.compress`.
    policy
        ``"fixed"`` (per-layer criteria), ``"budget"`` (ranks allocated from the
        spectra under a global budget) or ``"accuracy"`` (allocated from the
        scores of an evaluation callback).
    layers
        ``{name: LayerCompression}`` of the selected layers, in model order.
    params_before, params_after
        Parameters of the whole model.
    macs_before, macs_after
        MACs of the whole model for one sample of ``input_size``; ``None`` without it.
    input_size
        The sample shape the MACs are counted at, or ``None``.
    budget, budget_on
        The budget, a fraction of the selected layers' ``"params"`` or
        ``"macs"``; ``None`` for the fixed policy.
    scores
        With the accuracy policy, ``{name: [(ranks, params or MACs, score), ...]}``
        of every evaluated candidate, plus ``"baseline"``, the uncompressed model's score.
        With the budget policy, ``"allocation"``: the greedy and the uniform allocations'
        objectives, which was built, and the layers' sensitivity weights (``None`` without).
    calibration
        With calibration data: ``samples`` (how many were read), ``sensitivity``, ``refine``,
        ``recalibrate`` (whether the BatchNorm statistics were re-estimated), and ``seconds`` per
        pass (``moments``, ``sensitivity``, ``refine``, ``batchnorm``); else ``None``.
    """

    method: str
    policy: str
    layers: dict[str, LayerCompression]
    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    input_size: tuple[int, ...] | None = None
    budget: float | None = None
    budget_on: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    @property
    def param_ratio(self) -> float:
        """``params_before / params_after`` of the whole model (the compression ratio)."""
        return self.params_before / self.params_after

    @property
    def mac_ratio(self) -> float | None:
        """``macs_before / macs_after`` of the whole model, or ``None`` without ``input_size``."""
        return None if self.macs_before is None else self.macs_before / self.macs_after

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict."""
        out = asdict(self)
        out.update(layers=[layer.to_dict() for layer in self.layers.values()],
                   input_size=None if self.input_size is None else list(self.input_size),
                   param_ratio=self.param_ratio, mac_ratio=self.mac_ratio)
        return out

    def table(self) -> str:
        """The report as a plain-text table, one row per layer and a total."""
        calibrated = self.calibration is not None
        refined = any(layer.refined_error is not None for layer in self.layers.values())
        rows = [("layer", "structure", "ranks", "params", "MACs", "rel_error", "norm_loss")
                + ("output_error",) * calibrated + ("refined_error",) * refined]
        for layer in self.layers.values():
            structure = layer.structure if layer.cut is None else f"{layer.structure} {layer.cut}"
            rows.append((layer.name, structure, ",".join(map(str, layer.ranks)) or "-",
                         _change(layer.params_before, layer.params_after),
                         _change(layer.macs_before, layer.macs_after),
                         f"{layer.rel_error:.4f}", f"{layer.norm_loss:.4f}")
                        + (_number(layer.output_error),) * calibrated + (_number(layer.refined_error),) * refined)
        rows.append(("model", "", "", _change(self.params_before, self.params_after),
                     _change(self.macs_before, self.macs_after), "", "") + ("",) * (calibrated + refined))
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        ratios = f"{self.param_ratio:.2f}x fewer parameters"
        if self.mac_ratio is not None:
            ratios += f", {self.mac_ratio:.2f}x fewer MACs at input {tuple(self.input_size)}"
        return "\n".join([f"compress: method={self.method!r}, policy={self.policy!r}: {ratios}", *lines])

    def __str__(self) -> str:
        return self.table()


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _change(before: int | None, after: int | None) -> str:
    return "-" if before is None else f"{before:,} -> {after:,}"
