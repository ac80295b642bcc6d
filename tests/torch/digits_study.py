"""What the tests of the study's measurements share: a small CNN trained on digits, the digits loaders, the
guard that a measurement never changes the model it is given, and a model torch.fx cannot trace.

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


class Branchy(torch.nn.Module):
    """A small CNN whose forward branches on the values of its input, so that torch.fx cannot trace it."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, 6, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        if x.mean() > 0:
            x = x + torch.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


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
