"""Evaluation and (re)training: exact metrics, learning, determinism, resumable checkpoints, schedules."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import tnlib_torch.zoo.train as train  # noqa: E402
from tests.core.test_api import plain_signature  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------------------


def blobs(n: int = 48, features: int = 4, classes: int = 3, seed: int = 0) -> TensorDataset:
    """Gaussian blobs around ``classes`` random centres: a small, learnable problem."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % classes
    centres = 2 * torch.randn(classes, features, generator=generator)
    return TensorDataset(centres[targets] + torch.randn(n, features, generator=generator), targets)


def loader(dataset: TensorDataset, batch_size: int = 8, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """A DataLoader shuffling with its own generator, seeded, as the docs recommend."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def mlp(features: int = 4, classes: int = 3, hidden: int = 16, dropout: float = 0.2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes))


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)


def without_seconds(history: train.History) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history.to_dict()["records"]]


class Lookup(nn.Module):
    """Logits chosen by hand: input ``i`` (a sample index) gets row ``i`` of ``table``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)
        self.seen_training: list[bool] = []
        self.seen_inference: list[bool] = []

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        self.seen_inference.append(torch.is_inference_mode_enabled())
        return self.table[index]


class Interrupted(Exception):
    pass


class InterruptedLoader:
    """``loader``, interrupted at batch ``batch`` of epoch ``epoch`` (1-based); with the loader's ``generator``."""

    def __init__(self, loader: DataLoader, epoch: int, batch: int) -> None:
        self.loader, self.epoch, self.batch, self.epochs_started = loader, epoch, batch, 0
        self.generator = loader.generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.epochs_started += 1
        for index, batch in enumerate(self.loader):
            if (self.epochs_started, index) == (self.epoch, self.batch):
                raise Interrupted
            yield batch


# -- evaluate -----------------------------------------------------------------------------------------

#: Every row of logits is a permutation of these values, so logsumexp is the same for all rows.
VALUES = [3.0, 2.0, 1.0, 0.0, -1.0, -2.0]
LOGSUMEXP = math.log(sum(math.exp(v) for v in VALUES))
TARGETS = [0, 1, 2, 3, 4, 5, 0]
TARGET_VALUES = [3.0, 3.0, -2.0, 0.0, 1.0, -1.0, 3.0]  # the logit of each sample's target


def lookup_model() -> Lookup:
    rows = []
    for target, value in zip(TARGETS, TARGET_VALUES):
        others = [v for v in VALUES if v != value]
        rows.append(others[:target] + [value] + others[target:])
    return Lookup(torch.tensor(rows, dtype=torch.float64))


def lookup_loader(batch_size: int = 3) -> DataLoader:
    dataset = TensorDataset(torch.arange(len(TARGETS)), torch.tensor(TARGETS))
    return DataLoader(dataset, batch_size=batch_size)  # batches of 3, 3 and 1 samples


def test_evaluate_is_exact_and_weights_samples_not_batches():
    metrics = train.evaluate(lookup_model(), lookup_loader())
    # A target with logit v ranks 3 - v (0-based): a top-1 hit iff v = 3, a top-5 hit iff v >= -1.
    assert metrics["top1"] == 3 / 7 and metrics["top5"] == 6 / 7 and metrics["count"] == 7
    # The cross-entropy of a sample is logsumexp(row) - v; the mean of the v is 1.
    assert metrics["loss"] == pytest.approx(LOGSUMEXP - 1.0, rel=1e-14)
    mean_of_batch_means = LOGSUMEXP - (4 / 3 + 0 + 3) / 3
    assert abs(metrics["loss"] - mean_of_batch_means) > 0.4
    assert train.evaluate(lookup_model(), lookup_loader(batch_size=7)) == pytest.approx(metrics, rel=1e-14)


def test_evaluate_with_hits_gives_each_samples_top1_hit_in_loader_order():
    plain = train.evaluate(lookup_model(), lookup_loader())
    result = train.evaluate(lookup_model(), lookup_loader(), hits=True)
    # a sample is a top-1 hit iff its target's logit is the row's largest value, 3
    assert result["hits"].dtype == bool and result["hits"].tolist() == [value == 3.0 for value in TARGET_VALUES]
    assert {k: v for k, v in result.items() if k != "hits"} == plain and "hits" not in plain
    with pytest.raises(TypeError, match="hits must be True or False, got 1"):
        train.evaluate(lookup_model(), lookup_loader(), hits=1)


