"""Models built of factorized layers survive TorchScript, ``torch.export`` and ONNX export with their numbers intact.

A small float32 CNN (a ``"same"``-padded conv, a stride-2 conv with reflect
padding, a grouped conv, a conv with an even kernel side, a flatten and a
linear head) has every conv replaced by a factorized conv at full rank, one
structure per model plus a model mixing them, and its linear head by an
:class:`~tnlib_torch.SVDLinear`.  For each path (``torch.jit.script``;
``torch.export.export`` with a static and a dynamic batch; ``torch.onnx.export``
through the dynamo and the TorchScript exporters, checked by ``onnx.checker``
and run by onnxruntime at another batch size) the exported model must give the
eager factorized model's output to float32 round-off, and so the dense model's
output within the (full-rank, exact) approximation.  The exported graphs must
hold every sub-conv of the chains: the layers are exported as chains, not
folded back.  The ONNX tests skip without ``onnx``/``onnxruntime`` (and
``onnxscript`` for the dynamo exporter): ``pip install -e ".[export]"``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import tnlib_torch as tt  # noqa: E402

# PyTorch's own notices, not ours: "same" padding of an even kernel side pads a copy of the input.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

CHANNELS, SIDE = 3, 8
EXACT = {"rtol": 1e-5, "atol": 1e-5}  # an exported model against the eager one: float32 round-off
APPROX = {"rtol": 1e-4, "atol": 1e-4}  # the factorized model against the dense one: full rank, so exact up to fits


def dense_model() -> nn.Sequential:
    """The float32 CNN that gets factorized: 3x8x8 -> 10 logits."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(CHANNELS, 8, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(8, 6, (2, 3), padding="same"), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 10),
    ).eval()


def full_rank_cp(conv: nn.Conv2d) -> tt.CPConv2d:
    """CP at the largest rank the layer allows, ``prod / max`` of the group kernel: ALS fits these kernels exactly."""
    shape = (conv.out_channels // conv.groups, *conv.weight.shape[1:])
    return tt.CPConv2d.from_conv(conv, math.prod(shape) // max(shape), seed=0)


Factorize = Callable[[nn.Conv2d], tt.FactorizedConv2d]
CP, TUCKER2 = full_rank_cp, tt.Tucker2Conv2d.from_conv


def svd(cut: str) -> Factorize:
    return lambda conv: tt.SVDConv2d.from_conv(conv, cut=cut)


def mps(order: str) -> Factorize:
    return lambda conv: tt.MPSConv2d.from_conv(conv, order=order)


#: The structure of each conv of the model, in order (cycled); all at full rank.
STRUCTURES: dict[str, list[Factorize]] = {
    "cp": [CP],
    "tucker2": [TUCKER2],
    "mps": [mps("ihwo")],
    "svd": [svd("oh|iw")],
    "mixed": [CP, mps("owhi"), TUCKER2, svd("o|ihw")],
}


def factorized(model: nn.Sequential, structures: list[Factorize]) -> nn.Sequential:
    """A copy of ``model`` with its convs factorized by ``structures`` (cycled) and its linears by SVDLinear."""
    model = copy.deepcopy(model)
    convs = [name for name, module in model.named_children() if isinstance(module, nn.Conv2d)]
    for k, name in enumerate(convs):
        setattr(model, name, structures[k % len(structures)](getattr(model, name)))
    for name, module in model.named_children():
        if isinstance(module, nn.Linear):
            setattr(model, name, tt.SVDLinear.from_linear(module))
    return model.eval()


def sub_convs(model: nn.Module) -> int:
    """How many sub-convs the factorized layers of ``model`` chain together."""
    return sum(len(module.layers) for module in model.modules() if isinstance(module, tt.FactorizedConv2d))


def batch(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, CHANNELS, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


class Case:
    """A dense model and its factorized copy, with the references an exported model is held to."""

    def __init__(self, structures: list[Factorize]) -> None:
        self.dense = dense_model()
        self.model = factorized(self.dense, structures)

    @torch.no_grad()
    def check(self, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
        """``run(x)`` equals the eager factorized model to round-off, and the dense model within the fit."""
        out = torch.as_tensor(run(x))
        torch.testing.assert_close(out, self.model(x), **EXACT)
        torch.testing.assert_close(out, self.dense(x), **APPROX)


@pytest.fixture(scope="module", params=list(STRUCTURES))
def case(request) -> Case:
    return Case(STRUCTURES[request.param])


def test_every_layer_is_factorized_and_the_model_reproduces_the_dense_one(case):
    kinds = [type(m) for m in case.model if not isinstance(m, (nn.ReLU, nn.Flatten))]
    assert all(issubclass(kind, (tt.FactorizedConv2d, tt.SVDLinear)) for kind in kinds), kinds
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in case.model.children())
    assert sub_convs(case.model) > 4  # a chain per conv, not one conv each
    case.check(case.model, batch(2))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torch_jit_script(case):
    scripted = torch.jit.script(case.model)
    assert isinstance(scripted, torch.jit.ScriptModule)
    case.check(scripted, batch(2))


def exported_convs(program: torch.export.ExportedProgram) -> int:
    return sum(node.op == "call_function" and "conv" in str(node.target) for node in program.graph.nodes)


def test_torch_export_static(case):
    x = batch(2)
    program = torch.export.export(case.model, (x,))
    assert exported_convs(program) == sub_convs(case.model)
    case.check(program.module(), x)


def test_torch_export_dynamic_batch(case):
    program = torch.export.export(case.model, (batch(2),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert exported_convs(program) == sub_convs(case.model)
    for n in (1, 5):
        case.check(program.module(), batch(n, seed=n))


#: ``torch.onnx.export`` arguments of each exporter, with a dynamic batch dimension.
ONNX_EXPORTERS = {
    "dynamo": {"dynamo": True, "external_data": False, "dynamic_shapes": ({0: torch.export.Dim("batch")},)},
    "torchscript": {"dynamo": False, "input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}},
}


#: What the exporters say about themselves (the TorchScript one is deprecated) and about torch internals.
ONNX_NOTICES = [
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning",
    "ignore:The feature will be removed:DeprecationWarning",
    "ignore:Constant folding - Only steps=1 can be constant folded:UserWarning",
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning",
]


@pytest.mark.filterwarnings(*ONNX_NOTICES)
@pytest.mark.parametrize("exporter", list(ONNX_EXPORTERS))
def test_onnx_export_runs_in_onnxruntime(case, exporter, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    options = ONNX_EXPORTERS[exporter]
    if options["dynamo"]:
        pytest.importorskip("onnxscript")
    path = tmp_path / "model.onnx"
    torch.onnx.export(case.model, (batch(2),), str(path), verbose=False, **options)
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    assert sum(node.op_type == "Conv" for node in graph.node) == sub_convs(case.model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = (i.name for i in session.get_inputs())
    case.check(lambda x: session.run(None, {name: x.numpy()})[0], batch(3, seed=3))  # another batch size
