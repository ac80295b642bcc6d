"""Shared fixtures: the array backends every core test runs on, and planted oracles."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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
