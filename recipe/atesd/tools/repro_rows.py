"""The toy-world reproduction's rows (issue 13): one record per sweep run, read from its directory.

recipe/atesd/tools/repro_sweep.py writes ``ROOT/<method>/seed<s>/`` (run.json, metrics JSONL, validation
generations, done.json); :func:`discover` lists them (aside directories of restarted runs included),
:func:`run_row` turns one into the ``results.json`` row that recipe/atesd/tools/repro_claims.py,
recipe/atesd/tools/repro_plots.py and recipe/atesd/tools/repro_report.py consume; the row selections they share
(finished runs, the adaptive arms) are at the end. The definitions of every
field (accuracy, KL and top-1 disagreement, wall-time split) are in recipe/atesd/tools/repro_report.py's docstring and
docs/metrics.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from recipe.atesd.tools.run_dirs import DONE, GENERATIONS, INITIAL_STATE, METRICS, RECORD, RUN, STACKS
from recipe.atesd.tools.run_history import read_history
from recipe.atesd.tools.run_report import ALPHA, hold_windows, series, value
from recipe.atesd.tools.summarize import read_metrics, validations, windows
from recipe.atesd.tools.sweep_plans import METHODS, PER_DIFFICULTY

KL, TOP1 = "distill/kl_mean", "distill/top1_disagreement"  # TOP1: the recipe's mismatch (docs/metrics.md)
PROBE_NLL, REWARD, SCORE = "probe/nll", "controller/reward", "critic/score/mean"
STEP_TIME, TEST_TIME = "timing_s/step", "timing_s/testing"
# issue 14: the results.json mode of the arm run with sweep_plans.PER_DIFFICULTY
PER_BUCKET_MODE = "adaptive_per_difficulty"
# step 1's rollouts, compared across the fixed-α runs of a seed: same values = (very likely) the same samples
ROLLOUT = ("response_length/mean", "critic/score/mean")
# issue 14: the per-bucket keys of the PER_BUCKET_MODE arm (docs/metrics.md)
BUCKET_ALPHA = "exposure/alpha_bucket_{k}"
BUCKET_MEANS = {
    "occupancy_per_bucket": "exposure/occupancy_bucket_{k}",
    "train_accuracy_per_bucket": "exposure/accuracy_bucket_{k}",
    "kl_mean_per_bucket": "distill/kl_mean_bucket_{k}",
}
# What :func:`run_row` (and the study report, recipe/atesd/tools/study_report.py) reads of a run: the metric keys
# of a metrics record's ``data`` (prefixes; read_history's attempt boundaries are kept whole) and the fields of a
# validation dump's entries. recipe/atesd/tools/repro_archive.py packs only these: the records stay small.
READ_METRICS = (
    "exposure/",
    "distill/",
    "controller/",
    "probe/",
    "val-core/",
    STEP_TIME,
    TEST_TIME,
    SCORE,
    *ROLLOUT,
    "training/global_step",
)
READ_GENERATION = ("input", "score")
_BUCKET_ALPHA = re.compile(r"exposure/alpha_bucket_(\d+)")
_SEED_DIR = re.compile(r"seed(\d+)")
_ASIDE_DIR = re.compile(r"seed(\d+)\.incomplete-.+")


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class Found:
    """The sweep's run directories (method, seed, path) and the incomplete attempts moved aside."""

    runs: list[tuple[str, int, Path]]
    aside: list[Path]


def discover(root: str | Path, methods: dict | None = None) -> Found:
    """Every ``<method>/seed<s>`` under ``root`` (in the order of ``methods``, the sweep plan's table, by default
    the reproduction's :data:`METHODS`; then seed); anything else there but the sweep stacks' records and start
    state (recipe/atesd/tools/run_dirs.py) is an error naming it (nothing is silently left out)."""
    methods = METHODS if methods is None else methods
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such sweep directory")
    runs, aside = [], []
    for method_dir in sorted(p for p in root.iterdir() if p.name not in (STACKS, INITIAL_STATE)):
        if method_dir.name not in methods or not method_dir.is_dir():
            raise ValueError(f"{method_dir}: not a method of the sweep ({', '.join(methods)})")
        for d in sorted(method_dir.iterdir()):
            if m := _SEED_DIR.fullmatch(d.name):
                runs.append((method_dir.name, int(m.group(1)), d))
            elif _ASIDE_DIR.fullmatch(d.name):
                aside.append(d)
            else:
                raise ValueError(
                    f"{d}: neither a run (seed<s>) nor a moved-aside attempt (seed<s>.incomplete-*)"
                )
    order = list(methods)
    return Found(sorted(runs, key=lambda r: (order.index(r[0]), r[1])), aside)


