"""Difficulty signals and bucket assignment (recipe/atesd/method/difficulty.py, docs/method.md §2.4)."""

import pytest

from recipe.atesd.method.difficulty import (
    SIGNALS,
    assign_buckets,
    difficulty,
    quantile_edges,
    require_inputs,
    update_running_estimate,
)


def test_dataset_level_reads_extra_info_and_names_a_missing_row():
    rows = [{"difficulty": 2}, {"difficulty": 8, "order": "x"}]
    assert difficulty("dataset_level", {"extra_info": rows}) == [2.0, 8.0]
    assert difficulty("dataset_level", {"extra_info": [{"level": 3}]}, {"level_key": "level"}) == [3.0]
    with pytest.raises(ValueError, match="row 1 has no extra_info.difficulty"):
        difficulty("dataset_level", {"extra_info": [{"difficulty": 2}, {"order": "x"}]})
    with pytest.raises(ValueError, match="row 0 extra_info.difficulty = 'hard'"):
        difficulty("dataset_level", {"extra_info": [{"difficulty": "hard"}]})


def test_rollout_pass_rate_groups_rollouts_by_problem():
    uids = ["a", "b", "a", "b", "a", "c"]
    correct = [1, 0, 1, 1, 0, 0]
    # a: 2 of 3 correct -> 1/3 failure; b: 1 of 2 -> 1/2; c: 0 of 1 -> 1
    a, b = 1.0 - 2.0 / 3.0, 1.0 - 1.0 / 2.0  # the failure rates as the signal computes them, exactly
    assert difficulty("rollout_pass_rate", {"uid": uids, "correct": correct}) == [a, b, a, b, a, 1.0]
    with pytest.raises(ValueError, match="row 1 has correct = 0.5"):
        difficulty("rollout_pass_rate", {"uid": ["a", "a"], "correct": [1, 0.5]})


def test_running_estimate_uses_prior_then_the_ema_of_visits():
    history = update_running_estimate({}, ["a", "a", "b"], [1, 0, 1], decay=0.5)
    assert history == {"a": 0.5, "b": 0.0}
    history = update_running_estimate(history, ["a"], [0], decay=0.5)
    assert history == {"a": 0.75, "b": 0.0}  # 0.5*0.5 + 0.5*1
    assert difficulty("running_estimate", {"uid": ["a", "c"], "history": history}, {"prior": 0.3}) == [
        0.75,
        0.3,
    ]


def test_declared_needs_are_enforced_by_name():
    assert set(SIGNALS) == {"dataset_level", "rollout_pass_rate", "running_estimate"}
    with pytest.raises(ValueError, match=r"'rollout_pass_rate' needs \['correct'\]"):
        require_inputs("rollout_pass_rate", ["uid", "extra_info"])
    with pytest.raises(ValueError, match="controller.difficulty_signal = 'nll'"):
        require_inputs("nll", ["uid"])


def test_quantile_edges_balance_and_never_split_ties():
    values = list(range(10))
    edges = quantile_edges(values, 2)
    assert edges == [5]
    assert [assign_buckets(values, edges).count(k) for k in range(2)] == [5, 5]
    # toy-world levels 2..8, 16 rows each: thirds fall on whole levels
    levels = [lv for lv in range(2, 9) for _ in range(16)]
    edges = quantile_edges(levels, 3)
    buckets = assign_buckets(levels, edges)
    for lv in range(2, 9):
        assert len({b for b, x in zip(buckets, levels, strict=True) if x == lv}) == 1
    assert sorted(set(buckets)) == [0, 1, 2]
    assert quantile_edges([1.0] * 7, 3) == []  # one value: one bucket
    assert quantile_edges([4.0, 1.0], 1) == []


def test_assign_buckets_edges_are_left_closed_and_checked():
    assert assign_buckets([0.0, 0.5, 0.99, 1.0, 2.0], [0.5, 1.0]) == [0, 1, 1, 2, 2]
    assert assign_buckets([3.0], []) == [0]
    with pytest.raises(ValueError, match="strictly increasing"):
        assign_buckets([1.0], [1.0, 1.0])
