"""The package layout is the architecture: every import points down (recipe/atesd/__init__.py).

The rule and the reader live in recipe/atesd/tools/import_graph.py (``python -m
recipe.atesd.tools.import_graph`` prints the layer graph); this test fails naming file:line.
"""

import pytest
from conftest import REPO_ROOT

from recipe.atesd.tools.import_graph import FORBIDDEN, arrows, violations


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer):
    assert (REPO_ROOT / layer).is_dir()
    assert violations(layer) == []


def test_the_check_sees_a_violation(tmp_path):
    """The rule fires: a method file importing verl (inside a function) and the glue is reported."""
    fake = tmp_path / "recipe" / "atesd" / "method"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    import verl.utils\n\nfrom recipe.atesd.glue import worker\n")
    found = violations("recipe/atesd/method", root=tmp_path)
    assert [f.split(" (")[0] for f in found] == [
        "recipe/atesd/method/bad.py:2 imports verl.utils",
        "recipe/atesd/method/bad.py:4 imports recipe.atesd.glue",
        "recipe/atesd/method/bad.py:4 imports recipe.atesd.glue.worker",
    ]


def test_the_layer_graph_has_the_expected_arrows():
    """The glue uses the core; the entry points use the glue; launch uses the entry points' glue; nothing
    points back up (method, data and rewards import no other recipe layer above them)."""
    graph = arrows()
    assert {
        ("glue", "method"),
        ("entry", "glue"),
        ("eval", "method"),
        ("data", "method"),
        ("rewards", "method"),
    } <= set(graph)
    assert not [edge for edge in graph if edge[0] == "method"]
    assert [edge for edge in graph if edge[1] in ("entry", "launch")] == [("launch", "entry")]
