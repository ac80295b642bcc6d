"""The networks of the compressibility study: architectures, parameter counts, checkpoints loaded safely."""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import tnlib_torch.zoo.models as models  # noqa: E402
from tests.core.test_api import plain_signature  # noqa: E402
from tests.shared_data import SHARED_DATA  # noqa: E402
from tnlib_torch.compression.accounting import count_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED = SHARED_DATA / "pretrained"
CIFAR_TEST = SHARED_DATA / "cifar10-jpeg" / "test"


def count_convs(model: nn.Module) -> int:
    return sum(isinstance(module, nn.Conv2d) for module in model.modules())


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a forward in eval mode exercises them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.running_mean, module.weight, module.bias):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_state_equal(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert current.keys() == state.keys()
    assert all(torch.equal(current[key], state[key].to(current[key].dtype)) for key in state)


# -- the published parameter counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "params", "convs"),
    [
        (lambda: models.cifar_resnet(20), 269_722, 19),
        (lambda: models.cifar_resnet(56), 853_018, 55),
        (models.resnet18_cifar, 11_173_962, 20),  # 17 convs on the main path, 3 projection shortcuts
        (models.resnet50_cifar, 23_520_842, 53),  # 49 + 4
    ],
    ids=["resnet20", "resnet56", "resnet18", "resnet50"],
)
def test_parameter_and_conv_counts_are_the_published_ones(factory, params, convs):
    model = factory()
    assert count_params(model) == params
    assert count_convs(model) == convs


def test_cifar_resnets_of_every_listed_depth_have_depth_minus_one_convs_and_option_a_shortcuts():
    for depth in models.CIFAR_RESNET_DEPTHS:
        model = models.cifar_resnet(depth)
        n = (depth - 2) // 6
        assert count_convs(model) == depth - 1  # all layers but the linear one
        assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [n, n, n]
        assert [module.conv1.stride for module in (model.layer1[0], model.layer2[0], model.layer3[0])] == [
            (1, 1), (2, 2), (2, 2)]
        shortcuts = [type(block.shortcut) for stage in (model.layer1, model.layer2, model.layer3) for block in stage]
        assert shortcuts.count(models.ZeroPadShortcut) == 2 and shortcuts.count(nn.Identity) == 3 * n - 2
    assert models.cifar_resnet(8).linear.in_features == 64  # any 6n + 2 >= 8 builds


# -- the option-A shortcut and the residual blocks, against formulas written out here -------------------------------


def test_zero_pad_shortcut_is_the_subsampled_input_between_planes_over_4_zero_channels():
    x = torch.randn(2, 16, 9, 8)
    out = models.ZeroPadShortcut(16, 32)(x)
    zeros = torch.zeros(2, 8, 5, 4)
    assert torch.equal(out, torch.cat([zeros, x[:, :, ::2, ::2], zeros], dim=1))
    uneven = models.ZeroPadShortcut(3, 8, stride=1)(x[:, :3])
    assert torch.equal(uneven, torch.cat([torch.zeros(2, 2, 9, 8), x[:, :3], torch.zeros(2, 3, 9, 8)], dim=1))