def test_evaluate_outputs_tallies_several_classifiers_in_one_pass_as_evaluate_does():
    first = lookup_model()
    second = Lookup(first.table.detach().flip(1))
    passes = []

    def batches():
        passes.append(1)
        yield from lookup_loader()

    class Once:
        def __iter__(self):
            return batches()

    both = nn.ModuleList([first, second])
    both.train()
    results = train.evaluate_outputs(both, lambda inputs: (first(inputs), second(inputs)), Once(), 2, hits=True)
    assert both.training and first.seen_training == [False] * 3 and first.seen_inference == [True] * 3
    assert len(passes) == 1
    for model, result in zip((first, second), results):
        expected = train.evaluate(model, lookup_loader(), hits=True)
        assert result["hits"].tolist() == expected.pop("hits").tolist()
        assert {k: v for k, v in result.items() if k != "hits"} == expected
    assert results[0]["top1"] != results[1]["top1"]


def test_evaluate_top5_with_fewer_than_five_classes_is_top_all():
    model = Lookup(torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]))
    dataset = TensorDataset(torch.arange(2), torch.tensor([0, 1]))
    metrics = train.evaluate(model, DataLoader(dataset, batch_size=2))
    assert (metrics["top1"], metrics["top5"], metrics["count"]) == (0.0, 1.0, 2)


def test_evaluate_runs_in_eval_and_inference_mode_and_restores_every_training_flag():
    model = lookup_model()
    wrapper = nn.Sequential(model, nn.Dropout())
    wrapper.train()
    wrapper[1].eval()  # a mixed state: restored module by module
    train.evaluate(wrapper, lookup_loader())
    assert model.seen_training == [False] * 3 and model.seen_inference == [True] * 3
    assert (wrapper.training, model.training, wrapper[1].training) == (True, True, False)


def test_evaluate_refuses_an_empty_loader_a_non_module_and_wrong_shapes():
    model = lookup_model()
    model.train()
    with pytest.raises(ValueError, match="loader yielded no samples"):
        train.evaluate(model, [])
    assert model.training
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        train.evaluate(lambda x: x, lookup_loader())
    with pytest.raises(ValueError, match=re.escape("got logits (3, 6) and targets (3, 1)")):
        train.evaluate(model, [(torch.arange(3), torch.zeros(3, 1, dtype=torch.long))])


@pytest.mark.parametrize("targets, error, message", [
    (torch.tensor([0, 6, 1]), ValueError, r"targets must be class indices in \[0, 6\) \(the model returns 6 logits\), "
                                          r"got 6"),
    (torch.tensor([0, -1, 1]), ValueError, r"targets must be class indices in \[0, 6\).*got -1"),
    (torch.tensor([0.0, 1.0, 2.0]), TypeError,
     r"targets must be a tensor of integer class indices, got torch\.float32"),
], ids=["too-large", "negative", "float"])
def test_evaluate_and_fine_tune_refuse_targets_that_are_not_class_indices(targets, error, message):
    """Regression: an out-of-range target raised torch's IndexError ('Target 6 is out of bounds')."""
    batch = [(torch.arange(3), targets)]
    with pytest.raises(error, match=message):
        train.evaluate(lookup_model(), batch)
    with pytest.raises(error, match=message):
        train.fine_tune(lookup_model(), batch, epochs=1, progress=False)


def test_integer_targets_of_any_integer_dtype_are_class_indices():
    expected = train.evaluate(lookup_model(), lookup_loader())
    narrow = [(inputs, targets.to(torch.int32)) for inputs, targets in lookup_loader()]
    assert train.evaluate(lookup_model(), narrow) == expected


# -- fine_tune: learning, determinism -----------------------------------------------------------------


def digits() -> tuple[TensorDataset, TensorDataset]:
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    inputs = torch.tensor(data.data / 16.0, dtype=torch.float32)
    targets = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    train_part, test_part = order[:1200], order[1200:]
    return TensorDataset(inputs[train_part], targets[train_part]), TensorDataset(inputs[test_part], targets[test_part])


