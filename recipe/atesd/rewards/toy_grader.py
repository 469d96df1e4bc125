r"""Toy-world reward (``recipe/atesd/toy/task.py``): exact match of the last ``\boxed{}`` against the answer.

verl custom reward (``reward.custom_reward_function.path=<this file>``, ``name=compute_score``)::

    compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float
        1.0 if toy_answer(solution_str) == ground_truth.strip() else 0.0

``toy_answer``: the content, stripped, of the LAST ``\boxed{...}`` (nested braces matched;
``recipe/atesd/method/answer.py``, the parser of every answer in the recipe), stricter than the math reward:
``\fbox`` and a bare ``\boxed 7`` are no answer, as are an unclosed last box and an empty one (0.0). verl
loads this file by path: the repository root must be importable there (it is in every launch: ``PYTHONPATH``
of ``recipe/atesd/glue/platform.py`` and ``launch/runtime_env.yaml``, and Ray hands its workers the driver's
working directory).
"""

from recipe.atesd.method.answer import last_box


def toy_answer(text: str) -> str | None:
    r"""The toy world's answer: the last ``\boxed{...}``'s content; None when absent, unclosed or empty."""
    return last_box(text, commands=("boxed",), bare=False).answer


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """verl reward signature; ``ValueError`` naming the field when solution_str / ground_truth is not a string."""
    if not isinstance(solution_str, str):
        raise ValueError(f"solution_str must be str, got {type(solution_str).__name__}")
    if not isinstance(ground_truth, str):
        raise ValueError(f"ground_truth must be str, got {type(ground_truth).__name__}")
    pred = toy_answer(solution_str)
    return float(pred is not None and pred == ground_truth.strip())
