"""The docs map every config key (docs/config.md) and cite files that exist (docstrings, docs)."""

import re

import pytest
import yaml
from conftest import REPO_ROOT

GROUPS = ("teacher_prompt", "teacher", "controller", "distill", "probe")


def section(text: str, group: str) -> str:
    start = text.index(f"## `{group}`")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_key_is_documented(group):
    keys = yaml.safe_load((REPO_ROOT / f"recipe/atesd/config/{group}/default.yaml").read_text())
    doc = section((REPO_ROOT / "docs/config.md").read_text(), group)
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert missing == [], f"docs/config.md, section {group}: undocumented keys {missing}"


def cited_paths():
    """Repository paths cited in docstrings/comments of the recipe and in the docs."""
    pattern = re.compile(
        r"(?<![\w/.])((?:recipe|docs|tests|benchmarks|launch|verl_patches|data)/[\w/.-]+\.(?:py|md|yaml))"
    )
    for path in [*REPO_ROOT.glob("recipe/**/*.py"), *REPO_ROOT.glob("docs/*.md"), REPO_ROOT / "README.md"]:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            yield path.relative_to(REPO_ROOT), match.group(1)


def test_cited_files_exist():
    missing = sorted({f"{src}: {cited}" for src, cited in cited_paths() if not (REPO_ROOT / cited).exists()})
    assert missing == []


def test_method_citations_point_into_the_repository():
    """Docstrings cite docs/method.md (in the repository), never a bare or outside method.md / verl-map.md."""
    bad = []
    for path in REPO_ROOT.glob("recipe/**/*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"(?<!docs/)method\.md|verl-map\.md", line):
                bad.append(f"{path.relative_to(REPO_ROOT)}:{n}")
    assert bad == []