def test_fine_tune_learns_digits_from_scratch():
    train_set, test_set = digits()
    model = mlp(features=64, classes=10, hidden=64, dropout=0.0)
    test_loader = loader(test_set, batch_size=256, shuffle=False)
    before = train.evaluate(model, test_loader)["top1"]
    history = train.fine_tune(model, loader(train_set, batch_size=32), epochs=3, lr=0.05, val_loader=test_loader,
                              progress=False)
    after = train.evaluate(model, test_loader)
    assert before < 0.3 and after["top1"] > 0.85
    assert history.records[-1].val == after and after["count"] == len(test_set)
    assert [record.epoch for record in history.records] == [1, 2, 3]
    assert history.records[-1].train_loss < history.records[0].train_loss
    assert json.loads(json.dumps(history.to_dict())) == history.to_dict()
    assert train.History.from_dict(history.to_dict()) == history


def test_fine_tune_with_the_same_seed_gives_the_same_weights():
    def run(seed: int) -> nn.Module:
        model = mlp()
        train.fine_tune(model, loader(blobs()), epochs=2, lr=0.1, seed=seed, progress=False)
        return model

    first = run(0)
    assert_same_weights(first, run(0))
    assert not torch.equal(first[0].weight, run(1)[0].weight)  # the seed drives dropout


def test_fine_tune_restores_the_training_flags():
    model = mlp()
    model.eval()
    train.fine_tune(model, loader(blobs()), epochs=1, progress=False, device="cpu")
    assert not any(module.training for module in model.modules())


def test_progress_bar_shows_the_running_metrics_and_is_optional(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    train.fine_tune(mlp(), loader(blobs()), epochs=1, progress=True)
    assert re.search(r"epoch 1/1.*loss=\d\.\d{4}, top1=\d\.\d{3}", capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # importing it now raises ImportError
    train.fine_tune(mlp(), loader(blobs()), epochs=1, progress=True)
    assert capsys.readouterr().err == ""


# -- fine_tune: checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize(("optimizer", "schedule", "extra"), [
    ("sgd", "cosine", {"nesterov": True}),
    ("adamw", "step", {"step_size": 3}),
])
def test_an_interrupted_run_resumed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, optimizer, schedule,
                                                                                    extra):
    data, val = blobs(), loader(blobs(seed=1), shuffle=False)
    kwargs = dict(epochs=4, lr=0.05, optimizer=optimizer, schedule=schedule, val_loader=val, progress=False, **extra)
    straight = mlp()
    expected = train.fine_tune(straight, loader(data), **kwargs)

    path = tmp_path / "run.pt"
    with pytest.raises(Interrupted):  # killed in the middle of the third epoch of four
        train.fine_tune(mlp(), InterruptedLoader(loader(data), epoch=3, batch=2), checkpoint=path, **kwargs)
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 2 and len(saved["history"]["records"]) == 2
    assert set(saved) == {"format", "fingerprint", "epoch", "model", "optimizer", "scheduler", "history", "rng"}
    assert list(tmp_path.iterdir()) == [path]

    resumed = mlp(seed=1)  # other initial weights: all of them come from the checkpoint
    history = train.fine_tune(resumed, loader(data), checkpoint=path, **kwargs)
    assert_same_weights(resumed, straight)
    assert without_seconds(history) == without_seconds(expected)

    class Untouchable:  # a complete run only loads its checkpoint
        generator = torch.Generator()

        def __iter__(self):
            raise AssertionError("a complete run must not train")

    done = mlp(seed=2)
    again = train.fine_tune(done, Untouchable(), checkpoint=path, **kwargs)
    assert_same_weights(done, straight)
    assert again == history


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": 0.2}, "lr=0.1 in the checkpoint, 0.2 now"),
    ({"epochs": 3}, "epochs=2 in the checkpoint, 3 now"),
    ({"optimizer": "adamw"}, "optimizer='sgd' in the checkpoint, 'adamw' now"),
    ({"schedule": "constant"}, "schedule='cosine' in the checkpoint, 'constant' now"),
    ({"model": mlp(hidden=8)}, r"the model's parameters \(names or shapes\) differ"),
    ({"train_loader": DataLoader(blobs(), batch_size=8)}, "loader_generator=True in the checkpoint, False now"),
])
def test_a_checkpoint_of_another_run_is_refused(tmp_path, change, message):
    path = tmp_path / "run.pt"
    arguments = {"model": mlp(), "train_loader": loader(blobs()), "epochs": 2, "lr": 0.1, "progress": False}
    train.fine_tune(**arguments, checkpoint=path)
    with pytest.raises(ValueError, match=f"was written by a different run \\({message}\\)"):
        train.fine_tune(**{**arguments, **change}, checkpoint=path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="is not a checkpoint written by tnlib_torch.fine_tune"):
        train.fine_tune(mlp(), loader(blobs()), epochs=1, checkpoint=path, progress=False)


