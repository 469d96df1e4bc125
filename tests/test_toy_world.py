"""Toy world (recipe/atesd/toy/): task generator, tokenizer, prompts, grader and parquet files."""

import json
import random
import re

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from recipe.atesd.glue.config_check import check_reference_rows
from recipe.atesd.method.answer import last_box
from recipe.atesd.method.prompts import split_segments, student_prompt_ids, teacher_prompt_ids
from recipe.atesd.rewards.toy_grader import compute_score
from recipe.atesd.toy import build_data, task
from recipe.atesd.toy.tokenizer import IM_END, IM_START, PAD, build_tokenizer, main, vocabulary

STEP = re.compile(r"^(\d)\+(\d)=(\d)$")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_tok")
    main(["--out", str(out)])
    return AutoTokenizer.from_pretrained(str(out))


@pytest.fixture(scope="module")
def problems():
    return [p for split in task.SPLITS for p in task.generate(split, 70, seed=3)]


def world_texts(problems):
    cfg = task.prompt_config()
    for p in problems:
        yield p["problem"]
        yield p["reference_solution"]
        yield from task.all_solutions(task.parse_problem(p["problem"]))
        yield cfg.teacher_template.format(
            problem=p["problem"], reference_block=cfg.reference_block_template.format(reference="x")
        )


# ---- task ------------------------------------------------------------------------------------------------


def test_problem_and_reference_format():
    p = task.make_problem((3, 7, 5, 2), "ltr", "x")
    assert p == {
        "id": "x",
        "problem": "add 3 7 5 2 mod 10",
        "reference_solution": "3+7=0\n0+5=5\n5+2=7\n\\boxed{7}",
        "answer": "7",
        "difficulty": 4,
        "order": "ltr",
    }
    assert task.solution((3, 7, 5, 2), "rtl") == "2+5=7\n7+7=4\n4+3=7\n\\boxed{7}"
    assert last_box(p["reference_solution"]).answer == "7"
    assert split_segments(p["reference_solution"], "lines") == [
        "3+7=0\n",
        "0+5=5\n",
        "5+2=7\n",
        "\\boxed{7}",
    ]
    assert task.parse_problem(p["problem"]) == (3, 7, 5, 2)


def check_solution(terms, text):
    """Independent checker: k - 1 correct running-sum steps over some order of the terms, then the box."""
    lines = text.split("\n")
    assert len(lines) == len(terms) and lines[-1] == f"\\boxed{{{sum(terms) % 10}}}"
    steps = [tuple(map(int, STEP.match(line).groups())) for line in lines[:-1]]
    used = [steps[0][0]] + [b for _, b, _ in steps]
    assert sorted(used) == sorted(terms)
    total = steps[0][0]
    for a, b, c in steps:
        assert a == total and c == (a + b) % 10
        total = c
    return used


def test_both_orders_correct_and_differ_somewhere():
    rng = random.Random(0)
    differ = 0
    for _ in range(300):
        terms = tuple(rng.randrange(10) for _ in range(rng.randint(2, 8)))
        ltr, rtl = task.solution(terms, "ltr"), task.solution(terms, "rtl")
        assert check_solution(terms, ltr) == list(terms)
        assert check_solution(terms, rtl) == list(terms[::-1])
        assert last_box(ltr).answer == last_box(rtl).answer == task.answer_of(terms)
        assert task.all_solutions(terms) == list(dict.fromkeys([ltr, rtl]))
        differ += ltr != rtl
    assert differ > 250
    assert task.all_solutions((4, 1, 4)) == ["4+1=5\n5+4=9\n\\boxed{9}"]  # palindrome: one text


