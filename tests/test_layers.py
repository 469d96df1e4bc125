"""The package layout is the architecture: every import points down (recipe/atesd/__init__.py).

Reads every import statement (module level and inside functions) of every source file with ``ast`` and
fails naming file:line when a layer imports one it must not: the method core imports no framework and no
other layer; data, rewards and tools import no glue, evaluation or framework; evaluation imports no glue;
the glue imports no evaluation or entry point; the CPU patches import nothing of the recipe.
"""

import ast

import pytest
from conftest import REPO_ROOT

PKG = "recipe.atesd"
FRAMEWORKS = ("verl", "ray", "vllm", "hydra", "verl_patches")
ENTRY = (f"{PKG}.main_atesd", f"{PKG}.main_grpo")
GLUE, EVAL, TOOLS, METHOD = f"{PKG}.glue", f"{PKG}.eval", f"{PKG}.tools", f"{PKG}.method"
DATA, REWARDS, TOY = f"{PKG}.data", f"{PKG}.rewards", f"{PKG}.toy"

# layer (a folder under the repository root) -> module prefixes it must not import
FORBIDDEN = {
    "recipe/atesd/method": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, DATA, REWARDS, TOY, "launch"),
    "recipe/atesd/data": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, TOY, "launch"),
    "recipe/atesd/rewards": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, METHOD, DATA, TOY, "launch"),
    "recipe/atesd/tools": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOY, "launch"),
    "recipe/atesd/toy": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, "launch"),
    "recipe/atesd/eval": (*ENTRY, GLUE, TOOLS, TOY, "verl", "ray", "verl_patches", "launch"),
    "recipe/atesd/glue": (*ENTRY, EVAL, "launch"),
    "verl_patches": (PKG, "launch"),
}


def imported_modules(path):
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # "from recipe.atesd import glue" imports the package recipe.atesd.glue
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(layer: str) -> list[str]:
    banned = FORBIDDEN[layer]
    found = []
    for path in sorted((REPO_ROOT / layer).rglob("*.py")):
        for line, module in sorted(imported_modules(path)):
            hit = next((b for b in banned if module == b or module.startswith(b + ".")), None)
            if hit:
                found.append(
                    f"{path.relative_to(REPO_ROOT)}:{line} imports {module} ({hit} is not below {layer})"
                )
    return sorted(found)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer):
    assert (REPO_ROOT / layer).is_dir()
    assert violations(layer) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The rule fires: a method file importing verl (inside a function) and the glue is reported twice."""
    import conftest

    fake = tmp_path / "recipe" / "atesd" / "method"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    import verl.utils\n\nfrom recipe.atesd.glue import worker\n")
    monkeypatch.setattr(conftest, "REPO_ROOT", tmp_path)
    monkeypatch.setitem(globals(), "REPO_ROOT", tmp_path)
    found = violations("recipe/atesd/method")
    assert [f.split(" (")[0] for f in found] == [
        "recipe/atesd/method/bad.py:2 imports verl.utils",
        "recipe/atesd/method/bad.py:4 imports recipe.atesd.glue",
        "recipe/atesd/method/bad.py:4 imports recipe.atesd.glue.worker",
    ]
