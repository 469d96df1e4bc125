"""The recipe's one answer parser (recipe/atesd/method/answer.py): the default rules (the teacher's answer
statement, data preparation and the math reward), the math reward's caps, and the toy reward's stricter
variant — each difference between the callers is a parameter tested here."""

import pytest

from recipe.atesd.method.answer import BoxedAnswer, last_box
from recipe.atesd.rewards import math_grader as mg
from recipe.atesd.rewards.toy_grader import compute_score as toy_score
from recipe.atesd.rewards.toy_grader import toy_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("a \\boxed{1} b \\boxed{\\frac{1}{2}} c", "\\frac{1}{2}"),  # the LAST box
        ("\\boxed{\\boxed{7}}", "7"),  # nested braces matched
        ("first \\boxed{1}, then \\fbox{ 22 }", "22"),  # \fbox too, content stripped
        ("x = \\boxed 5.", "5"),  # bare: trailing . , ; dropped
        ("$\\boxed 12$", "12"),  # bare: stops at $
        ("\\boxed 5}", "5"),  # bare: stops at a brace
        ("x = \\boxed {12}", "12"),  # space before the brace
        ("\\boxed{3} and \\fboxsep=2pt", "3"),  # \fboxsep is no box: the last real box counts
        ("\\boxed{3} \\boxeds", "3"),
        ("no box here", None),
        ("\\boxed{unbalanced", None),
        ("\\boxed{1} then \\boxed{2", None),  # an unclosed LAST box is no answer, not the earlier one
        ("\\boxed{}", None),
        ("\\boxed{1} then \\boxed{  }", None),  # an empty last box is no answer
        ("\\boxed .", None),  # bare punctuation only
        ("x\\boxed", None),
    ],
)
def test_default_rules(text, expected):
    found = last_box(text)
    assert found == BoxedAnswer(expected, "ok" if expected is not None else "no_answer")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{" + "{" * 31 + "1" + "}" * 32, ("{" * 31 + "1" + "}" * 31, "ok")),  # depth 32
        ("\\boxed{" + "{" * 32 + "1" + "}" * 33, (None, "oversize")),  # depth 33 > max_depth
        ("\\boxed{" + "9" * 1000 + "}", ("9" * 1000, "ok")),
        ("\\boxed{" + "9" * 1001 + "}", (None, "oversize")),
        ("\\boxed{" + "9" * 2000, (None, "oversize")),  # an unclosed long box is cut at the cap, not scanned
        ("\\boxed " + "9" * 1001, (None, "oversize")),
        ("y" * 1_000_000 + "\\boxed{70}", ("70", "ok")),
    ],
)
def test_caps_of_the_math_reward(text, expected):
    assert last_box(text, max_chars=1000, max_depth=32) == expected
    uncapped = last_box(text)
    assert uncapped.status in ("ok", "no_answer")  # without caps nothing is oversize


@pytest.mark.parametrize(
    ("text", "default", "toy"),
    [
        ("\\boxed{7}", "7", "7"),
        ("\\fbox{7}", "7", None),  # the toy reward reads \boxed only
        ("\\boxed{7} then \\fbox{3}", "3", "7"),
        ("\\boxed 7", "7", None),  # and no bare \boxed 7
        ("\\boxed{ 7 }", "7", "7"),
    ],
)
def test_the_toy_reward_is_stricter(text, default, toy):
    assert last_box(text).answer == default
    assert last_box(text, commands=("boxed",), bare=False).answer == toy_answer(text) == toy
    assert toy_score("toy_sum", text, "7") == float(toy == "7")


def test_the_math_reward_takes_the_parsers_answer_and_its_config_caps():
    """``grade`` reads the box with the parser and ``max_answer_chars``; a box without an answer is counted
    and never reaches a grading subprocess."""
    mg.reset_grader_stats()
    cfg = mg.GraderConfig(max_answer_chars=10)
    cases = [
        ("\\boxed{1} then \\boxed{2", "no_answer"),
        ("\\boxed{}", "no_answer"),
        ("\\boxed{" + "9" * 11 + "}", "oversize"),
    ]
    for text, status in cases:
        result = mg.grade(text, "70", cfg)
        assert (result.correct, result.answer, result.status) == (False, None, status)
    assert mg.grader_stats() == {"calls": 3, "ok": 0, "no_answer": 2, "oversize": 1, "timeout": 0, "error": 0}


def test_non_string_text_names_it():
    with pytest.raises(ValueError, match="text must be a string, got NoneType"):
        last_box(None)
