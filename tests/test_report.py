"""The run report (recipe/atesd/tools/run_report.py, ``python -m recipe.atesd.tools.run_report``).

tests/data/report_metrics.jsonl is a small committed metrics history in the trainer's format: 12 steps of an
adaptive run (hold window 2, so 6 windows; rewards at steps 3, 5, 7, 9, 11; policy updates at steps 5 and 9,
after which the logged Beta parameters change), validated at step 0 (a record without ``exposure/alpha``)
and at step 12 (inside the last training record), resumed from the step-6 checkpoint after the interrupted
attempt had logged step 7. Expected numbers are read from that file here with ``json``, not hard-coded.
"""

import json
import math
import re
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from matplotlib.image import imread

from recipe.atesd.tools.run_report import KEYS, NESTED, PLOTS, beta_pdf, write_report

DATA = REPO_ROOT / "tests" / "data" / "report_metrics.jsonl"


def records(path=DATA):
    return [json.loads(line) for line in path.read_text().splitlines()]


def training(path=DATA):
    return [r for r in records(path) if "exposure/alpha" in r["data"]]


def table(md: str, section: str) -> list[list[str]]:
    """Body rows (cells stripped) of the table under ``## section``."""
    text = md.split(f"## {section}\n")[1].split("\n## ")[0]
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def rewrite(tmp_path, edit, name="m.jsonl"):
    """A copy of the committed history with ``edit(record)`` applied to every record."""
    out = tmp_path / name
    out.write_text("".join(json.dumps(edit(r)) + "\n" for r in records()))
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    written = write_report(DATA, out)
    return out, written, (out / "report.md").read_text()


