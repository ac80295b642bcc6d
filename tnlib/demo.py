"""The core demo: the entanglement spectra of a conv kernel across all its cuts.

``python -m tnlib`` (and ``tnlib spectra``, see :mod:`tnlib.cli`) prints, for every cut
of an embedded trained kernel (or of a ``.npy`` file you pass), the Schmidt rank, the
von Neumann entropy against its maximum, the effective rank, and the rank a truncation
needs for a few relative errors with the norm it loses there.  Beside it, the same for a
Gaussian random kernel of the same shape and norm, so the structure learned by training
shows.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from importlib import resources

import numpy as np

from tnlib._files import atomic_write_text
from tnlib.spectrum import Spectrum, spectra

EXAMPLE_KERNEL = "resnet20_layer2.2.conv2.npy"
ERROR_LEVELS = (0.1, 0.3, 0.5)


def example_kernel() -> np.ndarray:
    """The trained kernel ``layer2.2.conv2`` (32, 32, 3, 3) of a CIFAR-10 ResNet-20.

    Shipped with tnlib (BSD-2-Clause, see ``tnlib/data/NOTICE``).
    """
    with resources.files("tnlib").joinpath("data", EXAMPLE_KERNEL).open("rb") as f:
        return np.load(f, allow_pickle=False)


def spectra_table(spectra_by_cut: dict[str, Spectrum], levels: Sequence[float] = ERROR_LEVELS) -> str:
    """A plain-text table of the spectra of every cut."""
    head = f"{'cut':<7} {'matrix':>9} {'rank':>4} {'S (bits)':>8} {'S_max':>6} {'eff.rank':>8}"
    head += "".join(f"  r@{e:<4g} loss@{e:<4g}" for e in levels)
    rows = [head, "-" * len(head)]
    for cut, sp in spectra_by_cut.items():
        m, n = sp.matrix_shape
        row = f"{cut:<7} {f'{m}x{n}':>9} {sp.rank:>4} {sp.entropy():>8.3f} {math.log2(min(m, n)):>6.2f}"
        row += f" {sp.effective_rank():>8.2f}"
        for e in levels:
            r = sp.rank_for(e)
            row += f"  {r:>6} {sp.norm_loss(r):>10.3f}"
        rows.append(row)
    return "\n".join(rows)


def _write_json(path: str, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's arguments to ``parser`` (``tnlib spectra`` and ``python -m tnlib``; see :mod:`tnlib.cli`)."""
    parser.description = "Entanglement spectra of a tensor across all its cuts (default: a trained ResNet-20 kernel)."
    parser.add_argument("kernel", nargs="?", help="a .npy file holding the tensor (default: the embedded kernel)")
    parser.add_argument("--labels", default=None, help="one character per index (default: oihw for 4-D tensors)")
    parser.add_argument("--json", metavar="PATH", help="also write every spectrum to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random comparison kernel (default 0)")


def load_kernel(path: str) -> np.ndarray:
    """The array of the ``.npy`` file ``path``, integers and booleans as float64.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        A file that is not a ``.npy`` file of one numeric array (pickled objects are refused).
    """
    try:
        kernel = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"kernel {path!r}: no such file") from None
    except (ValueError, EOFError) as error:  # not a .npy file, an object array, a file cut short
        raise ValueError(f"kernel {path!r} is not a .npy file of a numeric array ({error})") from None
    if not isinstance(kernel, np.ndarray):  # an .npz archive
        raise ValueError(f"kernel {path!r} holds several arrays ({type(kernel).__name__}); give one .npy array")
    return kernel.astype(np.float64) if kernel.dtype.kind in "iub" else kernel


def run(args: argparse.Namespace) -> int:
    """Print the spectra of ``args.kernel`` (or of the embedded kernel) and of a random one; write ``args.json``.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        A missing or unreadable kernel file; labels that do not fit the tensor.
    """
    if args.kernel is None:
        kernel, name = example_kernel(), "ResNet-20 layer2.2.conv2 (CIFAR-10, trained)"
    else:
        kernel, name = load_kernel(args.kernel), args.kernel
    trained = spectra(kernel, labels=args.labels)
    rng = np.random.default_rng(args.seed)
    noise = rng.standard_normal(kernel.shape).astype(kernel.dtype)
    noise *= np.linalg.norm(kernel) / np.linalg.norm(noise)
    random = spectra(noise, labels=args.labels)

    print(f"{name}: shape {tuple(kernel.shape)}, {kernel.dtype}, ||K||_F = {np.linalg.norm(kernel):.4f}\n")
    print(spectra_table(trained))
    print(f"\nA Gaussian random tensor of the same shape and norm (seed {args.seed}):\n")
    print(spectra_table(random))
    print(
        "\nS: von Neumann entropy of the Schmidt weights (bits); S_max = log2(min(m, n)); eff.rank = exp(S in nats);"
        "\nr@e: the smallest rank with relative error <= e; loss@e: the norm loss 1 - ||K_r||/||K|| at that rank."
    )
    if args.json:
        _write_json(args.json, {
            "tensor": name,
            "shape": list(kernel.shape),
            "spectra": {cut: sp.to_dict() for cut, sp in trained.items()},
            "random_spectra": {cut: sp.to_dict() for cut, sp in random.items()},
        })
        print(f"\nwrote {args.json}")
    return 0