class Poison:
    """Unpickling this calls ``call(*args)``."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("damage", ["empty", "truncated", "malicious"])
def test_a_damaged_or_malicious_checkpoint_is_refused_with_a_value_error_and_runs_nothing(tmp_path, damage):
    """Regression: an empty file raised EOFError, a truncated one OSError, a malicious one torch's UnpicklingError."""
    path, marker = tmp_path / "run.pt", tmp_path / "pwned"
    arguments = {"train_loader": loader(blobs()), "epochs": 2, "lr": 0.1, "progress": False, "checkpoint": path}
    train.fine_tune(mlp(), **{**arguments, "epochs": 1})
    content = path.read_bytes()
    if damage == "malicious":
        torch.save({"format": Poison(Path.touch, marker)}, path)
    else:
        path.write_bytes(b"" if damage == "empty" else content[: len(content) // 2])
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}' is not a torch checkpoint that loads with "
                                         r"weights_only=True"):
        train.fine_tune(mlp(), **arguments)
    assert not marker.exists() and path.read_bytes() == before


@pytest.mark.parametrize("change, message", [
    ({"fingerprint": None}, r"its 'fingerprint' entry is NoneType, not dict"),
    ({"model": [1, 2]}, r"its 'model' entry is list, not dict"),
    ({"history": {"records": []}}, r"its history does not hold one record per epoch done \(1\)"),
    ({"rng": {}}, r"the checkpoint .* is damaged: its states do not load \(KeyError"),
])
def test_a_checkpoint_with_missing_or_malformed_entries_is_refused(tmp_path, change, message):
    path = tmp_path / "run.pt"
    arguments = {"train_loader": loader(blobs()), "epochs": 1, "lr": 0.1, "progress": False, "checkpoint": path}
    train.fine_tune(mlp(), **arguments)
    torch.save({**torch.load(path, weights_only=True), **change}, path)
    with pytest.raises(ValueError, match=message):
        train.fine_tune(mlp(), **arguments)


def test_a_checkpoint_path_that_is_not_str_or_pathlike_is_refused():
    with pytest.raises(TypeError, match=r"checkpoint must be a path \(str or os\.PathLike\), got int"):
        train.fine_tune(mlp(), loader(blobs()), epochs=1, checkpoint=5, progress=False)


def test_a_diverging_run_stops_naming_the_epoch_and_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    """Regression: a run whose weights overflowed trained on with NaN losses and saved the NaN state."""
    path = tmp_path / "run.pt"
    dataset = blobs()
    large = TensorDataset(dataset.tensors[0] * 1000, dataset.tensors[1])  # gradients above 3.4: lr 1e38 overflows
    # epoch 1 at lr 1e-6; epoch 2 at lr 1e-6 * 1e44 = 1e38: its first update takes float32 weights to infinity
    arguments = {"epochs": 3, "lr": 1e-6, "schedule": "step", "step_size": 1, "gamma": 1e44, "progress": False,
                 "checkpoint": path}
    message = (r"fine_tune diverged in epoch 2, step 1 \(batch 1 of the epoch\): the update made parameters NaN or "
               r"infinite.*Lower lr \(now 1e\+38\)")
    with pytest.raises(FloatingPointError, match=message):
        train.fine_tune(mlp(), loader(large), **arguments)
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 1 and all(bool(torch.isfinite(value).all()) for value in saved["model"].values())