def reference_block(state: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, convs: int,
                    stride: int) -> torch.Tensor:
    """A residual block from its weights: conv-bn(-relu) ``convs`` times (stride on the first 3x3 conv), plus shortcut.

    The shortcut projects where the block has projection weights, else zero-pads where the shape changes (option A).
    """

    def bn(name: str, y: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(y, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
                            state[f"{name}.bias"])

    out = x
    strided = 1 if convs == 2 else 2  # conv1 of a basic block, the 3x3 conv2 of a bottleneck
    for k in range(1, convs + 1):
        weight = state[f"{prefix}conv{k}.weight"]
        step = stride if k == strided else 1
        out = bn(f"{prefix}bn{k}", F.conv2d(out, weight, stride=step, padding=weight.shape[-1] // 2))
        out = F.relu(out) if k < convs else out
    if f"{prefix}shortcut.0.weight" in state:
        x = bn(f"{prefix}shortcut.1", F.conv2d(x, state[f"{prefix}shortcut.0.weight"], stride=stride))
    elif out.shape != x.shape:
        pad = (out.shape[1] - x.shape[1]) // 2
        x = F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, pad, pad))
    return F.relu(out + x)


def reference_resnet(state: dict[str, torch.Tensor], x: torch.Tensor, blocks: list[int], convs: int) -> torch.Tensor:
    """Stem conv-bn-relu, the stages (stride 2 at the first block of every stage but the first), mean, linear."""
    out = F.relu(F.batch_norm(F.conv2d(x, state["conv1.weight"], padding=1), state["bn1.running_mean"],
                              state["bn1.running_var"], state["bn1.weight"], state["bn1.bias"]))
    for stage, count in enumerate(blocks, start=1):
        for b in range(count):
            out = reference_block(state, f"layer{stage}.{b}.", out, convs, 2 if stage > 1 and b == 0 else 1)
    return F.linear(out.mean(dim=(2, 3)), state["linear.weight"], state["linear.bias"])


def test_cifar_resnet_computes_the_network_of_he_et_al_written_out_from_its_weights():
    torch.manual_seed(0)
    model = randomize_batch_norms(models.cifar_resnet(20))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = reference_resnet(model.state_dict(), x, [3, 3, 3], convs=2)
        torch.testing.assert_close(model(x), expected)


def test_bottleneck_resnet_computes_projection_shortcuts_and_the_stride_on_the_3x3_conv():
    torch.manual_seed(0)
    model = randomize_batch_norms(models.ResNet(models.Bottleneck, (1, 2), (8, 16), num_classes=5))
    assert [type(block.shortcut) for stage in (model.layer1, model.layer2) for block in stage] == [
        nn.Sequential, nn.Sequential, nn.Identity]  # 8 -> 32 at stride 1 also projects
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = reference_resnet(model.state_dict(), x, [1, 2], convs=3)
        torch.testing.assert_close(model(x), expected)


# -- the vanilla CNN -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "pooled"), [((1, 8, 8), (2, 2)), ((3, 32, 32), (8, 8)), ((3, 11, 9), (2, 2))])
def test_vanilla_cnn_runs_on_digits_and_cifar_sized_images(shape, pooled):
    torch.manual_seed(0)
    model = models.vanilla_cnn(num_classes=7, in_channels=shape[0])
    before_pooling = []
    model.avgpool.register_forward_hook(lambda module, args, out: before_pooling.append(args[0].shape))
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    assert before_pooling == [(4, 128, *pooled)]


def test_vanilla_cnn_is_four_conv_bn_relu_blocks_with_max_pooling_after_blocks_2_and_4():
    widths = (5, 6, 7, 9)
    model = models.vanilla_cnn(num_classes=3, in_channels=2, widths=widths)
    assert isinstance(model, models.VanillaCNN) and count_convs(model) == 4
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding, c.bias) for c in convs] == [
        (2, 5, (3, 3), (1, 1), None), (5, 6, (3, 3), (1, 1), None), (6, 7, (3, 3), (1, 1), None),
        (7, 9, (3, 3), (1, 1), None)]
    kinds = [type(module).__name__ for module in model.children()]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["MaxPool2d"] + ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + [
        "MaxPool2d", "AdaptiveAvgPool2d", "Flatten", "Linear"]
    channels = (2, *widths)
    assert count_params(model) == 9 * sum(a * b for a, b in zip(channels, widths)) + 2 * sum(widths) + 9 * 3 + 3
    assert count_params(models.vanilla_cnn()) == 242_474


