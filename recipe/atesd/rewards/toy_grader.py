r"""Toy-world reward (``recipe/atesd/toy/task.py``): exact match of the last ``\boxed{}`` against the answer.

verl custom reward (``reward.custom_reward_function.path=<this file>``, ``name=compute_score``)::

    compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float
        1.0 if last_boxed(solution_str) == ground_truth.strip() else 0.0

``last_boxed``: the content, stripped, of the LAST ``\boxed{...}`` (nested braces matched); no box, an
unclosed last box or an empty one is no answer (0.0). Stdlib only and self-contained: verl loads this file
by path, so it imports nothing from the recipe.
"""

_BOX = "\\boxed"


def last_boxed(text: str) -> str | None:
    r"""Stripped content of the last ``\boxed{...}`` in ``text``; None when absent, unclosed or empty."""
    start = text.rfind(_BOX)
    if start < 0:
        return None
    rest = text[start + len(_BOX) :].lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for end, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:end].strip() or None
    return None


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """verl reward signature; ``ValueError`` naming the field when solution_str / ground_truth is not a string."""
    if not isinstance(solution_str, str):
        raise ValueError(f"solution_str must be str, got {type(solution_str).__name__}")
    if not isinstance(ground_truth, str):
        raise ValueError(f"ground_truth must be str, got {type(ground_truth).__name__}")
    pred = last_boxed(solution_str)
    return float(pred is not None and pred == ground_truth.strip())