def test_generate_is_deterministic_and_balanced(problems):
    a = task.generate("train", 200, seed=5)
    assert a == task.generate("train", 200, seed=5)
    assert [p["problem"] for p in a] != [p["problem"] for p in task.generate("train", 200, seed=6)]
    counts = {k: sum(p["difficulty"] == k for p in a) for k in task.DIFFICULTIES}
    assert set(counts.values()) <= {28, 29}
    assert {p["order"] for p in a} == set(task.ORDERS)
    for p in a:
        terms = task.parse_problem(p["problem"])
        assert len(terms) == p["difficulty"] and p["answer"] == task.answer_of(terms)
        assert p["reference_solution"] == task.solution(terms, p["order"])
    assert len({p["id"] for p in problems}) == len(problems)


def test_splits_are_disjoint_on_a_large_sample():
    seen = {}
    # probe/eval hold only ~15 problems of difficulty 2 (15 % of 100), so large draws there skip it
    draws = [(split, 500, (3, 4, 5, 6, 7, 8)) for split in ("probe", "eval")] + [
        ("train", 700, task.DIFFICULTIES)
    ]
    draws += [(split, 14, (2,)) for split in ("probe", "eval")]
    for seed in range(3):
        for split, n, difficulties in draws:
            for p in task.generate(split, n, seed=seed, difficulties=difficulties):
                terms = task.parse_problem(p["problem"])
                assert task.split_of(terms) == split
                seen.setdefault(terms, set()).add(split)
    assert len(seen) > 2000
    assert all(len(splits) == 1 for splits in seen.values())
    for split in ("probe", "eval"):  # held-out sets never repeat a problem
        for n, difficulties in [(300, (3, 4, 5, 6, 7, 8)), (14, (2,))]:
            drawn = [p["problem"] for p in task.generate(split, n, seed=0, difficulties=difficulties)]
            assert len(set(drawn)) == len(drawn) == n


def test_a_large_eval_set_takes_every_problem_of_a_small_pool_and_spreads_the_rest():
    """1024 eval problems over difficulties 2..8: the eval split's every problem of difficulty 2 and 3 (pools of 17
    and 146, below an even share of 146.3), the rest spread evenly over 4..8; distinct, all in split eval."""
    pools = {k: len(task._pool("eval", k)) for k in (2, 3)}
    problems = task.generate("eval", 1024, seed=0, name="heldout")
    by_k = {k: sum(p["difficulty"] == k for p in problems) for k in task.DIFFICULTIES}
    assert sum(by_k.values()) == 1024 and len({p["problem"] for p in problems}) == 1024
    assert by_k[2] == pools[2] and by_k[3] == pools[3]  # both pools smaller than an even share
    rest = [by_k[k] for k in task.DIFFICULTIES if k > 3]
    assert max(rest) - min(rest) <= 1 and sum(rest) == 1024 - pools[2] - pools[3]
    assert all(p["id"].startswith("toy-heldout-s0-") for p in problems)
    assert all(task.split_of(task.parse_problem(p["problem"])) == "eval" for p in problems)
    # the default name keeps the split's own stream: val.parquet's problems are unchanged by the second set
    assert task.generate("eval", 112, seed=0) == task.generate("eval", 112, seed=0, name="eval")


def test_generate_rejects_bad_input():
    with pytest.raises(ValueError, match="split"):
        task.generate("test", 4)
    with pytest.raises(ValueError, match="difficulties\\[0\\]"):
        task.generate("train", 4, difficulties=[9])
    with pytest.raises(ValueError, match="n must"):
        task.generate("train", -1)
    with pytest.raises(ValueError, match="only .* distinct problems of difficulty 2"):
        task.generate("eval", 100, difficulties=[2])
    with pytest.raises(ValueError, match="order"):
        task.solution((1, 2), "up")
    with pytest.raises(ValueError, match="terms\\[1\\]"):
        task.solution((1, 12))
    with pytest.raises(ValueError, match="problem"):
        task.parse_problem("add 1 mod 10")