# -- argument checks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda: models.vanilla_cnn(num_classes=1), ValueError, "num_classes"),
        (lambda: models.vanilla_cnn(num_classes=2.0), TypeError, "num_classes"),
        (lambda: models.vanilla_cnn(in_channels=0), ValueError, "in_channels"),
        (lambda: models.vanilla_cnn(widths=(32, 64, 128)), ValueError, "widths"),
        (lambda: models.vanilla_cnn(widths=(32, 64, 0, 128)), ValueError, r"widths\[2\]"),
        (lambda: models.vanilla_cnn(widths=(32, 64, True, 128)), TypeError, r"widths\[2\]"),
        (lambda: models.vanilla_cnn(widths=32), TypeError, "widths"),
        (lambda: models.cifar_resnet(21), ValueError, "depth.*20, 32, 44, 56, 110"),
        (lambda: models.cifar_resnet(2), ValueError, "depth"),
        (lambda: models.cifar_resnet("20"), TypeError, "depth"),
        (lambda: models.cifar_resnet(20, num_classes=0), ValueError, "num_classes"),
        (lambda: models.resnet18_cifar(in_channels=-1), ValueError, "in_channels"),
        (lambda: models.ResNet(models.BasicBlock, (1, 1), (8,)), ValueError, "num_blocks"),
        (lambda: models.ResNet(nn.Conv2d, (1,), (8,)), TypeError, "block"),
        (lambda: models.ResNet(models.BasicBlock, (1,), (8,), shortcut="option_c"), ValueError, "shortcut"),
        (lambda: models.build_model("resnet19"), ValueError, "resnet19.*vanilla_cnn, resnet20, .*resnet50"),
        (lambda: models.build_model(20), TypeError, "name"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(call, error, names):
    with pytest.raises(error, match=names):
        call()


# -- the registry ----------------------------------------------------------------------------------------------------


def test_every_registered_model_builds_with_its_classes_and_channels():
    convs = {"vanilla_cnn": 4, "resnet20": 19, "resnet32": 31, "resnet44": 43, "resnet56": 55, "resnet110": 109,
             "resnet18": 20, "resnet50": 53}
    assert list(models.MODELS) == list(convs)
    with torch.no_grad(), torch.device("meta"):  # shapes only: no memory for ResNet-50's 23.5M weights, no init work
        x = torch.randn(1, 1, 8, 8)
        for name, count in convs.items():
            model = models.build_model(name, num_classes=3, in_channels=1).eval()
            assert (count_convs(model), model.conv1.in_channels, model(x).shape) == (count, 1, (1, 3)), name


# -- scripting and export ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_cifar_resnet_scripts_and_exports():
    torch.manual_seed(0)
    model = randomize_batch_norms(models.cifar_resnet(20))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), expected)


# -- load_checkpoint -------------------------------------------------------------------------------------------------


def trained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """``model`` with every parameter and buffer redrawn, so a loaded copy differs from a fresh one."""
    torch.manual_seed(seed)
    randomize_batch_norms(model, seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.1)
        for name, buffer in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.fill_(seed + 6)
    return model


@pytest.mark.parametrize("form", ["bare", "state_dict", "module_prefix", "data_parallel", "model_state_dict",
                                  "model"])
def test_load_checkpoint_round_trips_bare_wrapped_and_data_parallel_state_dicts(tmp_path, form):
    source = trained_like(models.cifar_resnet(8))
    state = source.state_dict()
    prefixed = OrderedDict((f"module.{key}", value) for key, value in state.items())
    saved = {"bare": state, "state_dict": {"state_dict": state, "best_prec1": 91.0},
             "module_prefix": {"state_dict": prefixed}, "data_parallel": nn.DataParallel(source).state_dict(),
             "model_state_dict": {"model_state_dict": state, "epoch": 3}, "model": {"model": prefixed}}[form]
    path = tmp_path / "checkpoint.pt"
    torch.save(saved, path)
    target = models.cifar_resnet(8).double()
    assert models.load_checkpoint(target, str(path)) is target
    assert_state_equal(target, state)
    assert target.conv1.weight.dtype == torch.float64
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x.double()).float(), source.eval()(x))


def test_a_checkpoint_without_num_batches_tracked_loads_as_pytorch_does(tmp_path):
    """Checkpoints from before PyTorch 0.4.1 (akamaster's) lack them; with version-2 metadata they are missing."""
    source = trained_like(models.cifar_resnet(8))
    old = {key: value for key, value in source.state_dict().items() if not key.endswith("num_batches_tracked")}
    torch.save({"state_dict": old}, tmp_path / "old.th")
    target = models.load_checkpoint(models.cifar_resnet(8), tmp_path / "old.th")
    assert all(torch.equal(target.state_dict()[key], value) for key, value in old.items())

    recent = source.state_dict()
    del recent["layer1.0.bn2.num_batches_tracked"]  # keeps its metadata: version 2 of BatchNorm
    torch.save(recent, tmp_path / "recent.pt")
    fresh = models.cifar_resnet(8)
    before = snapshot(fresh)
    with pytest.raises(ValueError, match=r"1 missing key .*: layer1\.0\.bn2\.num_batches_tracked$"):
        models.load_checkpoint(fresh, tmp_path / "recent.pt")
    assert_state_equal(fresh, before)
    with pytest.raises(RuntimeError, match="num_batches_tracked"):  # what torch itself says
        fresh.load_state_dict(recent)


