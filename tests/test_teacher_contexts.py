"""The field's teacher contexts as registered options (docs/method.md §2.5): what c_T each builds, checked
token for token against the contexts written out from the templates, and the worker's loss under each against
a dense fp64 reference on that c_T, with a control that another context gives another loss.

- ``answer_only``: ``privileged`` at α = 0 (the answer statement only), whatever α the controller holds.
- ``reference_free`` (arXiv 2609.20612): the student's own user turn with thinking ON, nothing privileged.
"""

import pytest
import torch
from conftest import tiny_qwen
from test_worker_loss import (
    TEMPERATURE,
    dense_loss,
    make_worker,
    micro_batch,
    responses_for,
    run_micro_batch,
    whole_batch_loss,
)
from test_worker_loss import rows as rows  # noqa: F401  (fixture)
from test_worker_loss import tokenizer as tokenizer  # noqa: F401  (fixture)

from recipe.atesd.method.prompts import (
    TEACHER_CONTEXTS,
    TeacherPromptConfig,
    build_student_messages,
    chat_ids,
    row_teacher_prompt,
    student_prompt_ids,
)

SENTENCES = {"segmenter": "sentences"}


def written_out(tokenizer, info: dict, context: str) -> list[int]:
    """c_T of ``context`` from the templates directly (no registry, no reveal logic)."""
    cfg = TeacherPromptConfig(**SENTENCES)
    if context == "reference_free":
        user = cfg.student_template.format(problem=info["problem"])
    else:  # answer_only: the reference block holds the answer statement alone
        statement = cfg.answer_statement_template.format(answer=info["answer"])
        block = cfg.reference_block_template.format(reference=statement)
        user = cfg.teacher_template.format(problem=info["problem"], reference_block=block)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("context", ["answer_only", "reference_free"])
def test_context_ids_are_the_written_out_prompt_at_every_alpha(tokenizer, rows, context):
    cfg = TeacherPromptConfig(teacher_context=context, **SENTENCES)
    assert not TEACHER_CONTEXTS[context].uses_alpha
    for info in rows:
        want = written_out(tokenizer, info, context)
        for alpha in (0.0, 0.5, 1.0):
            prompt = row_teacher_prompt(tokenizer, info, alpha, cfg)
            assert prompt.ids == want, (context, alpha)
            assert prompt.revealed.remainder  # the probe's g scores the unrevealed rest


def test_answer_only_is_privileged_at_alpha_zero_and_reference_free_is_not_the_student(tokenizer, rows):
    privileged = TeacherPromptConfig(**SENTENCES)
    answer_only = TeacherPromptConfig(teacher_context="answer_only", **SENTENCES)
    for info in rows:
        assert (
            row_teacher_prompt(tokenizer, info, 0.9, answer_only).ids
            == row_teacher_prompt(tokenizer, info, 0.0, privileged).ids
        )
        assert (
            row_teacher_prompt(tokenizer, info, 0.9, answer_only).ids
            != row_teacher_prompt(tokenizer, info, 0.9, privileged).ids
        )
        free = row_teacher_prompt(tokenizer, info, 0.5, TeacherPromptConfig(teacher_context="reference_free"))
        assert free.ids != student_prompt_ids(tokenizer, info["problem"], privileged)  # thinking on vs off
        assert free.ids == chat_ids(tokenizer, build_student_messages(info["problem"], privileged), True)


def test_answer_only_refuses_a_config_without_the_answer():
    with pytest.raises(ValueError, match=r"teacher_prompt\.keep_final_answer=true"):
        TeacherPromptConfig(teacher_context="answer_only", keep_final_answer=False)


def test_reference_free_over_budget_names_the_length(tokenizer, rows):
    with pytest.raises(ValueError, match=r"reference_free\), over max_len=5"):
        row_teacher_prompt(tokenizer, rows[0], 0.0, TeacherPromptConfig(teacher_context="reference_free"), 5)


@pytest.mark.parametrize("context", ["answer_only", "reference_free"])
def test_worker_loss_matches_dense_reference_on_the_context(tokenizer, rows, context):
    """fp64 models: the worker's loss under ``context`` equals Σ_n Σ_v min(p_T(log p_T − log p_S), τ) / N on the
    written-out c_T within 1e-10 (fp64 rounding, tests/test_worker_loss.py's FP64_ZERO derivation); the
    privileged context at α = 0.5 misses it by more than 1e3 × that (the control)."""
    vocab = len(tokenizer)
    student, teacher = tiny_qwen(vocab, 1), tiny_qwen(vocab, 2)
    responses = responses_for(len(rows), vocab, seed=9)

    def worker_loss(cfg):
        return whole_batch_loss(tokenizer, student, teacher, cfg, rows, responses)[0].item()

    tau = float(
        torch.tensor(TEMPERATURE, dtype=torch.float32)
    )  # as verl stores it (fp32), see test_packed_student
    triples = [
        (
            student_prompt_ids(tokenizer, info["problem"], TeacherPromptConfig(**SENTENCES)),
            written_out(tokenizer, info, context),
            resp,
        )
        for info, resp in zip(rows, responses, strict=True)
    ]
    dense = dense_loss(student, teacher, triples, temperature=tau).item()
    bound = 1e-10
    got = worker_loss(TeacherPromptConfig(teacher_context=context, **SENTENCES))
    assert got == pytest.approx(dense, abs=bound)
    # random tiny models barely tell the contexts apart (measured gap 8.6e-7 for answer_only): 1e3 × the bound
    assert abs(worker_loss(TeacherPromptConfig(**SENTENCES)) - dense) > 1e3 * bound


