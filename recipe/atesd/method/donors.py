"""Donor pairing for the ``other_reference`` teacher context (OP2SD, arXiv 2608.09228; docs/method.md §2.5).

Every target row (a training row, or a probe row) is shown one *unrelated* worked example: another training
problem and its reference solution, never one with the same problem text. The pairing is a pure function of the
target ids and problems, the donor pool and a seed — so the driver (which records it in the run) and every
teacher worker (which shows it) compute the same one, and a resumed run recomputes it instead of storing it:

    order the pool by a seeded shuffle; walk the targets in a seeded order; target number p takes pool entry
    (p + j) mod |pool| for the smallest j ≥ 0 whose problem text differs from the target's.

Pool entries are thus used near-uniformly (each |targets|/|pool| times, ± the skips). Pure Python.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def pair_donors(
    targets: Sequence[tuple[str, str]], pool: Sequence[tuple[str, str]], seed: int
) -> dict[str, str]:
    """``{target id: donor id}`` for ``targets`` = [(id, problem)], donors from ``pool`` = [(id, problem)].

    ValueError when the pool is empty, when ids repeat, or when a target's problem text is the only text in
    the pool (no different donor exists)."""
    for name, rows in (("targets", targets), ("pool", pool)):
        ids = [row_id for row_id, _ in rows]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise ValueError(f"pair_donors: {name} repeat row ids {dup}")
    if not pool:
        raise ValueError("pair_donors: the donor pool (the training rows) is empty")
    rng = random.Random(f"op2sd-donors/{int(seed)}")
    donors = list(pool)
    rng.shuffle(donors)
    order = list(targets)
    rng.shuffle(order)
    pairing = {}
    for p, (target_id, problem) in enumerate(order):
        for j in range(len(donors)):
            donor_id, donor_problem = donors[(p + j) % len(donors)]
            if donor_problem.strip() != problem.strip():
                pairing[target_id] = donor_id
                break
        else:
            raise ValueError(
                f"pair_donors: row id {target_id!r}: every donor in the pool has its problem text; "
                "other_reference needs a pool with at least two different problems"
            )
    return pairing