def test_a_mismatched_checkpoint_lists_missing_unexpected_and_conflicting_keys_and_changes_nothing(tmp_path):
    state = trained_like(models.cifar_resnet(8, num_classes=100)).state_dict()
    del state["bn1.bias"]
    state["extra.weight"] = torch.ones(2)
    path = tmp_path / "other.pt"
    torch.save({"state_dict": state}, path)
    model = models.cifar_resnet(8)
    before = snapshot(model)
    with pytest.raises(ValueError) as raised:
        models.load_checkpoint(model, path)
    message = str(raised.value)
    assert str(path) in message and "ResNet" in message
    assert "1 missing key (in the model, not in the checkpoint): bn1.bias" in message
    assert "1 unexpected key (in the checkpoint, not in the model): extra.weight" in message
    assert "2 shape conflicts" in message
    assert "linear.weight (100, 64) vs (10, 64)" in message and "linear.bias (100,) vs (10,)" in message
    assert_state_equal(model, before)

    with pytest.raises(ValueError, match="2 shape conflicts") as raised:  # refused even when not strict
        models.load_checkpoint(model, path, strict=False)
    assert "missing" not in str(raised.value)
    assert_state_equal(model, before)

    del state["linear.weight"], state["linear.bias"]
    torch.save(state, path)
    models.load_checkpoint(model, path, strict=False)  # the rest loads
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.linear.weight, before["linear.weight"])


def test_a_checkpoint_of_another_architecture_is_listed_a_few_names_at_a_time_as_torch_counts_them(tmp_path):
    path = tmp_path / "resnet8.th"
    state = models.cifar_resnet(8).state_dict()
    torch.save({"state_dict": state}, path)
    model = models.vanilla_cnn()
    before = snapshot(model)
    with pytest.raises(ValueError) as raised:
        models.load_checkpoint(model, path)
    message = str(raised.value)
    # what torch's own load reports once the shape conflicts are out of the way (it modifies the model: a copy)
    conflicting = [key for key, value in model.state_dict().items() if key in state and state[key].shape != value.shape]
    kept = OrderedDict((key, value) for key, value in state.items() if key not in conflicting)
    kept._metadata = state._metadata
    report = models.vanilla_cnn().load_state_dict(kept, strict=False)
    missing = len([key for key in report.missing_keys if key not in conflicting])
    unexpected = len(report.unexpected_keys)
    assert (missing, unexpected, len(conflicting)) == (15, 36, 6)  # bn2-4's num_batches_tracked: filled in by torch
    assert f"{missing} missing keys (in the model, not in the checkpoint): conv2.weight, bn2.weight," in message
    assert f"{unexpected} unexpected keys" in message and f"... and {unexpected - 5} more" in message
    assert re.search(r"6 shape conflicts \(name, checkpoint shape vs model shape\): conv1\.weight \(16, 3, 3, 3\) vs "
                     r"\(32, 3, 3, 3\)", message)
    assert_state_equal(model, before)


