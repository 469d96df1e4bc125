"""Teacher and student prompts: how much of the reference solution the teacher sees (docs/method.md §1, §2.1).

α itself is chosen by the controller (``recipe/atesd/method/controller/``); this module turns (problem,
reference, α) into token ids. Pure Python: no verl, Ray or torch import. A Hugging Face tokenizer is passed in duck-typed
(it needs ``apply_chat_template(messages, tokenize=False, ...)`` and ``encode(text, add_special_tokens=False)``).

Segments keep their trailing whitespace, so ``"".join(split_segments(ref, s)) == ref`` for every segmenter.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from recipe.atesd.method.answer import last_box


@dataclass(frozen=True)
class TeacherContext:
    """A registered way to build the teacher's context c_T of one row (``teacher_prompt.teacher_context``):
    ``build(tokenizer, row, alpha, cfg, max_len) -> TeacherPrompt`` with ``row`` the row's ``extra_info``;
    ``needs``: the ``extra_info`` fields it reads (checked per row, error naming the field); ``uses_alpha``:
    whether the controller's α changes what it builds; ``check(cfg)``: refuses (ValueError naming the keys) a
    ``teacher_prompt`` config the context makes no sense with (None: any)."""

    build: Callable[..., TeacherPrompt]
    needs: tuple[str, ...]
    uses_alpha: bool
    check: Callable[[TeacherPromptConfig], None] | None = None


TEACHER_CONTEXTS: dict[str, TeacherContext] = {}
"""Registered teacher contexts by name (entries at the bottom of this file). Adding one is one
:func:`register_teacher_context` function here plus its line in docs/config.md and docs/method.md."""


def register_teacher_context(name: str, *, needs: tuple[str, ...], uses_alpha: bool, check=None):
    """Register ``build(tokenizer, row, alpha, cfg, max_len)`` as teacher context ``name``."""

    def deco(build):
        if name in TEACHER_CONTEXTS:
            raise ValueError(f"teacher context {name!r} is already registered")
        TEACHER_CONTEXTS[name] = TeacherContext(build, tuple(needs), uses_alpha, check)
        return build

    return deco


# Segmenters by name (``teacher_prompt.segmenter``): the separator pattern between segments. A cut is placed
# at the END of each separator match, so separators stay with the preceding segment.
SEGMENTERS: dict[str, re.Pattern] = {}


def register_segmenter(name: str, separator: str) -> None:
    """Add a segmenter: ``separator`` is a regex matching the whitespace/punctuation between segments."""
    if name in SEGMENTERS:
        raise ValueError(f"segmenter {name!r} is already registered")
    SEGMENTERS[name] = re.compile(separator)


register_segmenter("paragraph", r"\n[ \t]*\n\s*")  # one or more blank lines
register_segmenter("lines", r"\n\s*")
register_segmenter("sentences", r"(?<=[.!?])\s+|\n\s*")  # end punctuation + whitespace, or a line break
register_segmenter("tokens", r"\s+")

DEFAULT_STUDENT_TEMPLATE = (
    "Problem: {problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
)
DEFAULT_TEACHER_TEMPLATE = (
    "Problem: {problem}\n\n"
    "Here is a reference solution to this problem:\n{reference_block}\n\n"
    "After understanding the reference solution, solve the problem on your own: reason step by step "
    "to the same final answer, and put your final answer within \\boxed{{}}."
)
DEFAULT_REFERENCE_BLOCK_TEMPLATE = (
    "=== Reference Solution Begin ===\n{reference}\n=== Reference Solution End ==="
)
DEFAULT_ANSWER_STATEMENT_TEMPLATE = "Final answer: \\boxed{{{answer}}}"
# other_reference (OP2SD's structure, arXiv 2608.09228; our wording): the target problem, then an unrelated
# worked example, marked as no hint, then the instruction to solve the target independently.
DEFAULT_WORKED_EXAMPLE_TEMPLATE = (
    "Problem: {problem}\n\n"
    "Below is a worked example of a different, unrelated problem. It only illustrates careful step-by-step "
    "reasoning; it is not a solution or a hint for the problem above, so do not reuse its answer or its "
    "numbers.\n\n"
    "=== Unrelated Example Problem Begin ===\n{example_problem}\n=== Unrelated Example Problem End ===\n"
    "=== Unrelated Example Solution Begin ===\n{example_solution}\n=== Unrelated Example Solution End ===\n\n"
    "Now solve the problem above on your own: reason step by step, verify your reasoning, and put your final "
    "answer within \\boxed{{}}."
)

# The ``incomplete`` context's note after a cut reference (AVSD's wording, src/avsd/math/privileged_views.py).
DEFAULT_INCOMPLETE_MARKER = (
    "[The reference above is incomplete and may omit later steps or the final answer.]"
)

# Template field -> the exact set of format fields it must use.
_TEMPLATE_FIELDS = {
    "student_template": {"problem"},
    "teacher_template": {"problem", "reference_block"},
    "reference_block_template": {"reference"},
    "answer_statement_template": {"answer"},
    "worked_example_template": {"problem", "example_problem", "example_solution"},
}


@dataclass
class TeacherPromptConfig:
    """How c_S and c_T(α) are built (docs/method.md §1, §2.1). Mirrored by ``config/teacher_prompt/default.yaml``.

    max_length: token budget of the teacher prompt [chosen 4096]; over it, revealed segments are cut from
    the end, never the answer statement (:func:`teacher_prompt_ids`); None = no limit.
    worked_example_template, donor_seed: ``other_reference``'s user turn and the seed of its donor pairing
    (``recipe/atesd/method/donors.py``).
    incomplete_marker: the note the ``incomplete`` context puts after a cut reference (AVSD's partial view).
    """

    segmenter: str = "paragraph"
    keep_final_answer: bool = True
    student_template: str = DEFAULT_STUDENT_TEMPLATE
    teacher_template: str = DEFAULT_TEACHER_TEMPLATE
    reference_block_template: str = DEFAULT_REFERENCE_BLOCK_TEMPLATE
    answer_statement_template: str = DEFAULT_ANSWER_STATEMENT_TEMPLATE
    teacher_context: str = "privileged"
    max_length: int | None = 4096
    worked_example_template: str = DEFAULT_WORKED_EXAMPLE_TEMPLATE
    donor_seed: int = 0
    incomplete_marker: str = DEFAULT_INCOMPLETE_MARKER

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad key."""
        if self.teacher_context not in TEACHER_CONTEXTS:
            raise ValueError(
                f"teacher_prompt.teacher_context={self.teacher_context!r} unknown; expected one of {sorted(TEACHER_CONTEXTS)}"
            )
        _check_segmenter(self.segmenter)
        if not isinstance(self.keep_final_answer, bool):
            raise ValueError(
                f"teacher_prompt.keep_final_answer must be a bool, got {self.keep_final_answer!r}"
            )
        for key, expected in _TEMPLATE_FIELDS.items():
            _check_template(getattr(self, key), expected, f"teacher_prompt.{key}")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not self.max_length >= 1):
            raise ValueError(f"teacher_prompt.max_length must be >= 1 or None, got {self.max_length!r}")
        if isinstance(self.donor_seed, bool) or not isinstance(self.donor_seed, int) or self.donor_seed < 0:
            raise ValueError(f"teacher_prompt.donor_seed must be an int >= 0, got {self.donor_seed!r}")
        _check_text(self.incomplete_marker, "teacher_prompt.incomplete_marker")
        context_check = TEACHER_CONTEXTS[self.teacher_context].check
        if context_check is not None:
            context_check(self)


