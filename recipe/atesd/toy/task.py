r"""Toy reasoning task: add k single-digit numbers modulo 10 (k = difficulty, 2..8).

Formats (every character costs sequence length, so they are short)::

    problem              add 3 7 5 2 mod 10
    reference_solution   3+7=0            one step per line: running partial sum mod 10
                         0+5=5
                         5+2=7
                         \boxed{7}        last line: the answer, in the last \boxed{}
    answer               "7"              (sum of the terms) mod 10, as a digit string

A solution has k - 1 step lines ``s+t=(s + t) mod 10`` (no spaces: 6 tokens a line with the toy tokenizer), where s starts as the first term taken and t runs
through the remaining terms, then ``\boxed{answer}``. Terms are taken left to right (``order="ltr"``) or
right to left (``order="rtl"``): both reach the same answer, but their step lines differ unless the term tuple
is a palindrome, so a correct student can disagree step by step with the reference. The reference order is
drawn per problem from the seed.

Splits are disjoint by construction: :func:`split_of` maps a term tuple to train / probe / eval by a
SHA-256 hash of its problem text (no seed involved), and :func:`generate` only emits tuples whose hash
lands in the requested split. The same problem can therefore never appear in two splits, under any seed.

Prompt templates (:func:`prompt_config`, fields of ``recipe/atesd/method/prompts.py``'s TeacherPromptConfig,
``lines`` segmenter so each revealed segment is one step line)::

    student  add 3 7 5 2 mod 10
    teacher  add 3 7 5 2 mod 10\nref\n<revealed reference>\nend

Pure Python: the standard library and ``recipe/atesd/method/prompts.py`` (itself stdlib only; no torch,
verl or Ray).
"""

from __future__ import annotations

import hashlib
import random
from functools import cache

from recipe.atesd.method.prompts import TeacherPromptConfig

MODULUS = 10
MIN_DIFFICULTY, MAX_DIFFICULTY = 2, 8
DIFFICULTIES = tuple(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))
ORDERS = ("ltr", "rtl")
SPLITS = ("train", "probe", "eval")
# Split of a term tuple: its hash bucket in [0, 100) against these cumulative upper bounds.
SPLIT_BUCKETS = {"train": 70, "probe": 85, "eval": 100}
HASH_BUCKETS = 100
# Difficulties with at most this many term tuples (10**k) are enumerated; larger ones are sampled.
ENUMERATE_LIMIT = 10**4

STUDENT_TEMPLATE = "{problem}"
TEACHER_TEMPLATE = "{problem}\n{reference_block}"
REFERENCE_BLOCK_TEMPLATE = "ref\n{reference}\nend"
ANSWER_STATEMENT_TEMPLATE = "\\boxed{{{answer}}}"
# other_reference (docs/method.md §2.5): another problem and its solution in the reference block
WORKED_EXAMPLE_TEMPLATE = "{problem}\nref\n{example_problem}\n{example_solution}\nend"

# Every word the world's texts and templates use (the tokenizer gives each one a single token).
WORDS = ("add", "mod", "ref", "end", "\\boxed")


def prompt_config(max_length: int | None = 512) -> TeacherPromptConfig:
    """The toy world's TeacherPromptConfig: ``lines`` segmenter and the short templates above."""
    return TeacherPromptConfig(
        segmenter="lines",
        student_template=STUDENT_TEMPLATE,
        teacher_template=TEACHER_TEMPLATE,
        reference_block_template=REFERENCE_BLOCK_TEMPLATE,
        answer_statement_template=ANSWER_STATEMENT_TEMPLATE,
        max_length=max_length,
        worked_example_template=WORKED_EXAMPLE_TEMPLATE,
    )


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_terms(terms: object) -> tuple[int, ...]:
    """The terms as a tuple; ValueError unless a list/tuple of at least 2 digits 0..9."""
    if not isinstance(terms, list | tuple) or len(terms) < 2:
        raise ValueError(f"terms must be a list or tuple of at least 2 digits, got {terms!r}")
    for i, term in enumerate(terms):
        _check_int(term, f"terms[{i}]", 0, MODULUS - 1)
    return tuple(terms)


def problem_text(terms: tuple[int, ...] | list[int]) -> str:
    """``add t1 t2 ... tk mod 10``."""
    return "add " + " ".join(map(str, check_terms(terms))) + f" mod {MODULUS}"


def parse_problem(text: str) -> tuple[int, ...]:
    """Inverse of :func:`problem_text`; ValueError naming ``problem`` when ``text`` is not of that form."""
    words = text.split(" ") if isinstance(text, str) else []
    if len(words) < 5 or words[0] != "add" or words[-2:] != ["mod", str(MODULUS)]:
        raise ValueError(f"problem must look like 'add 3 7 mod {MODULUS}', got {text!r:.80}")
    digits = words[1:-2]
    if not all(len(d) == 1 and d.isdigit() for d in digits):
        raise ValueError(f"problem terms must be single digits, got {text!r:.80}")
    return tuple(int(d) for d in digits)


def answer_of(terms: tuple[int, ...] | list[int]) -> str:
    """``str(sum(terms) mod 10)``."""
    return str(sum(check_terms(terms)) % MODULUS)


def solution(terms: tuple[int, ...] | list[int], order: str = "ltr") -> str:
    r"""Solution text: k - 1 lines ``s+t=(s + t) mod 10`` in ``order``, then ``\boxed{answer}``.

    ``order="ltr"`` takes terms left to right, ``"rtl"`` right to left. No trailing newline.
    """
    terms = check_terms(terms)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    seq = terms if order == "ltr" else terms[::-1]
    lines, total = [], seq[0]
    for term in seq[1:]:
        new = (total + term) % MODULUS
        lines.append(f"{total}+{term}={new}")
        total = new
    lines.append(f"\\boxed{{{total}}}")
    return "\n".join(lines)