# ---- tokenizer and prompts -------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_vocab(tok, problems):
    assert len(tok) == len(vocabulary()) <= 400
    assert (tok.pad_token, tok.eos_token) == (PAD, IM_END)
    assert tok.pad_token_id != tok.eos_token_id
    for text in world_texts(problems):
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    assert [tok.decode([i]) for i in tok.encode("add 3 10", add_special_tokens=False)] == list(
        ["add", " ", "3", " ", "1", "0"]
    )
    assert len(tok.encode("\\boxed{7}", add_special_tokens=False)) == 4
    assert tok.encode("é", add_special_tokens=False) == [tok.unk_token_id]


@pytest.mark.parametrize("thinking", [True, False])
def test_chat_rendering(tok, thinking):
    messages = [{"role": "user", "content": "add 1 2 mod 10"}]
    text = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
    )
    tail = "" if thinking else "<think>\n\n</think>\n\n"
    assert text == f"<|im_start|>user\nadd 1 2 mod 10<|im_end|>\n<|im_start|>assistant\n{tail}"
    ids = tok.encode(text, add_special_tokens=False)
    tokens = tok.convert_ids_to_tokens(ids)
    for special in (IM_START, IM_END, *(["<think>", "</think>"] if not thinking else [])):
        assert special in tokens and ids[tokens.index(special)] == tok.convert_tokens_to_ids(special)
    assert tokens.count(IM_START) == 2 and tokens.count(IM_END) == 1
    assert tok.decode(ids) == text