@pytest.mark.parametrize("poison, message", [
    (float("nan"), r"fine_tune diverged in epoch 1, step 2 \(batch 2 of the epoch\): the batch's loss is nan"),
    (float("inf"), r"fine_tune diverged in epoch 1, step 2 \(batch 2 of the epoch\): the batch's loss is"),
])
def test_a_non_finite_loss_stops_the_run_before_its_step_and_saves_nothing(tmp_path, poison, message):
    path = tmp_path / "run.pt"
    batches = [(inputs, targets) for inputs, targets in loader(blobs(n=24))]
    batches[1][0][0, 0] = poison
    model = mlp()
    with pytest.raises(FloatingPointError, match=message):
        train.fine_tune(model, batches, epochs=2, checkpoint=path, progress=False)
    assert not path.exists() and all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    real_save, calls = torch.save, []

    def save_failing_the_second_time(obj, file, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            file.write(b"half a checkpoint")
            raise OSError("disk full")
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_failing_the_second_time)
    with pytest.raises(OSError, match="disk full"):
        train.fine_tune(mlp(), loader(blobs()), epochs=2, checkpoint=path, progress=False)
    assert list(tmp_path.iterdir()) == [path]
    assert torch.load(path, weights_only=True)["epoch"] == 1


# -- schedules and arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(("schedule", "extra", "expected"), [
    ("cosine", {}, lambda e: 0.1 * (1 + math.cos(math.pi * e / 5)) / 2),
    ("step", {"step_size": 2, "gamma": 0.5}, lambda e: 0.1 * 0.5 ** (e // 2)),
    ("constant", {}, lambda e: 0.1),
])
def test_the_learning_rates_follow_the_schedule(schedule, extra, expected):
    dataset = blobs(n=6)
    history = train.fine_tune(mlp(), loader(dataset, batch_size=6), epochs=5, lr=0.1, schedule=schedule,
                              progress=False, **extra)
    assert [record.lr for record in history.records] == pytest.approx([expected(e) for e in range(5)], rel=1e-12)


@pytest.mark.parametrize(("change", "error", "message"), [
    ({"model": "resnet"}, TypeError, "model must be a torch.nn.Module, got str"),
    ({"epochs": 0}, ValueError, "epochs must be a positive integer \\(>= 1\\), got 0"),
    ({"epochs": 2.0}, TypeError, "epochs must be a positive integer, got 2.0"),
    ({"lr": 0}, ValueError, "lr must be a finite number > 0, got 0"),
    ({"lr": float("nan")}, ValueError, "lr must be a finite number > 0, got nan"),
    ({"lr": "0.1"}, TypeError, "lr must be a real number, got str"),
    ({"momentum": 1.0}, ValueError, re.escape("momentum must be a finite number in [0, 1), got 1.0")),
    ({"weight_decay": -1e-4}, ValueError, "weight_decay must be a finite number >= 0, got -0.0001"),
    ({"gamma": 0.0}, ValueError, "gamma must be a finite number > 0, got 0.0"),
    ({"optimizer": "adam"}, ValueError, "optimizer must be one of 'sgd', 'adamw'; got 'adam'"),
    ({"schedule": "linear"}, ValueError, "schedule must be one of 'cosine', 'step', 'constant'; got 'linear'"),
    ({"schedule": "step"}, ValueError, "schedule='step' needs step_size"),
    ({"schedule": "step", "step_size": 0}, ValueError, "step_size must be a positive integer \\(>= 1\\), got 0"),
    ({"step_size": 2}, ValueError, "step_size is used by schedule='step' only, got it with schedule='cosine'"),
    ({"nesterov": True, "optimizer": "adamw"}, ValueError, "nesterov=True needs optimizer='sgd' with momentum > 0"),
    ({"seed": -1}, ValueError, "seed must be a non-negative integer \\(>= 0\\), got -1"),
    ({"checkpoint": "/no/such/folder/run.pt"}, FileNotFoundError, "the folder of checkpoint '/no/such/folder/run.pt'"),
    ({"train_loader": []}, ValueError, "train_loader yielded no samples"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_are_refused_naming_the_argument(change, error, message):
    arguments = {"model": mlp(), "train_loader": loader(blobs()), "epochs": 1, "progress": False}
    with pytest.raises(error, match=message):
        train.fine_tune(**{**arguments, **change})


# -- docs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [train.evaluate, train.fine_tune], ids=lambda f: f.__name__)
def test_documented_signatures_match_the_code(function):
    page = (ROOT / "docs" / "torch_train.md").read_text()
    documented = re.findall(rf"^tnlib_torch\.zoo\.train\.{function.__name__}\((.*)\)\s*$", page, re.M)
    assert documented == [plain_signature(function)]