# ---------------------------------------------------------------- other_reference (OP2SD, arXiv 2608.09228)


def test_pair_donors_never_pairs_the_same_problem_and_is_fixed_by_the_seed():
    from recipe.atesd.method.donors import pair_donors

    pool = [(f"t{i}", f"problem {i % 7}") for i in range(40)]  # repeated texts: t0, t7, t14, … share one
    targets = [*pool, ("probe-1", "problem 3"), ("probe-2", "a probe problem")]
    pairing = pair_donors(targets, pool, seed=3)
    text = dict(targets)
    assert set(pairing) == {t for t, _ in targets}
    assert all(text[t] != dict(pool)[d] for t, d in pairing.items())  # never the same problem text
    uses = [list(pairing.values()).count(d) for d, _ in pool]
    assert max(uses) - min(uses) <= 3  # near-uniform: 42 targets over 40 donors, ± the skipped same-text ones
    assert pair_donors(targets, pool, seed=3) == pairing
    assert pair_donors(targets, pool, seed=4) != pairing


@pytest.mark.parametrize(
    ("targets", "pool", "match"),
    [
        ([("a", "x")], [], "pool .* is empty"),
        ([("a", "x")], [("b", "x"), ("c", "x ")], "row id 'a': every donor"),
        ([("a", "x"), ("a", "y")], [("b", "z")], "targets repeat row ids"),
    ],
)
def test_pair_donors_errors_name_the_problem(targets, pool, match):
    from recipe.atesd.method.donors import pair_donors

    with pytest.raises(ValueError, match=match):
        pair_donors(targets, pool, seed=0)


@pytest.fixture(scope="module")
def donors():
    from conftest import REPO_ROOT

    from recipe.atesd.data.donor_rows import donor_rows

    tiny = REPO_ROOT / "data" / "tiny"
    return donor_rows([str(tiny / "train.parquet")], str(tiny / "probe.parquet"), seed=0)


def test_other_reference_shows_a_donor_and_never_the_own_reference(tokenizer, rows, donors):
    cfg = TeacherPromptConfig(teacher_context="other_reference", **SENTENCES)
    for info in rows:
        row = {**info, **donors[info["id"]]}
        user = cfg.worked_example_template.format(
            problem=info["problem"],
            example_problem=row["donor_problem"],
            example_solution=row["donor_reference_solution"],
        )
        want = chat_ids(tokenizer, [{"role": "user", "content": user}], True)
        for alpha in (0.0, 1.0):
            assert row_teacher_prompt(tokenizer, row, alpha, cfg).ids == want
        text = tokenizer.decode(want)
        assert row["donor_problem"] != info["problem"]
        assert info["reference_solution"].strip() not in text  # the target's own solution is never shown
    with pytest.raises(ValueError, match=r"other_reference.*donor_problem"):
        row_teacher_prompt(tokenizer, rows[0], 0.0, cfg)  # a row without its donor: named


def test_worker_loss_under_other_reference_matches_dense_reference(tokenizer, rows, donors):
    vocab = len(tokenizer)
    student, teacher = tiny_qwen(vocab, 1), tiny_qwen(vocab, 2)
    responses = responses_for(len(rows), vocab, seed=11)
    n_tokens = sum(len(r) for r in responses)
    cfg = TeacherPromptConfig(teacher_context="other_reference", **SENTENCES)
    worker = make_worker(tokenizer, teacher, cfg, alpha=0.5)
    worker._donors = donors
    td, prompts = micro_batch(tokenizer, cfg, rows, responses, n_tokens)
    got = run_micro_batch(worker, student, td, prompts, responses).item()
    tau = float(torch.tensor(TEMPERATURE, dtype=torch.float32))
    triples = []
    for info, resp, sp in zip(rows, responses, prompts, strict=True):
        d = donors[info["id"]]
        user = cfg.worked_example_template.format(
            problem=info["problem"],
            example_problem=d["donor_problem"],
            example_solution=d["donor_reference_solution"],
        )
        triples.append((sp, chat_ids(tokenizer, [{"role": "user", "content": user}], True), resp))
    dense = dense_loss(student, teacher, triples, temperature=tau).item()
    assert got == pytest.approx(dense, abs=1e-10)
    # the control: the privileged context (the row's own reference) misses it by more than 1e3 × the bound
    privileged = whole_batch_loss(
        tokenizer, student, teacher, TeacherPromptConfig(**SENTENCES), rows, responses
    )
    assert abs(privileged[0].item() - dense) > 1e3 * 1e-10, (privileged[0].item(), dense)


def test_the_run_records_its_donor_pairing_and_a_resume_must_match(tmp_path):
    from conftest import REPO_ROOT

    from recipe.atesd.glue.trainer import DONORS_FILE, record_donors

    tiny = REPO_ROOT / "data" / "tiny"
    train, probe = [str(tiny / "train.parquet")], str(tiny / "probe.parquet")
    pairing = record_donors(str(tmp_path), train, probe, seed=0)
    assert (tmp_path / DONORS_FILE).exists() and len(pairing) > 0
    assert record_donors(str(tmp_path), train, probe, seed=0) == pairing  # a resume recomputes the same
    with pytest.raises(ValueError, match=r"donors\.json: this run's donor pairing differs"):
        record_donors(str(tmp_path), train, probe, seed=1)