def test_tokenizer_dir_is_rebuildable(tmp_path):
    assert build_tokenizer(tmp_path / "a") == tmp_path / "a"
    build_tokenizer(tmp_path / "b")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_prompt_ids_at_alphas(tok):
    cfg = task.prompt_config()
    p = task.make_problem((3, 7, 5, 2), "ltr", "x")
    student = tok.decode(student_prompt_ids(tok, p["problem"], cfg))
    assert (
        student
        == "<|im_start|>user\nadd 3 7 5 2 mod 10<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    steps = p["reference_solution"].split("\n")[:-1]
    texts = {}
    for alpha in (0, 0.5, 1):
        prompt = teacher_prompt_ids(
            tok, p["problem"], p["reference_solution"], alpha, cfg, answer=p["answer"]
        )
        texts[alpha] = tok.decode(prompt.ids)
        assert texts[alpha].startswith("<|im_start|>user\nadd 3 7 5 2 mod 10\nref\n")
        assert texts[alpha].endswith("\\boxed{7}\nend<|im_end|>\n<|im_start|>assistant\n")
        shown = [s for s in steps if s in texts[alpha]]
        assert len(shown) == {0: 0, 0.5: 2, 1: 3}[alpha] and shown == steps[: len(shown)]
        assert prompt.revealed.n_segments == 4
    assert p["reference_solution"] in texts[1]
    assert len(tok.encode(texts[0.5], add_special_tokens=False)) < len(
        tok.encode(texts[1], add_special_tokens=False)
    )


# ---- grader ----------------------------------------------------------------------------------------------


def test_grader():
    assert compute_score("toy_sum", "3+7=0\n\\boxed{0}", "0") == 1.0
    assert compute_score("toy_sum", "\\boxed{ 0 }", "0") == 1.0
    assert compute_score("toy_sum", "3+7=0\n\\boxed{1}", "0") == 0.0
    assert compute_score("toy_sum", "3+7=0", "0") == 0.0
    assert compute_score("toy_sum", "\\boxed{}", "0") == 0.0
    assert compute_score("toy_sum", "\\boxed{0", "0") == 0.0
    assert compute_score("toy_sum", "\\boxed{0} \\boxed{5}", "5") == 1.0
    assert compute_score("toy_sum", "\\boxed{0} \\boxed{5}", "0") == 0.0
    assert compute_score("toy_sum", "\\boxed{10}", "0") == 0.0
    with pytest.raises(ValueError, match="solution_str"):
        compute_score("toy_sum", None, "0")
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("toy_sum", "\\boxed{0}", 0)
    for terms in [(1, 2), (9, 9, 9, 9, 9, 9, 9, 9)]:
        for text in task.all_solutions(terms):
            assert compute_score("toy_sum", text, task.answer_of(terms)) == 1.0


# ---- parquet ---------------------------------------------------------------------------------------------


def test_build_data_files(tmp_path):
    written = build_data.main(
        [
            "--out",
            str(tmp_path),
            "--seed",
            "1",
            "--train",
            "50",
            "--probe",
            "14",
            "--eval",
            "21",
            "--heldout",
            "35",
        ]
    )
    assert written == {"train.parquet": 50, "probe.parquet": 14, "val.parquet": 21, "heldout.parquet": 35}
    splits = {
        "train.parquet": "train",
        "probe.parquet": "probe",
        "val.parquet": "eval",
        "heldout.parquet": "eval",
    }
    terms_by_file = {}
    for name, split in splits.items():
        path = tmp_path / name
        assert check_reference_rows(str(path)) == written[name]
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            info = row["extra_info"]
            assert row["data_source"] == "toy_sum" and info["split"] == split
            assert row["prompt"] == [{"role": "user", "content": info["problem"]}]
            assert row["reward_model"] == {"style": "rule", "ground_truth": info["answer"]}
            terms = task.parse_problem(info["problem"])
            assert info["difficulty"] == len(terms) and isinstance(info["difficulty"], int)
            assert info["reference_solution"] == task.solution(terms, info["order"])
            assert compute_score(row["data_source"], info["reference_solution"], info["answer"]) == 1.0
        assert sorted({r["extra_info"]["difficulty"] for r in rows}) == list(task.DIFFICULTIES)
        terms_by_file[name] = {task.parse_problem(r["extra_info"]["problem"]) for r in rows}
    a, b, c, d = terms_by_file.values()
    assert not (
        a & b or a & c or b & c or a & d or b & d
    )  # the held-out sets share no problem with train, probe
    assert pq.read_table(tmp_path / "probe.parquet").to_pylist() == [
        build_data.toy_row(p, i, "probe") for i, p in enumerate(task.generate("probe", 14, seed=1))
    ]


def test_pretrain_builds_a_loadable_model_and_skips_a_matching_rebuild(tmp_path):
    """A few SFT steps give a Qwen3 whose vocabulary is the toy tokenizer's, that the loss moved, and that
    a second call with the same seed and spec leaves untouched (the stamp)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe.atesd.toy.exposure_curve import greedy
    from recipe.atesd.toy.pretrain import STAMP_NAME, PretrainSpec, build_model, pretrain

    spec = PretrainSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, steps=3, batch_size=4)
    out = pretrain(tmp_path / "m", seed=0, spec=spec, log_every=1)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tok) and model.config.eos_token_id == tok.eos_token_id
    fresh = build_model(tok, spec, seed=0)
    moved = [
        not torch.equal(a.float(), b.to(torch.bfloat16).float())
        for a, b in zip(model.parameters(), fresh.parameters(), strict=True)
    ]
    assert any(moved)  # three AdamW steps changed the weights
    (text,) = greedy(
        model.float(), tok, [tok.encode("add 1 2 mod 10", add_special_tokens=False)], max_new_tokens=4
    )
    assert isinstance(text, str)
    before = (out / "model.safetensors").stat().st_mtime_ns
    pretrain(tmp_path / "m", seed=0, spec=spec)
    assert (out / "model.safetensors").stat().st_mtime_ns == before and (out / STAMP_NAME).is_file()


def test_world_config_mirrors_the_task_prompt_config(tok):
    """``+world=toy`` (recipe/atesd/config/world/toy.yaml) builds the teacher prompts the data were written
    with: every field it sets equals ``task.prompt_config()``'s, and it sets every field that differs from
    the recipe's default teacher prompt."""
    from dataclasses import asdict

    from omegaconf import OmegaConf

    from recipe.atesd import REPO_ROOT
    from recipe.atesd.method.prompts import TeacherPromptConfig

    world = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "recipe/atesd/config/world/toy.yaml"))
    toy, default = asdict(task.prompt_config()), asdict(TeacherPromptConfig())
    assert {k: toy[k] for k in world["teacher_prompt"]} == world["teacher_prompt"]
    assert {k for k in toy if toy[k] != default[k]} <= set(world["teacher_prompt"])
    # the longest problems fit the student budgets: prompt and solution (+ <|im_end|>) of difficulty 8
    cfg = task.prompt_config()
    longest = [task.make_problem((9,) * task.MAX_DIFFICULTY, order, "x") for order in task.ORDERS]
    assert (
        max(len(student_prompt_ids(tok, p["problem"], cfg)) for p in longest)
        <= world["data"]["max_prompt_length"]
    )
    response = max(len(tok.encode(p["reference_solution"], add_special_tokens=False)) + 1 for p in longest)
    assert response <= world["data"]["max_response_length"]