@dataclass(frozen=True)
class Revealed:
    """Teacher-visible part of a reference.

    text: the reference block content; remainder: the unrevealed segments joined (stripped), used for the
    teacher-grounding signal g (docs/method.md §2.2); n_revealed / n_segments: segment counts.
    """

    text: str
    remainder: str
    n_revealed: int
    n_segments: int


@dataclass(frozen=True)
class TeacherPrompt:
    """Tokenised teacher context: ``n_cut_segments`` revealed segments were dropped to fit ``max_len``."""

    ids: list[int]
    revealed: Revealed
    n_cut_segments: int


def _check_alpha(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise ValueError(f"{name}={value} is outside [0, 1]")


def _check_segmenter(segmenter: str) -> None:
    if segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter={segmenter!r} unknown; expected one of {sorted(SEGMENTERS)}")


def _check_template(template: object, expected: set[str], name: str) -> None:
    if not isinstance(template, str):
        raise ValueError(f"{name} must be a string, got {type(template).__name__}")
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ValueError(
            f"{name} is not a valid format string ({err}); write literal braces as {{{{ }}}}"
        ) from err
    if used != expected:
        raise ValueError(f"{name} uses fields {sorted(used)}; expected exactly {sorted(expected)}")


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r:.80}")
    return value


