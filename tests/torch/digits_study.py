"""What the tests of the study's measurements share: a small CNN trained on digits, the digits loaders, and
the guard that a measurement never changes the model it is given.

A test module imports the fixtures it uses (``pristine``, ``model_is_never_modified``) and defines its own
``model`` fixture with :func:`trained_cnn`.
"""

from __future__ import annotations

import pytest
import torch

import tnlib_torch as tt


def train_loader(batch_size: int = 64, samples: int | None = None) -> torch.utils.data.DataLoader:
    """The digits training images (the first ``samples`` of them if given), shuffled by a seeded generator."""
    images = tt.digits()
    images = images if samples is None else torch.utils.data.Subset(images, range(samples))
    return tt.loader(images, batch_size=batch_size, shuffle=True, seed=0)


def test_loader(batch_size: int = 450) -> torch.utils.data.DataLoader:
    """The digits test images, in order."""
    return tt.loader(tt.digits(train=False), batch_size=batch_size)


def trained_cnn(widths: tuple[int, int, int, int], epochs: int, batch_size: int = 64) -> torch.nn.Module:
    """A four-layer CNN of these ``widths`` trained for ``epochs`` on digits at lr 0.05, seeded."""
    torch.manual_seed(0)
    cnn = tt.vanilla_cnn(in_channels=1, widths=widths)
    tt.fine_tune(cnn, train_loader(batch_size), epochs=epochs, lr=0.05, seed=0, progress=False)
    return cnn


@pytest.fixture(scope="module")
def pristine(model) -> dict[str, torch.Tensor]:
    """The trained model's state as training left it."""
    return {name: value.clone() for name, value in model.state_dict().items()}


@pytest.fixture(autouse=True)
def model_is_never_modified(request):
    """After every test that uses the trained model, its state is what training left."""
    if "model" not in request.fixturenames:
        yield
        return
    model, before = request.getfixturevalue("model"), request.getfixturevalue("pristine")
    yield
    state = model.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in state)
