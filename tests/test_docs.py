"""The documentation states what the code is: every public name, module, link and extra it
cites exists, and every public name and module is documented (doc drift is a defect)."""

import re
from pathlib import Path

import pytest

import tnlib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _api_index() -> str:
    """The index table of docs/api.md: the lines before its first section."""
    return _text(DOCS / "api.md").split("\n## ", 1)[0]


@pytest.mark.parametrize("name", tnlib.__all__)
def test_every_core_name_is_in_the_api_index(name):
    assert re.search(rf"`{re.escape(name)}`", _api_index()), f"{name} is missing from docs/api.md's index"


def test_every_adapter_name_is_documented():
    tnlib_torch = pytest.importorskip("tnlib_torch")
    pages = "".join(_text(p) for p in DOCS.glob("*.md"))
    missing = [n for n in tnlib_torch.__all__ if not re.search(rf"\b{re.escape(n)}\b", pages)]
    assert not missing, f"public names of tnlib_torch documented nowhere in docs/: {missing}"


def _package_modules() -> list[Path]:
    found = [*(ROOT / "tnlib").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]
    return sorted(p for p in found if p.name != "__init__.py")


@pytest.mark.parametrize("module", _package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_is_in_the_architecture_map(module):
    assert f"{module.name}`" in _text(DOCS / "architecture.md"), f"{module.name} is not in docs/architecture.md"


def test_every_module_path_the_architecture_names_exists():
    cited = re.findall(r"`((?:tnlib|adapters)/[\w/]+\.py)`", _text(DOCS / "architecture.md"))
    assert cited
    assert [path for path in cited if not (ROOT / path).is_file()] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    targets = re.findall(r"\]\(([\w./-]+\.(?:md|py|toml|png|svg|json))(?:#[^)]*)?\)", _text(page))
    assert [t for t in targets if not (page.parent / t).exists()] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_cites_a_file_outside_the_repository(page):
    assert "DESIGN.md" not in _text(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_announces_as_future_what_exists(page):
    stale = re.findall(r"(?i)(still to come|arrives in a later release|empty placeholder|empty until)", _text(page))
    assert stale == []


def test_the_adapter_docstring_announces_nothing_that_exists():
    source = _text(ROOT / "adapters" / "tnlib_torch" / "__init__.py")
    assert not re.search(r"(?i)later release|still to come", source)


def test_the_extras_readme_names_exist():
    tomllib = pytest.importorskip("tomllib")
    extras = set(tomllib.loads(_text(ROOT / "pyproject.toml"))["project"]["optional-dependencies"])
    readme = _text(ROOT / "README.md")
    named = set(re.findall(r'"\.\[([\w,]+)\]"', readme))
    assert named, "README installs no extra"
    cited = {e for group in named for e in group.split(",")}
    others = readme.split("Other extras:", 1)[1].split("\n\n", 1)[0]
    cited |= set(re.findall(r"`(\w+)`", others))
    assert cited <= extras, cited - extras


def test_readme_does_not_promise_the_cpu_build_everywhere():
    readme = _text(ROOT / "README.md")
    assert not re.search(r"pins the CPU build", readme)
    assert "download.pytorch.org/whl/cpu" in readme


def test_gitignore_covers_the_default_study_folder():
    assert "tnlib-study/" in _text(ROOT / ".gitignore").split()
