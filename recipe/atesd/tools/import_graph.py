"""The import graph between the project's layers, and the rule that every arrow points down.

``python -m recipe.atesd.tools.import_graph`` prints one line per (layer → layer) arrow with the number of
import statements behind it, then every forbidden import as ``file:line imports module``; exit status 1
if there is one. ``tests/test_layers.py`` runs the same check. Reads the sources with ``ast`` (module-level
imports and those inside functions); nothing is imported.

Layers, top to bottom (recipe/atesd/__init__.py): launch → entry points → glue → eval, tools, toy →
data, rewards → method; the CPU patches (verl_patches) import nothing of the recipe.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from recipe.atesd import REPO_ROOT

PKG = "recipe.atesd"
FRAMEWORKS = ("verl", "ray", "vllm", "hydra", "verl_patches")
ENTRY = tuple(f"{PKG}.{m}" for m in ("main_atesd", "main_grpo", "export", "evaluate_run", "table"))
GLUE, EVAL, TOOLS, METHOD = f"{PKG}.glue", f"{PKG}.eval", f"{PKG}.tools", f"{PKG}.method"
DATA, REWARDS, TOY = f"{PKG}.data", f"{PKG}.rewards", f"{PKG}.toy"

# layer (a folder under the repository root) -> module prefixes it must not import
FORBIDDEN = {
    "recipe/atesd/method": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, DATA, REWARDS, TOY, "launch"),
    "recipe/atesd/data": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, TOY, "launch"),
    "recipe/atesd/rewards": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, DATA, TOY, "launch"),
    "recipe/atesd/tools": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOY, "launch"),
    "recipe/atesd/toy": (*FRAMEWORKS, *ENTRY, GLUE, EVAL, TOOLS, "launch"),
    "recipe/atesd/eval": (*ENTRY, GLUE, TOOLS, TOY, "verl", "ray", "verl_patches", "launch"),
    "recipe/atesd/glue": (*ENTRY, EVAL, "launch"),
    "verl_patches": (PKG, "launch"),
}
LAYERS = {  # module prefix -> layer name, most specific first
    **dict.fromkeys(ENTRY, "entry"),
    GLUE: "glue",
    EVAL: "eval",
    TOOLS: "tools",
    TOY: "toy",
    DATA: "data",
    REWARDS: "rewards",
    METHOD: "method",
    "launch": "launch",
    "verl_patches": "verl_patches",
}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; ``from a import b`` also yields ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(layer: str, root: Path = REPO_ROOT) -> list[str]:
    """``file:line imports module (...)`` for every import of ``layer`` that is forbidden to it."""
    banned = FORBIDDEN[layer]
    found = []
    for path in sorted((root / layer).rglob("*.py")):
        for line, module in sorted(imported_modules(path)):
            hit = next((b for b in banned if module == b or module.startswith(b + ".")), None)
            if hit:
                found.append(f"{path.relative_to(root)}:{line} imports {module} ({hit} is not below {layer})")
    return sorted(found)


def layer_of(module: str) -> str | None:
    return next(
        (name for prefix, name in LAYERS.items() if module == prefix or module.startswith(prefix + ".")), None
    )


def arrows(root: Path = REPO_ROOT) -> Counter:
    """(from layer, to layer) -> number of import statements, over the recipe, launch and the patches."""
    counts: Counter = Counter()
    for path in [
        *root.glob("recipe/atesd/**/*.py"),
        *root.glob("launch/*.py"),
        *root.glob("verl_patches/*.py"),
    ]:
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        source = layer_of(module)
        seen = set()
        for line, imported in imported_modules(path):
            target = layer_of(imported)
            if source and target and target != source and (line, target) not in seen:
                seen.add((line, target))
                counts[(source, target)] += 1
    return counts


def main() -> int:
    for (source, target), n in sorted(arrows().items()):
        print(f"{source:>12} -> {target:<12} {n}")
    bad = [v for layer in FORBIDDEN for v in violations(layer)]
    for line in bad:
        print("FORBIDDEN", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