def _sft_examples(tok, spec, steps, n_per_step, seed=0):
    """(step, prompt ids, response ids) of the SFT stream ``_example`` draws for ``steps``."""
    from recipe.atesd.toy.pretrain import _example

    rng, cfg = random.Random(seed), task.prompt_config()
    for step in steps:
        for _ in range(n_per_step):
            yield step, *_example(rng, tok, cfg, spec, step)


def test_sft_stream_curriculum_and_alpha0_lengths(tok):
    """The default build's stream: during the curriculum no problem is longer than ``_max_terms`` (3 terms
    at step 1, the full 8 only at its end); after it every difficulty appears; a teacher-format example of
    more than ``student_max`` terms always reveals at least one step line (α = 0 is kept to the student's
    lengths; at α ≥ 0.25 such a problem reveals round(α·(k−1)) ≥ 1 of its k − 1 ≥ 5 lines)."""
    from recipe.atesd.toy.pretrain import PretrainSpec, _max_terms

    spec = PretrainSpec()
    assert _max_terms(spec, 1, 8) == 3 and _max_terms(spec, spec.curriculum_steps, 8) == 7
    assert _max_terms(spec, spec.curriculum_steps + 1, 8) == 8 and _max_terms(spec, 1, 5) == 3
    long_teacher = 0
    seen = set()
    for step, prompt_ids, _ in _sft_examples(tok, spec, [1, 150, 300, 301, 900], 200):
        prompt = tok.decode(prompt_ids)
        k = len(task.parse_problem(re.search(r"add [\d ]+ mod 10", prompt).group(0)))
        teacher = "\nref\n" in prompt
        full = task.MAX_DIFFICULTY if teacher else spec.student_max
        assert k <= _max_terms(spec, step, full), (step, prompt)
        if step > spec.curriculum_steps:
            seen.add(k)
        if teacher and k > spec.student_max:
            long_teacher += 1
            assert sum(bool(STEP.match(line)) for line in prompt.split("\n")) >= 1, prompt
    assert seen == set(task.DIFFICULTIES) and long_teacher > 50