def all_solutions(terms: tuple[int, ...] | list[int]) -> list[str]:
    """Every valid solution text, one per order in ``ORDERS`` (one text only for a palindromic tuple)."""
    return list(dict.fromkeys(solution(terms, order) for order in ORDERS))


def split_of(terms: tuple[int, ...] | list[int]) -> str:
    """Split of a term tuple: ``sha256(problem_text) mod 100`` against ``SPLIT_BUCKETS`` (70/15/15 %).

    A pure function of the tuple (no seed), so no problem can be generated into two splits.
    """
    digest = hashlib.sha256(problem_text(terms).encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % HASH_BUCKETS
    return next(split for split in SPLITS if bucket < SPLIT_BUCKETS[split])


def _check_difficulties(difficulties: object) -> tuple[int, ...]:
    if not isinstance(difficulties, list | tuple) or not difficulties:
        raise ValueError(f"difficulties must be a non-empty list of ints, got {difficulties!r}")
    for i, k in enumerate(difficulties):
        _check_int(k, f"difficulties[{i}]", MIN_DIFFICULTY, MAX_DIFFICULTY)
    if len(set(difficulties)) != len(difficulties):
        raise ValueError(f"difficulties must not repeat, got {difficulties!r}")
    return tuple(difficulties)


def _counts(n: int, difficulties: tuple[int, ...], split: str) -> dict[int, int]:
    """n spread over the difficulties as evenly as possible (the first ``n mod len`` get one more); in probe and
    eval, a difficulty whose pool holds fewer problems than its share gets its whole pool and the others share the
    rest (eval has 17 problems of difficulty 2, 146 of difficulty 3). More than every pool together: its share,
    for :func:`_pick` to refuse."""
    cap = {
        k: len(_pool(split, k)) if split != "train" and MODULUS**k <= ENUMERATE_LIMIT else None
        for k in difficulties
    }
    counts: dict[int, int] = {}
    left, remaining = list(difficulties), n
    while True:
        base, extra = divmod(remaining, len(left))
        share = {k: base + (i < extra) for i, k in enumerate(left)}
        capped = [k for k in left if cap[k] is not None and share[k] > cap[k]]
        if not capped or len(capped) == len(left):
            break
        for k in capped:
            counts[k] = cap[k]
            remaining -= cap[k]
            left.remove(k)
    counts.update(share)
    return {k: counts[k] for k in difficulties}


def _pick(split: str, k: int, count: int, rng: random.Random) -> list[tuple[int, ...]]:
    """``count`` distinct term tuples of length k in ``split``.

    Small k: the split's whole pool is enumerated and shuffled; when ``count`` exceeds it, train cycles
    through fresh shuffles (repeats), probe/eval raise ValueError. Large k: rejection sampling without repeats.
    """
    if count == 0:
        return []
    if MODULUS**k <= ENUMERATE_LIMIT:
        pool = list(_pool(split, k))
        if count > len(pool) and split != "train":
            raise ValueError(
                f"split {split!r} has only {len(pool)} distinct problems of difficulty {k}, {count} requested"
            )
        picked: list[tuple[int, ...]] = []
        while len(picked) < count:
            rng.shuffle(pool)
            picked.extend(pool[: count - len(picked)])
        return picked
    seen: set[tuple[int, ...]] = set()
    picked = []
    while len(picked) < count:
        terms = tuple(rng.randrange(MODULUS) for _ in range(k))
        if terms not in seen and split_of(terms) == split:
            seen.add(terms)
            picked.append(terms)
    return picked


@cache
def _pool(split: str, k: int) -> tuple[tuple[int, ...], ...]:
    """Every term tuple of length k in ``split``, in lexicographic order (only for ``10**k <= ENUMERATE_LIMIT``)."""
    every = (tuple(int(d) for d in f"{i:0{k}d}") for i in range(MODULUS**k))
    return tuple(t for t in every if split_of(t) == split)


def make_problem(terms: tuple[int, ...] | list[int], order: str, problem_id: str) -> dict:
    """Problem dict: id, problem, reference_solution (in ``order``), answer, difficulty (= k), order."""
    terms = check_terms(terms)
    return {
        "id": problem_id,
        "problem": problem_text(terms),
        "reference_solution": solution(terms, order),
        "answer": answer_of(terms),
        "difficulty": len(terms),
        "order": order,
    }


def generate(
    split: str,
    n: int,
    seed: int = 0,
    difficulties: tuple[int, ...] | list[int] = DIFFICULTIES,
    name: str | None = None,
) -> list[dict]:
    """``n`` problems of ``split``, spread evenly over ``difficulties`` (:func:`_counts`), deterministic in (split,
    n, seed, difficulties, name).

    Problems are distinct within a split (train repeats only once a difficulty's train pool is used up,
    e.g. more than ~70 problems of difficulty 2); each reference order is drawn from the seeded stream; the
    list is shuffled. Ids are ``toy-{name}-s{seed}-{i:05d}``; ``name`` (default: the split) also keys the seeded
    stream, so a second set drawn from one split (the toy world's ``heldout``) has ids and draws of its own.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_int(n, "n", 0)
    _check_int(seed, "seed", 0)
    difficulties = _check_difficulties(difficulties)
    name = name or split
    rng = random.Random(f"toy_sum/{name}/{seed}")
    chosen = [t for k, count in _counts(n, difficulties, split).items() for t in _pick(split, k, count, rng)]
    rng.shuffle(chosen)
    orders = [rng.choice(ORDERS) for _ in chosen]
    return [
        make_problem(terms, order, f"toy-{name}-s{seed}-{i:05d}")
        for i, (terms, order) in enumerate(zip(chosen, orders, strict=True))
    ]
