"""What :func:`tnlib_torch.compress` did, layer by layer and for the whole model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CompressionReport", "LayerCompression"]


@dataclass(frozen=True)
class LayerCompression:
    """One selected layer before and after compression.

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
        kept ranks; ``()`` for a layer kept dense.
    params_before, params_after
        Parameters of the layer (weights and bias).
    macs_before, macs_after
        Multiply-accumulates of the layer for one sample of the report's
        ``input_size`` (:func:`tnlib_torch.layer_costs`); ``None`` without it.
    rel_error, norm_loss
        ``||K - K~||_F / ||K||_F`` and ``1 - ||K~||_F / ||K||_F`` of the weight
        ``K`` and the weight ``K~`` the compressed layer computes (its folded
        kernel), in double precision.
    note
        Why a layer was kept dense, else ``""``.
    """

    name: str
    kind: str
    structure: str
    ranks: tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    rel_error: float
    norm_loss: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict."""
        return {**asdict(self), "ranks": list(self.ranks)}


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
        rows = [("layer", "structure", "ranks", "params", "MACs", "rel_error", "norm_loss")]
        for layer in self.layers.values():
            rows.append((layer.name, layer.structure, ",".join(map(str, layer.ranks)) or "-",
                         _change(layer.params_before, layer.params_after),
                         _change(layer.macs_before, layer.macs_after),
                         f"{layer.rel_error:.4f}", f"{layer.norm_loss:.4f}"))
        rows.append(("model", "", "", _change(self.params_before, self.params_after),
                     _change(self.macs_before, self.macs_after), "", ""))
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


def _change(before: int | None, after: int | None) -> str:
    return "-" if before is None else f"{before:,} -> {after:,}"