def test_every_plot_is_a_valid_png_and_embedded(rendered):
    out, written, md = rendered
    assert written == list(PLOTS)
    for name in PLOTS:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = imread(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, name  # a figure, not an empty canvas
        assert pixels.max() > pixels.min(), name  # something was drawn
        assert f"![{PLOTS[name]}]({name})" in md
    assert "Skipped" not in md


def test_alpha_and_beta_per_window_match_the_history(rendered):
    _, _, md = rendered
    first_of_window = {}
    for r in training():
        first_of_window.setdefault(int(r["data"]["exposure/window"]), r)
    rows = table(md, "α per hold window")
    assert [int(row[0]) for row in rows] == sorted(first_of_window)
    steps = {}
    for r in training():
        steps.setdefault(int(r["data"]["exposure/window"]), []).append(r["step"])
    for row in rows:
        d = first_of_window[int(row[0])]["data"]
        a, b = d["exposure/beta_a"], d["exposure/beta_b"]
        # printed with 3 decimals: |printed − true| <= 0.0005
        assert abs(float(row[2]) - d["exposure/alpha"]) <= 5e-4
        assert [float(x) for x in row[3].strip("()").split(",")] == pytest.approx([a, b], abs=5e-4)
        assert abs(float(row[4]) - a / (a + b)) <= 5e-4
        assert row[1] == f"{min(steps[int(row[0])])}–{max(steps[int(row[0])])}"
    assert len({row[3] for row in rows}) == 3  # the two policy updates change the logged Beta twice


def test_rewards_updates_and_accuracy_match_the_history(rendered):
    _, _, md = rendered
    logged = {r["step"]: r["data"] for r in training()}
    rows = table(md, "Controller rewards")
    assert [int(row[0]) for row in rows] == sorted(s for s, d in logged.items() if "controller/reward" in d)
    for row in rows:
        d = logged[int(row[0])]
        for cell, key in zip(
            row[1:], ("controller/reward", "controller/return_lp", "controller/return_gt"), strict=True
        ):
            assert math.isclose(float(cell), d[key], rel_tol=5e-4)  # 4 significant digits
    updates = [s for s, d in logged.items() if "controller/loss" in d]
    assert len(updates) == 2
    assert f"Policy updates (steps with `controller/loss`): {', '.join(map(str, updates))}." in md

    validations = [r for r in records() if any(k.startswith("val-core/") for k in r["data"])]
    assert len(validations) == 2 and "exposure/alpha" not in validations[0]["data"]
    header = md[md.index("## Held-out accuracy") :].split("| step |")[1].splitlines()[0]
    keys = [k.strip(" `") for k in header.split("|") if k.strip()]
    assert keys == sorted(k for k in validations[0]["data"] if k.startswith("val-core/"))
    for row, r in zip(table(md, "Held-out accuracy"), validations, strict=True):
        assert int(row[0]) == r["step"]
        assert [float(c) for c in row[1:]] == pytest.approx([r["data"][k] for k in keys], rel=5e-4)


def test_timing_shares_leave_out_each_attempts_first_step(rendered):
    _, _, md = rendered
    starts = [r["attempt"]["resumed_from_step"] for r in records() if "attempt" in r]
    rows = training()
    first = {min(r["step"] for r in rows if r["step"] > s) for s in starts}
    assert first == {1, 7}
    steady = [r["data"] for r in rows if r["step"] not in first]
    assert f"over {len(steady)} steady steps" in md
    printed = {row[0].strip("`"): row for row in table(md, "Timing shares")}
    stages = {k for d in steady for k in d if k.startswith("timing_s/") and k != "timing_s/step"}
    assert len(printed) == len(stages)
    for key in stages:
        share = sum(d.get(key, 0.0) / d["timing_s/step"] for d in steady) / len(steady)
        label = key[len("timing_s/") :] + (
            f" (in {NESTED[key][len('timing_s/') :]})" if key in NESTED else ""
        )
        assert abs(float(printed[label][1].removesuffix(" %")) - 100 * share) <= 0.05  # printed to 0.1 %


def test_attempts_and_checkpoint_are_stated_by_the_command_line(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "latest_checkpointed_iteration.txt").write_text("12\n")
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipe.atesd.tools.run_report",
            str(DATA),
            "--ckpt",
            str(ckpt),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([*PLOTS, "report.md"])
    md = (out / "report.md").read_text()
    assert f"- latest checkpoint: {ckpt}/global_step_12" in md
    boundary = next(r["attempt"] for r in records() if "attempt" in r and r["attempt"]["number"] == 2)
    assert f"- attempt 2: resumed from step {boundary['resumed_from_step']}" in md
    assert f"re-ran steps {boundary['dropped_steps']}" in md


def test_optional_groups_missing_are_skipped_with_a_reason(tmp_path):
    """Fixed exposure (Beta NaN), a history without controller, loss/probe, validation and timing keys."""

    def strip(record):
        data = {
            k: v
            for k, v in record["data"].items()
            if not k.startswith(("controller/", "distill/", "probe/", "val-core/", "timing_s/"))
        }
        if "exposure/beta_a" in data:
            data["exposure/beta_a"] = data["exposure/beta_b"] = None  # how NaN reaches the JSONL
        return {**record, "data": data}

    out = tmp_path / "report"
    assert write_report(rewrite(tmp_path, strip), out) == ["alpha_windows.png"]
    md = (out / "report.md").read_text()
    assert "no Beta policy logged (fixed or random α)" in md
    for name in PLOTS:
        if name != "alpha_windows.png":
            assert not (out / name).exists()
            assert re.search(rf"^\*Skipped `{re.escape(name)}` \({PLOTS[name]}\): .+\.\*$", md, re.M), name
    assert "are NaN or absent in every window" in md
    assert all(row[3:] == ["–", "–"] for row in table(md, "α per hold window"))


def test_partly_logged_groups_name_what_is_missing(tmp_path):
    def drop(record):
        skip = ("controller/return_gt", "probe/teacher_ground")
        return {**record, "data": {k: v for k, v in record["data"].items() if k not in skip}}

    out = tmp_path / "report"
    write_report(rewrite(tmp_path, drop), out)
    md = (out / "report.md").read_text()
    assert "Not logged: `controller/return_gt`." in md and "Not logged: `probe/teacher_ground`." in md
    assert len(table(md, "Loss, KL and probe NLL")) == 3


def test_a_history_without_alpha_is_an_error_naming_file_and_key(tmp_path):
    def rename(record):
        data = dict(record["data"])
        if "exposure/alpha" in data:
            data["exposure/alfa"] = data.pop("exposure/alpha")
        return {**record, "data": data}

    bad = rewrite(tmp_path, rename)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}: .*'exposure/alpha'"):
        write_report(bad, tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "recipe.atesd.tools.run_report", str(bad), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"run_report: {bad}: ") and "'exposure/alpha'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("exposure/window", "drop", r"step 5: missing 'exposure/window'"),
        ("exposure/alpha", None, r"step 5: 'exposure/alpha' is None, not a finite number"),
        ("distill/loss", "0.3", r"step 5: 'distill/loss' is '0.3', not a number"),
        ("controller/reward", [1.0], r"step 5: 'controller/reward' is \[1.0\], not a number"),
    ],
)
def test_a_wrong_or_missing_value_is_an_error_naming_step_and_key(tmp_path, key, value, message):
    def spoil(record):
        if record["step"] != 5 or "exposure/alpha" not in record["data"]:
            return record
        data = dict(record["data"])
        if value == "drop":
            del data[key]
        else:
            data[key] = value
        return {**record, "data": data}

    bad = rewrite(tmp_path, spoil)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}: {message}"):
        write_report(bad, tmp_path / "out")


def test_the_report_reads_documented_keys_only():
    doc = (REPO_ROOT / "docs" / "metrics.md").read_text()
    undocumented = [k for k in (*KEYS, *NESTED, *NESTED.values()) if f"`{k}`" not in doc]
    assert undocumented == []
    assert "`timing_s/*`" in doc and "`val-core/*`" in doc


def test_beta_pdf():
    # Beta(2, 3): 12 x (1 − x)², so 1.5 at x = 0.5; Beta(1, 1) is uniform
    assert beta_pdf(0.5, 2.0, 3.0) == pytest.approx(1.5, rel=1e-12)
    assert beta_pdf(0.3, 1.0, 1.0) == pytest.approx(1.0, rel=1e-12)
    # the midpoint rule over n = 2000 cells integrates Beta(1.7, 2.4) to 1 and its mean to a/(a+b) within
    # 1e-3: smooth inside, the error is dominated by the end cells, O(h^1.7) ≈ 3e-6 for h = 1/2000 (f ~ x^0.7)
    n, a, b = 2000, 1.7, 2.4
    xs = [(i + 0.5) / n for i in range(n)]
    assert sum(beta_pdf(x, a, b) for x in xs) / n == pytest.approx(1.0, abs=1e-3)
    assert sum(x * beta_pdf(x, a, b) for x in xs) / n == pytest.approx(a / (a + b), abs=1e-3)
