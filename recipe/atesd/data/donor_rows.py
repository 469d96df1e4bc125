"""The donor rows of the ``other_reference`` teacher context, read from the run's parquet files.

Targets are every training row and every probe row (the probe's g scores the teacher's view of probe rows too);
donors are training rows, paired by ``recipe/atesd/method/donors.py::pair_donors`` with
``teacher_prompt.donor_seed``. The driver records the pairing in the run (``DONORS_FILE`` in the checkpoint root,
``recipe/atesd/glue/trainer.py``); each teacher worker computes the same pairing and shows the donor's texts.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from recipe.atesd.method.donors import pair_donors

DONORS_FILE = "donors.json"


def _rows(paths) -> list[dict]:
    rows = []
    for path in [paths] if isinstance(paths, str) else list(paths):
        for i, info in enumerate(
            pq.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist()
        ):
            if (
                not info
                or not info.get("id")
                or not info.get("problem")
                or not info.get("reference_solution")
            ):
                raise ValueError(f"{path}: row #{i} lacks extra_info.id / problem / reference_solution")
            rows.append(info)
    return rows


def donor_rows(train_files, probe_path: str | None, seed: int) -> dict[str, dict]:
    """``{target row id: {"donor_id", "donor_problem", "donor_reference_solution"}}`` for every training and
    probe row (a probe row that is also a training row id appears once)."""
    train = _rows(train_files)
    targets = {r["id"]: r for r in train}
    for r in _rows(probe_path) if probe_path else []:
        targets.setdefault(r["id"], r)
    by_id = {r["id"]: r for r in train}
    pairing = pair_donors(
        [(i, r["problem"]) for i, r in targets.items()], [(r["id"], r["problem"]) for r in train], seed
    )
    return {
        target: {
            "donor_id": donor,
            "donor_problem": by_id[donor]["problem"],
            "donor_reference_solution": by_id[donor]["reference_solution"],
        }
        for target, donor in pairing.items()
    }
