"""The probe set behind the controller's progress signals (docs/method.md §2.2), tokenised once.

- ℓ (progress): the student's mean per-token NLL of the reference solutions, scored as the
  response to the *student* prompt ``c_S``. Lower is better; the reward pays for decreases.
- g (teacher grounding): the mean per-token log-probability that the exposure-conditioned
  teacher assigns to the *unrevealed remainder* of each reference, scored as the response to
  ``c_T(α)``. At α = 1 nothing is unrevealed and g is 0 by definition.

Rows are a fixed held-out slice of training rows (``prepare_train`` writes ``probe.parquet``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from recipe.atesd.method.prompts import TeacherPromptConfig, row_teacher_prompt, student_prompt_ids

REQUIRED_EXTRA_INFO = ("id", "problem", "reference_solution", "answer")
"""The ``extra_info`` fields every training and probe row carries (``recipe/atesd/data/schema.py`` writes them;
:meth:`ProbeSet.load` and ``recipe/atesd/glue/config_check.py::check_reference_rows`` require them)."""


@dataclass
class ProbeChunk:
    """One forward's worth of probe rows. ``counted[i]`` is False for a padding row (a copy of probe row 0
    that makes every rank run the same number of forwards, see :meth:`ProbeSet.shard`)."""

    rows: list[dict]
    student_prompts: list[list[int]]
    references: list[list[int]]
    counted: list[bool]


class ProbeSet:
    def __init__(self, rows: list[dict], tokenizer, prompt_cfg: TeacherPromptConfig):
        if not rows:
            raise ValueError("probe set is empty")
        self.rows = rows
        self.tokenizer = tokenizer
        self.prompt_cfg = prompt_cfg
        self.student_prompts = [student_prompt_ids(tokenizer, r["problem"], prompt_cfg) for r in rows]
        self.references = [self._encode(r["reference_solution"]) for r in rows]

    @classmethod
    def load(cls, path: str, tokenizer, prompt_cfg: TeacherPromptConfig, size: int | None = None) -> ProbeSet:
        """The first ``size`` rows (all when None) of a ``prepare_train`` probe parquet."""
        frame = pd.read_parquet(path)
        if size is not None:
            if size < 1 or size > len(frame):
                raise ValueError(f"probe.size={size}: {path} has {len(frame)} rows")
            frame = frame.iloc[:size]
        if "extra_info" not in frame.columns:
            raise ValueError(f"probe file {path} has no 'extra_info' column (run prepare_train)")
        rows = []
        for i, info in enumerate(frame["extra_info"]):
            for key in REQUIRED_EXTRA_INFO:
                if not info.get(key):
                    raise ValueError(f"probe file {path} row {i}: extra_info.{key} is missing or empty")
            rows.append(dict(info))
        return cls(rows, tokenizer, prompt_cfg)

    def shard(self, rank: int, world: int, batch_size: int) -> Iterator[ProbeChunk]:
        """This rank's rows (``rank::world``) in batches of ``batch_size``, padded so that EVERY rank yields
        the same number of equally sized chunks: ⌈⌈n/world⌉/batch_size⌉ chunks of
        min(batch_size, ⌈n/world⌉) rows. Each probe forward is an FSDP collective, so a rank with fewer
        forwards would leave the others waiting forever (e.g. 8 probe rows on 16 GPUs). Padding rows repeat
        row 0 with ``counted=False``; every real row is counted on exactly one rank."""
        if world < 1 or not 0 <= rank < world or batch_size < 1:
            raise ValueError(f"shard(rank={rank}, world={world}, batch_size={batch_size}): invalid")
        per_rank = -(-len(self.rows) // world)
        mine = list(range(rank, len(self.rows), world))
        idx = mine + [0] * (per_rank - len(mine))
        counted = [True] * len(mine) + [False] * (per_rank - len(mine))
        for s in range(0, per_rank, batch_size):
            part = idx[s : s + batch_size]
            yield ProbeChunk(
                rows=[self.rows[i] for i in part],
                student_prompts=[self.student_prompts[i] for i in part],
                references=[self.references[i] for i in part],
                counted=counted[s : s + batch_size],
            )

    def teacher_view(
        self, chunk: ProbeChunk, alphas: Sequence[float], max_len: int | None
    ) -> tuple[list, list]:
        """Teacher prompts ``c_T(α_r)``, α_r = ``alphas[r]`` for row r of the chunk, and the token ids of each
        reference's unrevealed remainder."""
        if len(alphas) != len(chunk.rows):
            raise ValueError(f"teacher_view: {len(alphas)} alphas for {len(chunk.rows)} probe rows")
        prompts, rests = [], []
        for row, alpha in zip(chunk.rows, alphas, strict=True):
            prompt = row_teacher_prompt(self.tokenizer, row, alpha, self.prompt_cfg, max_len)
            prompts.append(prompt.ids)
            rest = prompt.revealed.remainder
            rests.append(self._encode(rest) if rest else [])
        return prompts, rests

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]
