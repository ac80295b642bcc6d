"""The public surface: one word per concept, one default per option, and a torch-free core."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tnlib

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_FUNCTIONS = {name: obj for name in tnlib.__all__ if inspect.isfunction(obj := getattr(tnlib, name))}

#: Synonyms the field uses for our concepts; none may appear as a parameter name.
SYNONYMS = {"chi", "bond_dim", "max_bond_dim", "eps", "tol_rel", "rtol", "threshold", "truncation_error",
            "n_components", "k", "rank_max", "random_state", "rng", "backend", "axes_labels", "indices"}


def test_no_synonyms_in_public_signatures():
    for name, fn in PUBLIC_FUNCTIONS.items():
        assert not SYNONYMS & set(inspect.signature(fn).parameters), name


def test_shared_keywords_have_one_default_everywhere():
    defaults = {}
    for name, fn in PUBLIC_FUNCTIONS.items():
        for param in inspect.signature(fn).parameters.values():
            if param.default is not inspect.Parameter.empty:
                defaults.setdefault(param.name, {})[name] = param.default
    for keyword in ("max_rank", "rel_error", "cutoff", "seed", "labels"):
        assert len(set(map(repr, defaults[keyword].values()))) == 1, (keyword, defaults[keyword])
    # `method` picks the SVD solver (default "auto") everywhere but in the decompositions whose
    # `method` names their algorithm (tucker: "sthosvd", as in DESIGN.md; cp and cp_rank: "als")
    algorithms = {"tucker": "sthosvd", "cp": "als", "cp_rank": "als", "cp_ladder": "als"}
    assert {name: value for name, value in defaults["method"].items() if name not in algorithms} == {
        name: "auto" for name in defaults["method"] if name not in algorithms
    }
    assert all(defaults["method"][name] == value for name, value in algorithms.items())


def adapter_callables() -> dict:
    """The public callables of tnlib_torch: its functions and the ``from_*`` constructors of its layers."""
    tt = pytest.importorskip("tnlib_torch")
    found = {}
    for name in tt.__all__:
        obj = getattr(tt, name)
        if inspect.isfunction(obj):
            found[name] = obj
        elif inspect.isclass(obj):
            found.update({f"{name}.{attr}": getattr(obj, attr) for attr in ("from_conv", "from_linear")
                          if attr in vars(obj)})
    return found


#: The zoo's data and training seeds (data splits, shuffles, initialization), 0 so that a run repeats by default;
#: every fit and truncation seed defaults to None, as in the core.
DATA_SEEDS = {"digits": 0, "loader": 0, "fine_tune": 0}
#: The adapter's ``method`` that names an algorithm (or the compression method) rather than the SVD solver.
ADAPTER_ALGORITHMS = {"compress": "tucker2", "compress_": "tucker2", "CPConv2d.from_conv": "als",
                      "Tucker2Conv2d.from_conv": "sthosvd"}


def test_no_synonyms_in_the_adapters_public_signatures():
    for name, fn in adapter_callables().items():
        assert not SYNONYMS & set(inspect.signature(fn).parameters), name


def test_the_adapter_shares_the_cores_defaults():
    defaults = {}
    for source in (PUBLIC_FUNCTIONS, adapter_callables()):
        for name, fn in source.items():
            for param in inspect.signature(fn).parameters.values():
                if param.default is not inspect.Parameter.empty:
                    defaults.setdefault(param.name, {})[name] = param.default
    assert {name: value for name, value in defaults["seed"].items() if value is not None} == DATA_SEEDS
    for keyword in ("max_rank", "max_bond", "ranks", "rel_error", "cutoff"):
        assert set(defaults[keyword].values()) == {None}, (keyword, defaults[keyword])
    adapter_methods = {name: value for name, value in defaults["method"].items() if name not in PUBLIC_FUNCTIONS}
    assert {name: value for name, value in adapter_methods.items() if value != "auto"} == ADAPTER_ALGORITHMS


#: The adapter's truncating callables, with the name of their size cap (as the core spells it).
ADAPTER_TRUNCATING = {"truncate_conv_": "max_rank", "truncate_model_": "max_rank", "SVDConv2d.from_conv": "max_rank",
                      "SVDLinear.from_linear": "max_rank", "MPSConv2d.from_conv": "max_bond",
                      "Tucker2Conv2d.from_conv": "ranks"}


@pytest.mark.parametrize("name, cap", sorted(ADAPTER_TRUNCATING.items()))
def test_the_adapters_truncating_callables_spell_the_vocabulary_alike(name, cap):
    params = list(inspect.signature(adapter_callables()[name]).parameters.values())
    names = [p.name for p in params]
    start = names.index(cap)
    assert names[start:start + 3] == [cap, "rel_error", "cutoff"]
    assert all(p.default is None for p in params[start:start + 3])


def test_compress_takes_the_whole_vocabulary_and_seed():
    params = inspect.signature(adapter_callables()["compress_"]).parameters
    assert {"max_rank", "max_bond", "ranks", "rank", "rel_error", "cutoff", "seed"} <= set(params)


def test_truncating_functions_take_the_whole_vocabulary():
    for fn in (tnlib.truncated_svd, tnlib.truncate):
        assert {"max_rank", "rel_error", "cutoff", "method", "seed"} <= set(inspect.signature(fn).parameters)


#: Every truncating function, with the name of its size cap (``max_rank``; a bond or mode count for mps and tucker).
TRUNCATING = {"truncated_svd": "max_rank", "truncate": "max_rank", "mps": "max_bond", "tucker": "ranks"}


@pytest.mark.parametrize("name, cap", sorted(TRUNCATING.items()))
def test_truncating_functions_spell_the_vocabulary_alike(name, cap):
    """The cap, ``rel_error`` and ``cutoff`` side by side and in that order, all three off by default."""
    params = list(inspect.signature(PUBLIC_FUNCTIONS[name]).parameters.values())
    names = [p.name for p in params]
    start = names.index(cap)
    assert names[start:start + 3] == [cap, "rel_error", "cutoff"]
    assert all(p.default is None for p in params[start:start + 3])


def test_every_public_name_is_documented():
    api = (ROOT / "docs" / "api.md").read_text()
    for name in tnlib.__all__:
        assert re.search(rf"\b{name}\b", api), f"{name} missing from docs/api.md"


def plain_signature(fn) -> str:
    """The signature as docs/api.md writes it: names, defaults and the keyword-only marker."""
    parts, star = [], False
    for param in inspect.signature(fn).parameters.values():
        if param.kind is param.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        parts.append(param.name if param.default is param.empty else f"{param.name}={param.default!r}")
    return ", ".join(parts)


@pytest.mark.parametrize("name", sorted(PUBLIC_FUNCTIONS))
def test_documented_signatures_match_the_code(name):
    api = (ROOT / "docs" / "api.md").read_text()
    documented = re.findall(rf"^tnlib\.{name}\((.*)\)\s*$", api, re.M)
    assert documented == [plain_signature(PUBLIC_FUNCTIONS[name])]


def test_the_core_never_imports_torch_or_the_adapter():
    code = "import sys, numpy, tnlib; tnlib.spectra(numpy.ones((2, 2, 2, 2))); " \
           "print(sorted(m for m in ('torch', 'cupy', 'tnlib_torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    for path in (ROOT / "tnlib").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^(import|from)\s+(torch|cupy|tnlib_torch)\b", text, re.M), path
        if path.name != "_backend.py":  # the one home of backend-specific fast paths, imported lazily
            assert not re.search(r"^\s+(import|from)\s+(torch|cupy|tnlib_torch)\b", text, re.M), path
