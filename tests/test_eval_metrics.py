"""Evaluation metrics on hand-computed cases; generations store resume; summary assembly."""

import json
import math
from types import SimpleNamespace

import pytest

from recipe.atesd.eval.evaluate import sample_seed
from recipe.atesd.eval.metrics import (
    average_at_n,
    k_values,
    length_stats,
    maj_at_k,
    majority_correct,
    mean_pass_at_k,
    pass_at_k,
    vote_key,
)
from recipe.atesd.eval.store import GenerationStore, check_run_config
from recipe.atesd.eval.summary import benchmark_summary, render_markdown, summarize


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (12, 5, 1, 5 / 12),  # pass@1 = c/n
        (4, 3, 2, 1.0),  # n - c < k
        (4, 0, 4, 0.0),
        (8, 2, 4, 1 - 15 / 70),  # 1 - C(6,4)/C(8,4)
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_bad_counts():
    with pytest.raises(ValueError, match="c=5"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k=5"):
        pass_at_k(4, 1, 5)


def test_mean_pass_at_k_averages_problems():
    correct = [[1, 0, 0, 0], [1, 1, 0, 0]]  # pass@2: 1 - 3/6 = .5 and 1 - 1/6
    assert mean_pass_at_k(correct, 2) == pytest.approx((0.5 + 5 / 6) / 2)


def test_average_at_n_and_std_over_sample_indices():
    correct = [[1, 0, 1], [1, 1, 0]]  # per-index accuracy [1, .5, .5]
    mean, std = average_at_n(correct)
    assert mean == pytest.approx(2 / 3)
    assert std == pytest.approx(math.sqrt(((1 / 3) ** 2 + 2 * (1 / 6) ** 2) / 3))
    assert average_at_n([[1], [0]]) == (0.5, 0.0)


def test_ragged_table_names_the_row():
    with pytest.raises(ValueError, match=r"correct\[1\]"):
        average_at_n([[1, 0], [1]])


def test_vote_key_clusters():
    assert vote_key("70", True) == "<correct>"
    assert vote_key(" 07 ", False) == vote_key("7", False) == "7"
    assert vote_key("\\dfrac{1}{2}", False) == vote_key("\\frac{1}{ 2}", False)
    assert vote_key(None, False) is None and vote_key("  ", False) is None


@pytest.mark.parametrize(
    ("answers", "correct", "expected"),
    [
        (["5", "7", "7"], [True, False, False], False),  # wrong cluster of 2 wins
        (["5", "07", "7"], [True, False, False], False),  # 07 and 7 are one cluster
        (["5", "7", "8"], [True, False, False], True),  # 1-1-1 tie: first cluster
        (["7", "5"], [False, True], False),  # tie: the wrong answer came first
        ([None, None, "70"], [False, False, True], True),  # no answer does not vote
        ([None, None], [False, False], False),
    ],
)
def test_majority_correct(answers, correct, expected):
    assert majority_correct(answers, correct) is expected


def test_maj_at_k_uses_the_first_k_sample_indices():
    answers = [["1", "2", "2"], ["3", "3", "4"]]
    correct = [[True, False, False], [True, True, False]]
    assert maj_at_k(answers, correct, 1) == 1.0
    assert maj_at_k(answers, correct, 3) == 0.5
    with pytest.raises(ValueError, match="k=4"):
        maj_at_k(answers, correct, 4)


def test_k_values_and_length_stats():
    assert k_values(12) == [1, 2, 4, 8, 12]
    assert k_values(3) == [1, 2, 3]
    assert length_stats(list(range(10, 0, -1))) == {"mean": 5.5, "median": 5.5, "p90": 9, "max": 10}


def _row(bench, pid, j, correct, answer="1", n_tokens=10, finish="stop"):
    return {
        "benchmark": bench,
        "id": pid,
        "sample_index": j,
        "seed": j,
        "text": f"\\boxed{{{answer}}}",
        "answer": answer,
        "correct": correct,
        "grade_status": "ok",
        "n_tokens": n_tokens,
        "finish_reason": finish,
    }


def test_store_resumes_and_cuts_a_truncated_last_line(tmp_path):
    path = tmp_path / "generations.jsonl"
    store = GenerationStore(path)
    store.append([_row("a", "p1", 0, True), _row("a", "p1", 1, False)])
    complete = path.read_bytes()
    path.write_bytes(complete + b'{"benchmark": "a", "id": "p2", "sam')  # killed mid-write
    resumed = GenerationStore(path)
    assert resumed.keys == {("a", "p1", 0), ("a", "p1", 1)}
    assert path.read_bytes() == complete
    resumed.append([_row("a", "p2", 0, True)])
    assert len(GenerationStore(path).rows) == 3
    with pytest.raises(ValueError, match="already"):
        resumed.append([_row("a", "p1", 0, True)])


def test_store_rejects_a_malformed_middle_line(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text(
        json.dumps(_row("a", "p1", 0, True)) + "\n{oops\n" + json.dumps(_row("a", "p1", 1, True)) + "\n"
    )
    with pytest.raises(ValueError, match="generations.jsonl:2"):
        GenerationStore(path)


def test_run_config_must_not_change_on_resume(tmp_path):
    path = tmp_path / "run_config.json"
    check_run_config(path, {"seed": 0, "model_path": "m"})
    check_run_config(path, {"seed": 0, "model_path": "m"})
    with pytest.raises(ValueError, match="'seed' was 0, now 1"):
        check_run_config(path, {"seed": 1, "model_path": "m"})


def test_sample_seeds_are_distinct_and_stable():
    seeds = {sample_seed(0, b, p, j) for b in ("x", "y") for p in ("1", "2") for j in range(12)}
    assert len(seeds) == 48
    assert sample_seed(3, "x", "1", 4) == sample_seed(0, "x", "1", 7)
    with pytest.raises(ValueError, match="seed"):
        sample_seed(2**16, "x", "1", 0)


def test_summary_from_rows():
    rows = [
        _row("b1", "p1", 0, True, "5", 10),
        _row("b1", "p1", 1, False, "6", 30, "length"),
        _row("b1", "p2", 0, False, None, 20),
        _row("b1", "p2", 1, False, "9", 40),
        _row("b2", "q1", 0, True, "1", 5),
        _row("b2", "q1", 1, True, "1", 5),
        _row("b1", "p1", 2, True, "5", 10),  # beyond n = 2: ignored
    ]
    rows[2]["answer"] = None
    summary = summarize({"b1": ["p1", "p2"], "b2": ["q1"]}, rows, 2)
    b1 = summary["benchmarks"]["b1"]
    assert b1["mean@2"] == 0.25 and b1["std"] == 0.25  # per-index accuracy [.5, 0]
    assert b1["pass@k"] == {"1": 0.25, "2": 0.5}
    assert b1["maj@k"] == {"1": 0.5, "2": 0.5}  # p1: tie 5 vs 6, 5 (correct) first
    assert b1["per_problem_accuracy"] == {"p1": 0.5, "p2": 0.0}
    assert b1["truncation_rate"] == 0.25 and b1["no_answer_rate"] == 0.25
    assert b1["response_tokens"]["mean"] == 25
    assert summary["mean"] == pytest.approx((0.25 + 1.0) / 2)
    assert "| b1 | 25.00 | 25.00 | 25.00 | 50.00 | 50.00 | 50.00 |" in render_markdown(summary)


def test_summary_names_missing_rows():
    with pytest.raises(ValueError, match=r"\('p2', 0\)"):
        benchmark_summary(["p1", "p2"], [_row("b", "p1", 0, True)], 1)


def test_evaluation_prompt_is_the_student_turn_with_thinking_on():
    from transformers import AutoTokenizer

    from recipe.atesd.data.tiny_model import tokenizer_dir
    from recipe.atesd.eval.evaluate import prompt_token_ids, student_template

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir()))
    template = student_template(SimpleNamespace(student_template=None))
    on = tokenizer.decode(prompt_token_ids(tokenizer, "What is 1+1?", template, True))
    off = tokenizer.decode(prompt_token_ids(tokenizer, "What is 1+1?", template, False))
    assert "Problem: What is 1+1?" in on and "\\boxed{}" in on
    assert on.endswith("<|im_start|>assistant\n") and "<think>" not in on
    assert off.endswith("<think>\n\n</think>\n\n")
