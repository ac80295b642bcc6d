"""The torch adapter package installs beside the core and builds on it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest


def test_adapter_imports_the_core_and_shares_its_version():
    pytest.importorskip("torch")
    import tnlib
    import tnlib_torch

    assert tnlib_torch.__version__ == tnlib.__version__


def test_adapter_is_not_a_top_level_adapters_package(tmp_path):
    pytest.importorskip("torch")  # importing tnlib_torch imports torch
    code = "import importlib.util as u, tnlib_torch; print(u.find_spec('adapters'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "None"


ADAPTER = Path(__file__).resolve().parents[2] / "adapters" / "tnlib_torch"

#: The subpackages each subpackage may import (besides itself and the shared _checks).
ALLOWED = {
    "layers": set(),
    "compression": {"layers"},
    "zoo": set(),
    "study": {"layers", "compression", "zoo"},
}


def _imported_subpackages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    names += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    return {name.split(".")[1] for name in names if name.startswith("tnlib_torch.")}


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_subpackage_imports_point_one_way(subpackage):
    modules = sorted((ADAPTER / subpackage).glob("*.py"))
    assert modules
    for module in modules:
        imported = _imported_subpackages(module) - {subpackage, "_checks"}
        assert imported <= ALLOWED[subpackage], f"{module.name} imports {imported - ALLOWED[subpackage]}"


def test_the_zoo_needs_none_of_tnlibs_math():
    for module in sorted((ADAPTER / "zoo").glob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        core = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        core |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        used = {name for name in core if name == "tnlib" or name.startswith("tnlib.")}
        assert used <= {"tnlib._files", "tnlib._validation"}, module


def test_the_module_paths_of_0_1_still_import_the_same_modules():
    pytest.importorskip("torch")
    import importlib

    import tnlib_torch

    moved = {"models": "zoo.models", "data": "zoo.data", "train": "zoo.train", "surgery": "compression.surgery",
             "policy": "compression.allocation"}
    for old, new in moved.items():
        assert importlib.import_module(f"tnlib_torch.{old}") is importlib.import_module(f"tnlib_torch.{new}")
    from tnlib_torch.models import cifar_resnet

    from tnlib_torch.layers import Tucker2Conv2d

    assert Tucker2Conv2d is tnlib_torch.Tucker2Conv2d and cifar_resnet is tnlib_torch.cifar_resnet