def split_segments(reference: str, segmenter: str = "paragraph") -> list[str]:
    """Split ``reference`` into segments (docs/method.md §2.1): paragraph | lines | sentences | tokens.

    Each segment keeps its trailing separator whitespace and holds non-whitespace text (leading whitespace of
    the reference goes to the first segment), so the segments join back to ``reference`` exactly.
    """
    _check_text(reference, "reference")
    _check_segmenter(segmenter)
    start = len(reference) - len(reference.lstrip())
    cuts = [m.end() for m in SEGMENTERS[segmenter].finditer(reference, start) if m.end() < len(reference)]
    bounds = [0, *cuts, len(reference)]
    return [reference[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _render(segments: list[str], k: int, statement: str | None) -> Revealed:
    """Reveal the first k of m segments (+ the answer statement); k == m is the unchanged reference."""
    m = len(segments)
    if k == m:
        return Revealed("".join(segments), "", m, m)
    parts = ["".join(segments[:k]).rstrip(), statement or ""]
    return Revealed("\n\n".join(p for p in parts if p), "".join(segments[k:]).strip(), k, m)


def _answer_statement(reference: str, answer: str | None, template: str) -> str:
    if answer is None:
        answer = last_box(reference).answer
        if answer is None:
            raise ValueError(
                "reference has no extractable final answer (no \\boxed{...}) and keep_final_answer is set; "
                "pass answer=..."
            )
    return template.format(answer=_check_text(answer, "answer").strip())


def reveal(
    reference: str,
    alpha: float,
    segmenter: str = "paragraph",
    keep_final_answer: bool = True,
    answer: str | None = None,
    answer_statement_template: str = DEFAULT_ANSWER_STATEMENT_TEMPLATE,
) -> Revealed:
    """Reveal the first ⌊α·m⌋ of the m segments, plus the final-answer statement (docs/method.md §2.1).

    α = 1 returns the reference unchanged (OPSD); α = 0 only the answer statement (empty text when
    ``keep_final_answer`` is false). The answer is ``answer`` or, if None, the last ``\\boxed{}`` of the
    reference. ⌊·⌋ uses a 1e-9 tolerance so that e.g. α=0.29, m=100 reveals 29 segments.
    """
    _check_alpha(alpha, "alpha")
    segments = split_segments(reference, segmenter)
    statement = None
    if keep_final_answer:
        _check_template(answer_statement_template, {"answer"}, "answer_statement_template")
        statement = _answer_statement(reference, answer, answer_statement_template)
    k = min(len(segments), math.floor(alpha * len(segments) + 1e-9))
    if alpha < 1.0 and k == len(segments):
        k -= 1  # only α = 1 is the full reference
    return _render(segments, k, statement)


def build_student_messages(problem: str, cfg: TeacherPromptConfig) -> list[dict]:
    """Student user turn c_S (docs/method.md §1): ``cfg.student_template`` filled with the problem."""
    _check_text(problem, "problem")
    return [{"role": "user", "content": cfg.student_template.format(problem=problem)}]


def build_teacher_messages(problem: str, revealed_text: str, cfg: TeacherPromptConfig) -> list[dict]:
    """Teacher user turn c_T (docs/method.md §1): problem + delimited reference block + transition instruction."""
    _check_text(problem, "problem")
    if not isinstance(revealed_text, str):
        raise ValueError(f"revealed_text must be a string, got {type(revealed_text).__name__}")
    block = cfg.reference_block_template.format(reference=revealed_text)
    return [{"role": "user", "content": cfg.teacher_template.format(problem=problem, reference_block=block)}]


def chat_ids(tokenizer, messages: list[dict], enable_thinking: bool) -> list[int]:
    """Chat template rendered to text, then encoded without extra special tokens (as verl's RLHFDataset)."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def student_prompt_ids(tokenizer, problem: str, cfg: TeacherPromptConfig) -> list[int]:
    """Token ids of c_S: chat template, thinking OFF, generation prompt appended (docs/method.md §1)."""
    return chat_ids(tokenizer, build_student_messages(problem, cfg), enable_thinking=False)


def teacher_prompt_ids(
    tokenizer,
    problem: str,
    reference: str,
    alpha: float,
    cfg: TeacherPromptConfig,
    max_len: int | None = None,
    answer: str | None = None,
) -> TeacherPrompt:
    """Token ids of c_T with thinking ON (docs/method.md §1, §2.1), revealing ``alpha`` of ``reference``.

    If the prompt exceeds ``max_len`` tokens, revealed segments are dropped from the end of the revealed part
    (never the final-answer statement) until it fits; the number dropped is ``n_cut_segments``. The largest
    fitting count is found by bisection (prompt length grows with the number of revealed segments). If even
    zero revealed segments do not fit, ValueError names the length.

    ``cfg.teacher_context`` names the registered builder (:data:`TEACHER_CONTEXTS`): ``privileged`` reveals α of
    the reference as above; ``student`` is the sanity switch of docs/method.md §1.
    """
    row = {"problem": problem, "reference_solution": reference, "answer": answer}
    return row_teacher_prompt(tokenizer, row, alpha, cfg, max_len)


def row_teacher_prompt(
    tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len=None
) -> TeacherPrompt:
    """c_T of one data row (its ``extra_info``) by the registered ``cfg.teacher_context``: the workers' and the
    probe's call. ValueError naming the row id and the field when the row lacks a field the context needs."""
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0):
        raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
    context = TEACHER_CONTEXTS[cfg.teacher_context]
    missing = [key for key in context.needs if key != "answer" and row.get(key) is None]
    if missing:
        raise ValueError(
            f"row id {row.get('id')!r}: teacher_prompt.teacher_context={cfg.teacher_context!r} needs extra_info "
            f"field(s) {missing}"
        )
    return context.build(tokenizer, row, alpha, cfg, max_len)


# ---------------------------------------------------------------------- the teacher contexts


@register_teacher_context("student", needs=("problem", "reference_solution"), uses_alpha=False)
def _student_context(tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len) -> TeacherPrompt:
    """c_T = c_S: the student prompt, nothing revealed, the whole reference is the remainder; with equal weights
    the loss is exactly 0 (the zero-loss sanity switch, docs/method.md §1)."""
    reference = _check_text(row["reference_solution"], "reference")
    segments = split_segments(reference, cfg.segmenter)
    return TeacherPrompt(
        student_prompt_ids(tokenizer, row["problem"], cfg),
        Revealed("", reference.strip(), 0, len(segments)),
        0,
    )


@register_teacher_context("privileged", needs=("problem", "reference_solution", "answer"), uses_alpha=True)
def _privileged_context(
    tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len
) -> TeacherPrompt:
    """c_T(α): the problem and the first ⌊α·m⌋ reference segments plus the answer statement, thinking on, cut to
    ``max_len`` (:func:`teacher_prompt_ids`; docs/method.md §1, §2.1)."""
    return _revealing_context(tokenizer, row, alpha, cfg, max_len, cfg.keep_final_answer, marker=None)


def _revealing_context(
    tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len, keep_answer: bool, marker
) -> TeacherPrompt:
    """The first ⌊α·m⌋ reference segments (+ the answer statement when ``keep_answer``; + ``marker`` after the
    revealed text when something is left unrevealed) in the teacher template, thinking on; revealed segments
    are cut from the end until the prompt fits ``max_len`` (the answer statement never)."""
    problem, reference, answer = row["problem"], row["reference_solution"], row.get("answer")
    revealed = reveal(reference, alpha, cfg.segmenter, keep_answer, answer, cfg.answer_statement_template)

    def ids_for(rev: Revealed) -> list[int]:
        text = "\n\n".join(p for p in (rev.text, marker if rev.remainder else None) if p)
        return chat_ids(tokenizer, build_teacher_messages(problem, text, cfg), enable_thinking=True)

    ids = ids_for(revealed)
    if max_len is None or len(ids) <= max_len:
        return TeacherPrompt(ids, revealed, 0)
    segments = split_segments(reference, cfg.segmenter)
    statement = _answer_statement(reference, answer, cfg.answer_statement_template) if keep_answer else None
    shortest = _render(segments, 0, statement)
    shortest_ids = ids_for(shortest)
    if len(shortest_ids) > max_len:
        raise ValueError(
            f"teacher prompt is {len(shortest_ids)} tokens with no reference segment revealed, "
            f"over max_len={max_len}"
        )
    best, best_ids = shortest, shortest_ids
    lo, hi = 1, revealed.n_revealed - 1  # ``revealed`` itself does not fit
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = _render(segments, mid, statement)
        candidate_ids = ids_for(candidate)
        if len(candidate_ids) <= max_len:
            best, best_ids, lo = candidate, candidate_ids, mid + 1
        else:
            hi = mid - 1
    return TeacherPrompt(best_ids, best, revealed.n_revealed - best.n_revealed)


@register_teacher_context("incomplete", needs=("problem", "reference_solution"), uses_alpha=True)
def _incomplete_context(
    tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len
) -> TeacherPrompt:
    """The first ⌊α·m⌋ reference segments, no answer statement, then ``cfg.incomplete_marker``: AVSD's partial
    view at α = 0.5 (theirs keeps ⌈m/2⌉ segments and deletes the reference's last ``\\boxed{}``; here the
    cut segments carry the answer line whenever it ends the reference). α = 1 is the whole reference, unmarked."""
    return _revealing_context(tokenizer, row, alpha, cfg, max_len, False, marker=cfg.incomplete_marker)


def _answer_kept(cfg: TeacherPromptConfig) -> None:
    if not cfg.keep_final_answer:
        raise ValueError(
            "teacher_prompt.teacher_context=answer_only shows the answer statement only: it needs "
            "teacher_prompt.keep_final_answer=true (else the teacher sees nothing privileged: use reference_free)"
        )


@register_teacher_context(
    "answer_only", needs=("problem", "reference_solution", "answer"), uses_alpha=False, check=_answer_kept
)
def _answer_only_context(
    tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len
) -> TeacherPrompt:
    """c_T = the teacher template with the answer statement only: exactly ``privileged`` at α = 0, whatever the
    controller's α (docs/method.md §2.5)."""
    return _privileged_context(tokenizer, row, 0.0, cfg, max_len)


@register_teacher_context("reference_free", needs=("problem", "reference_solution"), uses_alpha=False)
def _reference_free_context(
    tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len
) -> TeacherPrompt:
    """c_T = the student's own user turn (``student_template``) with thinking ON and nothing privileged: the
    reference-free teacher of arXiv 2609.20612 (docs/method.md §2.5). The whole reference is the unrevealed
    remainder (the probe's g scores it)."""
    reference = _check_text(row["reference_solution"], "reference")
    ids = chat_ids(tokenizer, build_student_messages(row["problem"], cfg), enable_thinking=True)
    if max_len is not None and len(ids) > max_len:
        raise ValueError(f"teacher prompt is {len(ids)} tokens (reference_free), over max_len={max_len}")
    return TeacherPrompt(
        ids, Revealed("", reference.strip(), 0, len(split_segments(reference, cfg.segmenter))), 0
    )


@register_teacher_context(
    "other_reference",
    needs=("problem", "reference_solution", "donor_problem", "donor_reference_solution"),
    uses_alpha=False,
)
def _other_reference_context(
    tokenizer, row: dict, alpha: float, cfg: TeacherPromptConfig, max_len
) -> TeacherPrompt:
    """c_T = ``worked_example_template``: the problem and an unrelated worked example (the donor row's problem and
    reference solution, paired by ``method/donors.py``), thinking on; the target's own reference is never shown
    and is the whole unrevealed rest (OP2SD, arXiv 2608.09228; docs/method.md §2.5)."""
    reference = _check_text(row["reference_solution"], "reference")
    user = cfg.worked_example_template.format(
        problem=_check_text(row["problem"], "problem"),
        example_problem=_check_text(row["donor_problem"], "donor_problem"),
        example_solution=_check_text(row["donor_reference_solution"], "donor_reference_solution"),
    )
    ids = chat_ids(tokenizer, [{"role": "user", "content": user}], enable_thinking=True)
    if max_len is not None and len(ids) > max_len:
        raise ValueError(
            f"teacher prompt is {len(ids)} tokens (other_reference, donor of row {row.get('id')!r}), "
            f"over max_len={max_len}"
        )
    return TeacherPrompt(
        ids, Revealed("", reference.strip(), 0, len(split_segments(reference, cfg.segmenter))), 0
    )