class Poison:
    """Unpickling it opens (creates) a marker file: what an attacker's checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_poisoned_checkpoint_is_refused_without_running_its_code(tmp_path, writer):
    def write(path: Path, marker: Path) -> None:
        payload = {"state_dict": Poison(marker)}
        if writer == "torch.save":
            torch.save(payload, path)
        else:
            path.write_bytes(pickle.dumps(payload))

    path, marker = tmp_path / "poisoned.pt", tmp_path / "pwned"
    write(path, marker)
    with pytest.raises(ValueError, match=re.escape(str(path))) as raised:
        models.load_checkpoint(models.cifar_resnet(8), path)
    assert "weights_only" in str(raised.value)
    assert not marker.exists()
    # the control: an unsafe load of the same file does run the code
    control, control_marker = tmp_path / "control.pt", tmp_path / "control-ran"
    write(control, control_marker)
    if writer == "torch.save":
        torch.load(control, weights_only=False)["state_dict"].close()
    else:
        pickle.loads(control.read_bytes())["state_dict"].close()
    assert control_marker.exists()


def test_files_that_are_not_checkpoints_or_hold_no_state_dict_are_refused_naming_the_path(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=f"'{re.escape(str(text))}' is not a torch checkpoint"):
        models.load_checkpoint(models.cifar_resnet(8), text)
    tensors = tmp_path / "list.pt"
    torch.save([torch.ones(2)], tensors)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        models.load_checkpoint(models.cifar_resnet(8), tensors)
    missing = tmp_path / "absent.th"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        models.load_checkpoint(models.cifar_resnet(8), missing)
    with pytest.raises(TypeError, match="model"):
        models.load_checkpoint(OrderedDict(), text)


# -- the published checkpoints (shared data; skipped when absent) ---------------------------------------------------


def published(depth: int) -> Path:
    if not PRETRAINED.is_dir():
        pytest.skip(f"{PRETRAINED} is absent (shared data)")
    files = sorted(PRETRAINED.glob(f"resnet{depth}-*.th"))
    if not files:
        pytest.skip(f"no resnet{depth} checkpoint in {PRETRAINED}")
    return files[0]


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean, std = (torch.tensor(models.CIFAR_RESNET_NORMALIZATION[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (images - mean) / std


def test_the_published_resnet20_loads_every_stored_tensor_and_computes_the_network_of_its_weights():
    """The model after load_checkpoint holds exactly the file's tensors and computes He et al.'s network from them."""
    path = published(20)
    model = models.load_checkpoint(models.cifar_resnet(20), path).eval()
    stored = {key.removeprefix("module."): value
              for key, value in torch.load(path, weights_only=True, map_location="cpu")["state_dict"].items()}
    loaded = model.state_dict()
    assert len(stored) == 97 and count_params(model) == 269_722
    assert sorted(loaded.keys() - stored.keys()) == sorted(
        name for name in loaded if name.endswith("num_batches_tracked"))  # the file predates the counters
    assert [name for name, value in stored.items() if not torch.equal(loaded[name], value)] == []
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(normalize(x))
        expected = reference_resnet(stored, normalize(x), [3, 3, 3], convs=2)
    assert logits.shape == (8, 10)
    torch.testing.assert_close(logits, expected)
    assert logits.std() > 0.1  # trained weights, not a constant network


def test_the_published_resnet20_classifies_cifar_test_images():
    """200 test images (20 per class) of the shared JPEG copy: 81% over the whole copy, 80% on these."""
    image = pytest.importorskip("PIL.Image")
    path = published(20)
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"{CIFAR_TEST} is absent (shared data)")
    classes = sorted(folder.name for folder in CIFAR_TEST.iterdir())
    pixels, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((CIFAR_TEST / name).glob("*.jpg"))[:20]:
            pixels.append(np.asarray(image.open(file).convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255
    model = models.load_checkpoint(models.cifar_resnet(20), path).eval()
    with torch.no_grad():
        accuracy = (model(normalize(x)).argmax(dim=1) == torch.tensor(labels)).float().mean().item()
    assert accuracy >= 0.65


# -- docs ------------------------------------------------------------------------------------------------------------

DOCUMENTED = ["vanilla_cnn", "cifar_resnet", "resnet18_cifar", "resnet50_cifar", "build_model", "load_checkpoint",
              "VanillaCNN", "ResNet", "BasicBlock", "Bottleneck", "ZeroPadShortcut"]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_signatures_match_the_code(name):
    page = (ROOT / "docs" / "torch_models.md").read_text()
    documented = re.findall(rf"^tnlib_torch\.zoo\.models\.{name}\((.*)\)\s*$", page, re.M)
    assert documented == [plain_signature(getattr(models, name))]


def test_every_public_name_is_documented():
    page = (ROOT / "docs" / "torch_models.md").read_text()
    assert [name for name in models.__all__ if f"`{name}`" not in page] == []


@pytest.mark.parametrize("path", [5, None, b"model.pt", ["model.pt"]], ids=["int", "None", "bytes", "list"])
def test_load_checkpoint_refuses_a_path_that_is_not_str_or_pathlike(path):
    """Regression: load_checkpoint(model, 5) failed inside pathlib with a message that named no argument."""
    with pytest.raises(TypeError, match=r"path must be a path \(str or os\.PathLike\), got"):
        models.load_checkpoint(models.cifar_resnet(8), path)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_load_checkpoint_refuses_an_empty_or_truncated_file_with_a_value_error(tmp_path, damage):
    """Regression: a truncated file raised OSError (Errno 22) and an empty one EOFError."""
    path = tmp_path / "model.pt"
    torch.save(models.cifar_resnet(8).state_dict(), path)
    content = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": content[: len(content) // 2], "garbage": b"\x00" * 100}[damage])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}' is not a torch checkpoint that loads with "
                                         r"weights_only=True \(\w+ on a file of \d+ bytes; empty or truncated"):
        models.load_checkpoint(models.cifar_resnet(8), path)