def test_batch_backward_in_parts_matches_one_batch(tok):
    """Sorted, 4-part back-propagation (each part padded to its own longest) gives the one-batch mean loss
    and its gradient. The model runs in fp64, but transformers' loss casts the logits to fp32
    (transformers/loss/loss_utils.py): the loss value is an fp32 sum in another order (~6e-8 relative per
    addition over ~700 response tokens; measured 0 to 1e-7 on two draws, bound 1e-5), while each token's
    gradient is the same fp32 row computation with the same divisor, and the rest is fp64 (measured 1.8e-16
    to 3.5e-16 of the largest entry, bound 1e-10). A wrong normaliser (a mean per part: ×4 on some parts) lies far
    outside both; one dropped token moves the mean loss only by (ℓ_i − ℓ̄)/700 (each token's loss is ~ln 111 on
    this fresh model, so possibly under 1e-5 relative) but changes the gradient far beyond the 1e-10 bound."""
    import torch

    from recipe.atesd.toy.pretrain import PretrainSpec, batch_backward, build_model

    spec = PretrainSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    examples = [(p, r) for _, p, r in _sft_examples(tok, spec, [1000], 24, seed=1)]
    grads, losses = [], []
    for parts in (1, 4):
        model = build_model(tok, spec, seed=0).double()
        losses.append(batch_backward(model, examples, tok.pad_token_id, parts).item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    scale = grads[0].abs().max().item()
    print(f"loss {losses}, max grad diff / max grad {(grads[0] - grads[1]).abs().max().item() / scale:.2e}")
    assert scale > 0 and abs(losses[0] - losses[1]) <= 1e-5 * losses[0]
    assert (grads[0] - grads[1]).abs().max().item() <= 1e-10 * scale
    lengths = sorted(len(p) + len(r) for p, r in examples)
    assert lengths[0] < lengths[-1]  # the parts really are padded to different widths


# Bounds of the shipped model's figures against its manifest's (measured where it was built). The weights are
# the same bytes on every CPU; what differs is the fp32 arithmetic of the forward pass (summation order and
# vector width of the BLAS kernels: relative differences ~1e-6 in the logits). A greedy answer changes only
# where two logits are that close, so accuracy may move by a few of the 112 rows (each 1/112 of a mean):
# allowed 2 rows. The remainder NLL is a mean of log-probabilities: ~1e-6 relative, allowed 1e-4 absolute
# (the means range from 2e-4 to 0.1). Departing agreement is an argmax like accuracy: 2 rows' worth.
ROWS_TOL = 2 / 112
NLL_TOL = 1e-4


def test_the_shipped_model_has_the_premise_and_its_manifest_figures(tmp_path):
    """The world's premise (recipe/atesd/toy/shipped.py::premise_failures, docs/toy.md) on the model every
    checkout installs, and its figures equal those its manifest recorded where it was built, within the
    bounds above: this test asserts the same model on every CPU."""
    from recipe.atesd.data.manifest import verify
    from recipe.atesd.toy import shipped

    model = shipped.install(tmp_path / "toy-qwen3")
    recorded = verify(model)["figures"]
    figures = shipped.measure(model)
    print(json.dumps(figures, indent=1))
    assert shipped.premise_failures(figures) == []
    assert figures["student"]["accuracy"] == pytest.approx(recorded["student"]["accuracy"], abs=ROWS_TOL)
    for alpha, fig in recorded["teacher"].items():
        measured = figures["teacher"][alpha]
        assert measured["accuracy"] == pytest.approx(fig["accuracy"], abs=ROWS_TOL), alpha
        assert measured["remainder_nll"] == pytest.approx(fig["remainder_nll"], abs=NLL_TOL), alpha
        assert measured["departing_agreement"] == pytest.approx(fig["departing_agreement"], abs=ROWS_TOL), (
            alpha
        )


def test_rebuild_measures_writes_a_manifest_and_says_whether_the_premise_holds(tmp_path, capsys):
    """``make toy-build``'s command on a 2-step build: it pretrains, measures, writes the rebuilt model's own
    manifest (verifiable, with the build's command and CPU), prints the figures beside the shipped model's,
    and — an untrained model has no premise — says so and exits 1."""
    from recipe.atesd.data.manifest import verify
    from recipe.atesd.toy import shipped

    out = tmp_path / "rebuilt"
    with pytest.raises(SystemExit) as stop:
        shipped.main(["rebuild", "--steps", "2", "--out", str(out)])
    assert stop.value.code == 1
    manifest = verify(out)
    assert manifest["build"]["spec_fields"]["steps"] == 2 and "--steps 2" in manifest["build"]["command"]
    assert manifest["build"]["cpu"] and manifest["build"]["torch"]
    text = capsys.readouterr().out
    assert "other bytes than the shipped model" in text and "c_T(α=1.0) accuracy" in text
    assert "the world's premise on the rebuilt model" in text and "FAILS" in text
    with pytest.raises(SystemExit):  # an existing --out is refused, never overwritten
        shipped.main(["rebuild", "--steps", "2", "--out", str(out)])
