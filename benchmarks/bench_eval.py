"""CPU evaluation throughput of the study's networks: :func:`tnlib_torch.evaluate` against a bare loop.

For VanillaCNN (default widths), ResNet-20 and ResNet-56 (quick: the first two) on 3x32x32 inputs,
"ours" is ``tnlib_torch.evaluate(model, loader)`` (eval mode,
``torch.inference_mode()``, cross-entropy loss, top-1 and top-5 over every
sample) and the peer is the bare inference loop a user would write,
``for x, _ in loader: model(x)`` under ``torch.inference_mode()``: the ratio is
what evaluate's bookkeeping costs.  The table also gives images per second.

The loader holds random float32 images and labels in memory (a
``TensorDataset`` of 1024 samples, batch 256; quick: 32 samples, batch 16),
so decoding and augmentation are not timed.  torch's threads are pinned to
:data:`benchmarks.harness.THREADS` (2) by the harness.  Each timing is the best
of 3 passes over the loader after one warm-up pass (quick: 1).

Target (reported): evaluate within 10% of the bare loop's throughput.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.harness import Check, Row, Section, measure, standalone
from tnlib_torch.zoo.models import cifar_resnet, vanilla_cnn
from tnlib_torch.zoo.train import evaluate

MODELS = (("VanillaCNN", vanilla_cnn), ("ResNet-20", lambda: cifar_resnet(20)), ("ResNet-56", lambda: cifar_resnet(56)))
SAMPLES, BATCH, REPEAT = 1024, 256, 3
QUICK_SAMPLES, QUICK_BATCH, QUICK_REPEAT, QUICK_MODELS = 32, 16, 1, 2
#: evaluate's throughput relative to the bare loop's, at least.
TARGET = 0.9


def _bare_loop(model: torch.nn.Module, loader: DataLoader) -> None:
    with torch.inference_mode():
        for x, _ in loader:
            model(x)


def run(quick: bool = False) -> list[Section]:
    """One section: a row per network."""
    samples, batch, repeat = (QUICK_SAMPLES, QUICK_BATCH, QUICK_REPEAT) if quick else (SAMPLES, BATCH, REPEAT)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(samples, 3, 32, 32, generator=generator),
                         torch.randint(0, 10, (samples,), generator=generator))
    loader = DataLoader(data, batch_size=batch)
    rows = []
    for name, build in MODELS[:QUICK_MODELS] if quick else MODELS:
        torch.manual_seed(0)
        model = build().eval()
        ours, metrics = measure(partial(evaluate, model, loader), repeat=repeat, warmup=1)
        peer, _ = measure(partial(_bare_loop, model, loader), repeat=repeat, warmup=1)
        assert metrics["count"] == samples
        rows.append(Row(name, ours, "bare inference loop", peer, extra={
            "ours img/s": f"{samples / ours.best_ms * 1e3:,.0f}",
            "peer img/s": f"{samples / peer.best_ms * 1e3:,.0f}",
            "params": f"{sum(p.numel() for p in model.parameters()):,}",
        }))
    slow = [f"{row.case} ({row.speedup:.2f}x)" for row in rows if row.speedup < TARGET]
    check = Check(f"evaluate keeps >= {TARGET:.0%} of the bare loop's throughput", not slow,
                  f"below: {', '.join(slow)}" if slow else f"{len(rows)} of {len(rows)} networks")
    notes = [f"{samples} random 3x32x32 images in memory, batch {batch}; best of {repeat} passes after 1 warm-up; "
             f"torch threads: {torch.get_num_threads()}, float32",
             "ours = tnlib_torch.evaluate (loss, top-1, top-5); peer = model(x) over the loader; "
             "speed-up = peer time / our time"]
    return [Section("CPU evaluation throughput, 3x32x32 inputs", rows, [check], notes)]


if __name__ == "__main__":
    standalone("eval", run)
