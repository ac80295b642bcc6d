"""The torch adapter package installs beside the core and builds on it."""

import subprocess
import sys

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
