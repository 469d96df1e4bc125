"""Math grader: every gold answer of the three benchmarks in the surface forms a model writes grades
correct, perturbed answers grade wrong, pathological inputs end as counted timeouts/oversize."""

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO_ROOT

from recipe.atesd.rewards import math_grader as mg

BENCHMARKS = ("aime24", "aime25", "hmmt25")
FAST = mg.GraderConfig(timeout_s=2.0, kill_grace_s=1.0)


def gold_answers() -> list[tuple[str, str]]:
    rows = []
    for name in BENCHMARKS:
        for line in (REPO_ROOT / "data" / "eval" / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows.append((f"{name}/{row['id']}", row["answer"]))
    return rows


def split_list(gold: str) -> list[str]:
    return [part.strip() for part in gold.split(",")]


def variant(gold: str) -> str:
    """A second way to write the same value: leading zeros, \\dfrac, reversed list, or no spaces."""
    if re.fullmatch(r"\d+", gold):
        return gold.zfill(3) if len(gold) < 3 else "0" + gold
    if "," in gold:
        return ", ".join(reversed(split_list(gold)))
    if "\\frac" in gold:
        return gold.replace("\\frac", "\\dfrac")
    return gold.replace(" ", "") if " " in gold else f"{{{gold}}}"


def surface_forms(gold: str) -> list[str]:
    return [
        f"\\boxed{{{gold}}}",
        f"Thus, so the answer is \\boxed{{{gold}}}.",
        f"The final answer is $\\boxed{{{gold}}}$",
        f"\\boxed{{ {gold} }}",
        f"\\boxed{{{gold}.}}",
        f"\\fbox{{{gold}}}",
        f"First guess \\boxed{{{gold}+7}}, corrected: \\boxed{{{variant(gold)}}}",
    ]


def perturbations(gold: str) -> list[str]:
    if "," in gold:
        first, second = split_list(gold)
        return [f"\\boxed{{{first}}}", f"\\boxed{{{second}}}", f"\\boxed{{{first}, {first}+1}}"]
    return [
        f"\\boxed{{({gold})+1}}",
        f"\\boxed{{2({gold})}}",
        f"\\boxed{{{gold}}} ... wait, no: \\boxed{{({gold})-1}}",
    ]


def grade_all(pairs: list[tuple[str, str]]) -> list[mg.GradeResult]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda p: mg.grade(p[0], p[1], FAST), pairs))


def test_every_gold_answer_in_every_surface_form_grades_correct():
    golds = gold_answers()
    assert len(golds) == 90
    cases = [(name, form, gold) for name, gold in golds for form in surface_forms(gold)]
    results = grade_all([(form, gold) for _, form, gold in cases])
    wrong = [(name, form, r) for (name, form, _), r in zip(cases, results, strict=True) if not r.correct]
    print(f"graded {len(cases)} forms: {len(cases) - len(wrong)} correct")
    assert not wrong, wrong[:5]


def test_perturbed_answers_grade_wrong():
    cases = [(name, form, gold) for name, gold in gold_answers() for form in perturbations(gold)]
    results = grade_all([(form, gold) for _, form, gold in cases])
    accepted = [(name, form) for (name, form, _), r in zip(cases, results, strict=True) if r.correct]
    statuses = {r.status for r in results}
    print(f"{len(cases)} perturbations: {len(accepted)} accepted; statuses {sorted(statuses)}")
    assert not accepted, accepted[:5]
    assert statuses == {"ok"}  # wrong because compared, not because grading failed


@pytest.mark.parametrize(
    ("content", "gold", "expected"),
    [
        ("$3,375$.", "3375", "3375"),
        ("3{,}375", "3375", "3375"),
        ("3\\,375", "3375", "3375"),
        ("1, 2", "1, 2", "1, 2"),  # a list gold keeps its commas
        (" \\frac{4}{9}; ", "\\frac{4}{9}", "\\frac{4}{9}"),
    ],
)
def test_normalize_answer(content, gold, expected):
    assert mg.normalize_answer(content, gold) == expected