def load_difficulties(val_file: str | Path) -> dict[str, int]:
    """problem text → ``extra_info.difficulty`` of the held-out parquet file (recipe/atesd/toy/build_data.py)."""
    import pandas as pd

    frame = pd.read_parquet(val_file)
    out = {}
    for n, info in enumerate(frame["extra_info"]):
        if "problem" not in info or "difficulty" not in info:
            raise ValueError(f"{val_file}: row {n}: extra_info lacks 'problem' or 'difficulty'")
        out[info["problem"]] = int(info["difficulty"])
    return out


def accuracy_by_difficulty(path: Path, difficulties: dict[str, int]) -> tuple[dict[str, float], float]:
    """Mean ``score`` per difficulty of one dumped validation (``<step>.jsonl``: verl's ``input``, ``score``),
    and the mean over every dumped row (to check against the logged accuracy)."""
    hits: dict[int, list[float]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        entry = json.loads(line)
        found = [difficulties[s] for s in entry["input"].splitlines() if s.strip() in difficulties]
        if len(found) != 1:
            raise ValueError(f"{path}:{n}: the input names {len(found)} held-out problems (need exactly one)")
        hits.setdefault(found[0], []).append(float(entry["score"]))
    scores = [x for v in hits.values() for x in v]
    return {str(k): sum(v) / len(v) for k, v in sorted(hits.items())}, sum(scores) / len(scores)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _finite(v) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def mode(method: str, methods: dict | None = None) -> str:
    """The results.json ``mode`` of a sweep arm of ``methods`` (the plan's table, by default the reproduction's
    :data:`METHODS`): its exposure mode (``Method.mode`` of recipe/atesd/tools/sweep_plans.py), or
    :data:`PER_BUCKET_MODE` for an adaptive arm run with ``PER_DIFFICULTY``'s overrides (one α per difficulty
    bucket, issue 14)."""
    m = (METHODS if methods is None else methods)[method]
    return PER_BUCKET_MODE if m.mode == "adaptive" and set(PER_DIFFICULTY) <= set(m.extra) else m.mode


def bucket_fields(rows: list[dict], path: Path) -> dict:
    """The per-bucket fields of a ``controller.granularity=per_difficulty`` run's training rows (K buckets,
    k = 0 … K−1, bucket 0 the easiest; docs/metrics.md):

    - ``alpha_per_bucket_per_window``: [α_0, …, α_{K−1}] (``exposure/alpha_bucket_{k}``) on each hold window's
      first step. K = 1 + the largest k logged; every training row must carry every k with a finite value
      (else a ValueError naming the file, the step and the key);
    - ``occupancy_per_bucket``, ``train_accuracy_per_bucket``, ``kl_mean_per_bucket``: per bucket, the mean
      over the steps that logged it of :data:`BUCKET_MEANS`' key (None where no step did: the trainer leaves
      accuracy and KL out on a step where the bucket had no row)."""
    found = {int(m.group(1)) for r in rows for key in r if (m := _BUCKET_ALPHA.fullmatch(key))}
    if not found:
        raise ValueError(
            f"{path}: no {BUCKET_ALPHA!r} metric (required for controller.granularity=per_difficulty, "
            "docs/metrics.md)"
        )
    keys = [BUCKET_ALPHA.format(k=k) for k in range(max(found) + 1)]
    for r in rows:
        for key in keys:
            if key not in r:
                raise ValueError(
                    f"{path}: step {r['step']}: missing {key!r} (every step logs each bucket's α)"
                )
            if not math.isfinite(value(r, key, path)):
                raise ValueError(f"{path}: step {r['step']}: {key!r} is {r[key]!r}, not a finite number")
    by_step = {r["step"]: r for r in rows}
    out = {
        "alpha_per_bucket_per_window": [[by_step[steps[0]][k] for k in keys] for _, _, steps in windows(rows)]
    }
    for field, template in BUCKET_MEANS.items():
        points = [series(rows, template.format(k=k), path) for k in range(len(keys))]
        out[field] = [statistics.fmean(v for _, v in pts) if pts else None for pts in points]
    return out


def one_model(rows: list[dict]) -> str | None:
    """The model hash every row shares (None: none recorded); runs of two models in one table are a
    ValueError naming both hashes and a run of each."""
    first = rows[0] if rows else None
    for row in rows[1:]:
        if row["model_sha256"] != first["model_sha256"]:
            raise ValueError(
                f"runs of different models cannot share one table: {first['directory']} used model "
                f"{first['model_sha256'] or '(not recorded)'}, {row['directory']} used {row['model_sha256'] or '(not recorded)'}"
            )
    return first["model_sha256"] if first else None


def command_sha256(command: list[str]) -> str:
    """``command:<SHA-256>`` of a run's command line without its Python executable (``run.json``): the config
    hash of a run trained alone (GRPO), which writes no resolved config of its own as a sweep arm does."""
    return "command:" + hashlib.sha256(json.dumps(command[1:]).encode()).hexdigest()


def run_row(
    method: str, seed: int, directory: Path, difficulties: dict[str, int] | None, methods: dict | None = None
) -> dict:
    """The results.json row of one run directory (nulls where the run logged nothing) of an arm of ``methods``
    (the plan's table; None: the reproduction's). The per-bucket fields (:func:`bucket_fields`) are ``[]`` in
    every row but those of :data:`PER_BUCKET_MODE`."""
    if not (directory / RUN).exists():
        raise ValueError(f"{directory}: no {RUN} (not started by recipe/atesd/tools/repro_sweep.py)")
    meta, m = _json(directory / RUN), (METHODS if methods is None else methods)[method]
    if meta["method"] != method or meta["seed"] != seed:
        raise ValueError(f"{directory / RUN}: names {meta['method']} seed {meta['seed']}, not its directory")
    done = _json(directory / DONE) if (directory / DONE).exists() else None
    record = _json(directory / RECORD) if (directory / RECORD).exists() else {}
    row = {
        "method": method,
        "mode": mode(method, methods),
        "alpha": m.alpha,
        "seed": seed,
        "model_sha256": (meta.get("model") or {}).get("sha256"),  # None: not recorded (runs before issue 26)
        # a sweep arm's provenance (recipe/atesd/glue/sweep.py::arm_record); None: not recorded (before issue 28)
        "config_sha256": record.get("config_sha256") or command_sha256(meta["command"]),
        "commit": record.get("commit"),
        "dirty": record.get("dirty"),
        "cpu": record.get("cpu"),
        "status": "done" if done else "incomplete",
        "steps_budget": meta["steps"],
        "steps": 0,
        "acc_key": None,
        "acc_before": None,
        "acc_after": None,
        "val_rows": None,  # held-out problems per validation (its dump's rows): n of the per-run SE
        "acc_curve": [],
        "acc_by_difficulty_before": None,
        "acc_by_difficulty_after": None,
        "kl_step1": None,
        "kl_mean_over_steps": None,
        "top1_disagreement_step1": None,
        "top1_disagreement_mean_over_steps": None,
        "probe_nll_final": None,
        "alpha_per_window": [],
        "beta_mean_per_decision": [],
        "beta_ab_per_decision": [],
        "alpha_per_bucket_per_window": [],
        **{field: [] for field in BUCKET_MEANS},
        "controller_reward": [],
        "train_score": [],
        "rollout_step1": None,
        "dump_vs_logged": [],
        "wall_s": done["wall_s"] if done else None,
        # when the run (a sweep arm: from its reset) started and finished training, UTC ISO (done.json)
        "started": done.get("started") if done else None,
        "finished": done.get("finished") if done else None,
        "steps_s": None,
        "first_step_s": None,
        "testing_s": None,
        "outside_steps_s": None,
        "attempts": None,
        "directory": str(directory),
    }
    metrics = directory / METRICS
    if not metrics.exists():
        return row
    history = read_history(metrics)
    if m.mode == "grpo":
        rows = [
            {"step": r["step"], **r["data"]} for r in history.records if "training/global_step" in r["data"]
        ]
        attempts = history.attempts
    elif done or any(ALPHA in r["data"] for r in history.records):
        rows, attempts = read_metrics(metrics)
    else:  # unfinished before its first training step (e.g. died in the step-0 validation): listed, no steps
        rows, attempts = [], history.attempts
    row["attempts"] = len(attempts)
    rows = sorted(rows, key=lambda r: r["step"])
    checked = validations(metrics)
    keys = sorted({k for _, acc in checked for k in acc})
    if len(keys) > 1:
        raise ValueError(f"{metrics}: several held-out accuracy keys {keys}; the report compares one")
    if keys:
        key = row["acc_key"] = keys[0]
        row["acc_curve"] = [[s, acc[key]] for s, acc in checked if key in acc]
        row["acc_before"] = next((v for s, v in row["acc_curve"] if s == 0), None)
    if rows:
        last = row["steps"] = rows[-1]["step"]
        if done:
            row["acc_after"] = next((v for s, v in row["acc_curve"] if s == last and s > 0), None)
        for name, key in (("kl", KL), ("top1_disagreement", TOP1)):
            pts = series(rows, key, metrics)
            if pts:
                row[f"{name}_step1"] = pts[0][1] if pts[0][0] == rows[0]["step"] else None
                row[f"{name}_mean_over_steps"] = statistics.fmean(v for _, v in pts)
        nll = series(rows, PROBE_NLL, metrics)
        row["probe_nll_final"] = nll[-1][1] if nll else None
        if m.mode != "grpo":
            wins = hold_windows(rows, metrics)
            row["alpha_per_window"] = [w.alpha for w in wins]
            row["beta_mean_per_decision"] = [w.mean for w in wins if w.mean is not None]
            row["beta_ab_per_decision"] = [[w.a, w.b] for w in wins if w.mean is not None]
        if row["mode"] == PER_BUCKET_MODE:
            row |= bucket_fields(rows, metrics)
        row["controller_reward"] = [[s, v] for s, v in series(rows, REWARD, metrics)]
        row["train_score"] = [[s, v] for s, v in series(rows, SCORE, metrics)]
        first = rows[0]
        row["rollout_step1"] = [first.get(k) for k in ROLLOUT] if first["step"] == 1 else None
        steps_t = series(rows, STEP_TIME, metrics)
        row["steps_s"] = sum(v for _, v in steps_t)
        row["first_step_s"] = steps_t[0][1] if steps_t else None
        row["testing_s"] = sum(v for _, v in series(rows, TEST_TIME, metrics))
        if done:
            row["outside_steps_s"] = done["wall_s"] - row["steps_s"] - row["testing_s"]
    dump0 = directory / GENERATIONS / "0.jsonl"
    if dump0.exists():
        row["val_rows"] = sum(1 for line in dump0.read_text(encoding="utf-8").splitlines() if line.strip())
    if difficulties is not None:
        for when, step in (("before", 0), ("after", row["steps"] if row["acc_after"] is not None else None)):
            dump = directory / GENERATIONS / f"{step}.jsonl"
            if step is not None and dump.exists():
                row[f"acc_by_difficulty_{when}"], overall = accuracy_by_difficulty(dump, difficulties)
                logged = dict(map(tuple, row["acc_curve"])).get(step)
                if logged is None or abs(overall - logged) > 1e-9:  # the same scores, summed in another order
                    row["dump_vs_logged"].append([step, overall, logged])
    return row


# ---------------------------------------------------------------------------------------------- selecting


def done_rows(rows: list[dict]) -> list[dict]:
    """The finished runs (``status`` ``done``)."""
    return [r for r in rows if r["status"] == "done"]


def adaptive_rows(rows: list[dict]) -> list[dict]:
    """The batch-level ``adaptive`` runs with hold windows (not the per-difficulty arm: its mode differs)."""
    return [r for r in rows if r["mode"] == "adaptive" and r["alpha_per_window"]]


def per_difficulty_rows(rows: list[dict]) -> list[dict]:
    """The runs with α per bucket per hold window (``adaptive_per_difficulty``, finished or not)."""
    return [r for r in rows if r["alpha_per_bucket_per_window"]]
