"""Shared fixtures: the array backends every core test runs on, planted oracles, and one trained CNN.

The trained CNN is made once per session (:func:`digits_cnn_state`): the test files that need a
trained model share it instead of each training their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclasses.dataclass(frozen=True)
class Backend:
    """How a test moves NumPy oracles onto a backend and results back."""

    name: str
    asarray: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]

    def __repr__(self) -> str:
        return self.name


def _numpy() -> Backend:
    return Backend("numpy", np.asarray, np.asarray)


def _torch(device: str) -> Backend:
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return Backend(f"torch-{device}", lambda a: torch.as_tensor(a, device=device), lambda t: t.detach().cpu().numpy())


def _cupy() -> Backend:
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no driver or no device
        pytest.skip("no CUDA device for cupy")
    return Backend("cupy", cupy.asarray, cupy.asnumpy)


BACKEND_FACTORIES = {
    "numpy": _numpy,
    "torch-cpu": lambda: _torch("cpu"),
    "cupy": _cupy,
    "torch-cuda": lambda: _torch("cuda"),
}


@pytest.fixture(params=list(BACKEND_FACTORIES))
def backend(request) -> Backend:
    """Every backend: numpy and torch on CPU always; cupy and CUDA torch where a GPU exists."""
    return BACKEND_FACTORIES[request.param]()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


# -- one trained model for the whole session -------------------------------------------------------------------------

#: The small four-layer CNN of the study tests: ``vanilla_cnn(in_channels=1, widths=DIGITS_CNN_WIDTHS)``.
DIGITS_CNN_WIDTHS = (8, 8, 16, 16)
#: How :func:`digits_cnn_state` trains it on scikit-learn's digits (about 97% test accuracy).
DIGITS_CNN_TRAINING = {"epochs": 3, "lr": 0.05, "seed": 0}


@pytest.fixture(scope="session")
def digits_cnn_state() -> dict[str, Any]:
    """The state dict of the small CNN trained on digits, trained once per session (seeded: the same every run).

    ``torch.manual_seed(0)`` before the build, batches of 64 shuffled with seed 0, then
    :data:`DIGITS_CNN_TRAINING`.  Never change it: build a model from it with :func:`digits_cnn`.
    """
    pytest.importorskip("sklearn")
    torch = pytest.importorskip("torch")
    import tnlib_torch as tt

    torch.manual_seed(0)
    model = tt.vanilla_cnn(in_channels=1, widths=DIGITS_CNN_WIDTHS)
    tt.fine_tune(model, tt.loader(tt.digits(), batch_size=64, shuffle=True, seed=0), progress=False,
                 **DIGITS_CNN_TRAINING)
    return {name: value.clone() for name, value in model.state_dict().items()}


@pytest.fixture
def digits_cnn(digits_cnn_state) -> Callable[[], Any]:
    """A factory of fresh copies of the trained small CNN: what a test does to one leaves the others alone."""
    import tnlib_torch as tt

    def build() -> Any:
        model = tt.vanilla_cnn(in_channels=1, widths=DIGITS_CNN_WIDTHS)
        model.load_state_dict(digits_cnn_state)
        return model

    return build


@pytest.fixture(scope="session")
def digits_cnn_checkpoint(digits_cnn_state, tmp_path_factory) -> Path:
    """The trained small CNN's state dict in a file, as ``torch.save`` writes it (a study's ``checkpoint``)."""
    import torch

    path = tmp_path_factory.mktemp("digits_cnn") / "weights.pt"
    torch.save(digits_cnn_state, path)
    return path