def test_no_box_or_empty_box_scores_zero_without_a_worker():
    mg.reset_grader_stats()
    assert mg.compute_score("aime24", "The answer is 70.", "70") == {
        "score": 0.0,
        "acc": 0.0,
        "pred": "",
        "timeout": False,
    }
    # an empty last box is no answer (recipe/atesd/method/answer.py)
    empty = mg.grade("\\boxed{ }", "70", FAST)
    assert (empty.correct, empty.answer, empty.status) == (False, None, "no_answer")
    assert mg.grader_stats()["no_answer"] == 2


PATHOLOGICAL = {
    "1 MB without a box": ("x" * 1_000_000, {"no_answer"}),
    "1 MB then a box": ("y" * 1_000_000 + "\\boxed{70}", {"ok"}),
    "10k nested braces": ("\\boxed{" + "{" * 10_000 + "1" + "}" * 10_001, {"oversize"}),
    "power tower": ("\\boxed{2^{2^{2^{10}}}}", {"timeout"}),
    "huge power": ("\\boxed{10^{10^{7}}}", {"timeout"}),
    "long sum": ("\\boxed{" + "+".join(["1"] * 400) + "}", {"timeout", "ok"}),
}


@pytest.mark.timeout(180)
def test_pathological_inputs_end_within_the_guard_and_are_counted():
    mg.reset_grader_stats()
    results = {name: mg.grade(text, "70", FAST) for name, (text, _) in PATHOLOGICAL.items()}
    for name, (_, allowed) in PATHOLOGICAL.items():
        assert results[name].status in allowed, (name, results[name])
    assert results["1 MB then a box"].correct
    stats = mg.grader_stats()
    print("pathological:", {k: v.status for k, v in results.items()}, stats)
    assert stats["calls"] == len(PATHOLOGICAL)
    assert stats["timeout"] == sum(r.status == "timeout" for r in results.values()) >= 2
    assert stats["oversize"] == 1
    # the killed worker was replaced: grading goes on
    assert mg.grade("\\boxed{070}", "70", FAST).correct


@pytest.mark.timeout(120)
def test_compute_score_in_worker_threads_including_a_timeout():
    """verl calls reward functions in executor threads, where signal-based timeouts cannot work."""
    kwargs = {"timeout_s": 1.0, "kill_grace_s": 1.0}
    texts = ["\\boxed{070}", "\\boxed{2^{2^{2^{10}}}}", "\\boxed{71}", "\\boxed{70.}"]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(mg.compute_score, "aime25", t, "70", None, **kwargs) for t in texts]
        out = [f.result() for f in futures]
    assert threading.current_thread() is threading.main_thread()
    assert [o["score"] for o in out] == [1.0, 0.0, 0.0, 1.0]
    assert [o["timeout"] for o in out] == [False, True, False, False], mg.grader_stats()
    assert out[0]["pred"] == "070"


def test_reward_kwargs_validation_names_the_key():
    with pytest.raises(ValueError, match="timeout_seconds"):
        mg.compute_score("aime24", "\\boxed{1}", "1", timeout_seconds=3)
    with pytest.raises(ValueError, match="grader.timeout_s"):
        mg.GraderConfig(timeout_s=0)
    with pytest.raises(ValueError, match="ground_truth"):
        mg.grade("\\boxed{1}", "  ")


def test_loads_as_verl_custom_reward_function():
    """verl 0.9.1 loads the file by path under a synthetic module name; grading must still work."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    path = REPO_ROOT / "recipe" / "atesd" / "rewards" / "math_grader.py"
    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": str(path),
                    "name": "compute_score",
                    "reward_kwargs": {"timeout_s": 2.0},
                }
            }
        }
    )
    fn = get_custom_reward_fn(config)
    good = fn(data_source="hmmt25", solution_str="\\boxed{\\dfrac{1}{576}}", ground_truth="\\frac{1}{576}")
    bad = fn(data_source="hmmt25", solution_str="\\boxed{\\frac{1}{575}}", ground_truth="\\frac{1}{576}")
    assert (good["score"], bad["score"]) == (1.0, 0.0)
