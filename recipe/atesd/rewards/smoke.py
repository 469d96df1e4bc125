"""SMOKE-TEST-ONLY reward: scores the *form* of a response, not its correctness.

A randomly initialised model never answers a math problem, so a correctness reward is 0 for every
sample and GRPO's group-normalised advantages, loss and gradients are all 0. This reward varies
with random text (the Qwen3 vocabulary mixes English sub-words, other scripts, digits, punctuation and
byte tokens), so the update moves weights in integration tests:

    r = fraction of the non-whitespace characters of ``solution_str`` that are ASCII letters   (in [0, 1])

Empty or all-whitespace responses score 0. Never use it for a real run.
"""

import string

_ASCII_LETTERS = frozenset(string.ascii_letters)


def ascii_letter_fraction(text: str) -> float:
    """``#ASCII letters / #non-whitespace chars`` of ``text``; 0.0 when there is no non-whitespace char."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(c in _ASCII_LETTERS for c in chars) / len(chars)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """verl reward signature; ``ValueError`` naming the field when ``solution_str`` is not a string."""
    if not isinstance(solution_str, str):
        raise ValueError(f"solution_str must be str, got {type(solution_str).__name__}")
    return ascii_letter_fraction(solution_str)
