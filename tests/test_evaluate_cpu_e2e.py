"""End to end on CPU: ``python -m recipe.atesd.eval.evaluate`` with vLLM on a tiny random Qwen3.

One full run (2 problems x 3 benchmarks x n=2) writes every output; a second run is killed right after
its fifth row is on disk, and a rerun completes it without regenerating the finished rows.
Every stack runs in its own process group under an outer timeout; /dev/shm segments mapped by the
stack's processes (vLLM's ``psm_*`` queues, semaphores) are removed afterwards, and only those.
Two quick tests (no engine): ``dry_run=true`` and errors naming the bad key/field.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from integration_utils import REPO_ROOT, STACK_ID_VAR, kill_stack, stack_pids

RUN_TIMEOUT_S = 600
N_ROWS = 3 * 2 * 2
KILL_AFTER = 5  # rows on disk when the first run is killed: some, not all
BASE = ["limit_problems=2", "n_samples=2", "engine.enforce_eager=true", "engine.cpu_kvcache_space_gb=1"]


def mapped_shm(pids) -> set[Path]:
    """/dev/shm files mapped by ``pids`` (read from /proc/<pid>/maps)."""
    found = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found.update(Path(m) for m in re.findall(r"(/dev/shm/\S+)", maps))
    return found


class Stack:
    """A command in its own session, marked with a unique ``ATESD_STACK_ID``; see :meth:`run`."""

    def __init__(self, args, log_path: Path):
        self.stack_id = uuid.uuid4().hex
        env = {**os.environ, "PYTHONUNBUFFERED": "1", STACK_ID_VAR: self.stack_id}
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in run()
        self.proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.shm: set[Path] = set()

    def run(self, timeout_s: float, stop_when=lambda: False) -> tuple[int | None, bool]:
        """Wait until exit, ``stop_when()`` (then kill) or timeout (then kill); always kill leftovers and
        unlink the /dev/shm files the stack mapped. Returns (returncode or None if killed, stopped)."""
        start, stopped = time.monotonic(), False
        try:
            while self.proc.poll() is None and time.monotonic() - start < timeout_s:
                self.shm |= mapped_shm(stack_pids(self.proc.pid, self.stack_id))
                if stop_when():
                    stopped = True
                    break
                time.sleep(0.2)
            code = self.proc.poll()
        finally:
            kill_stack(self.proc.pid, self.stack_id)
            self.proc.wait()
            self.log.close()
            for path in self.shm:
                path.unlink(missing_ok=True)
        return code, stopped

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


def evaluate_cmd(
    model: Path, out: Path, *overrides: str, launcher=("-m", "recipe.atesd.eval.evaluate")
) -> list[str]:
    return [sys.executable, *launcher, f"model_path={model}", f"output_dir={out}", *BASE, *overrides]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run(
        [sys.executable, "-m", "recipe.atesd.data.tiny_model", "--out", str(out), "--seed", "0"],
        cwd=REPO_ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return out


@pytest.mark.integration
@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 300)
def test_full_run_writes_generations_and_summaries(tiny_model, tmp_path):
    out = tmp_path / "full"
    stack = Stack(evaluate_cmd(tiny_model, out, "sampling.max_new_tokens=16"), tmp_path / "full.log")
    code, _ = stack.run(RUN_TIMEOUT_S)
    assert code == 0, stack.text()[-4000:]
    rows = read_rows(out / "generations.jsonl")
    assert len(rows) == N_ROWS
    assert {(r["benchmark"], r["sample_index"]) for r in rows} == {
        (b, j) for b in ("aime24", "aime25", "hmmt25") for j in (0, 1)
    }
    assert len({(r["benchmark"], r["id"], r["sample_index"]) for r in rows}) == N_ROWS
    assert len({r["seed"] for r in rows}) == N_ROWS
    for row in rows:
        assert 1 <= row["n_tokens"] <= 16 and row["finish_reason"] in ("stop", "length")
        assert row["correct"] in (True, False) and row["grade_status"] in ("ok", "no_answer", "oversize")
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["benchmarks"]) == {"aime24", "aime25", "hmmt25"}
    for bench in summary["benchmarks"].values():
        assert set(bench["pass@k"]) == {"1", "2"} and len(bench["per_problem_accuracy"]) == 2
    assert "Avg@2" in (out / "summary.md").read_text()
    assert f"generated {N_ROWS} rows" in stack.text()
    # a rerun finds everything done and starts no engine
    again = Stack(evaluate_cmd(tiny_model, out, "sampling.max_new_tokens=16"), tmp_path / "again.log")
    code, _ = again.run(RUN_TIMEOUT_S)
    assert code == 0, again.text()[-4000:]
    assert f"resume: {N_ROWS} finished rows kept, 0 to generate" in again.text()
    assert "generated 0 rows" in again.text()
    assert read_rows(out / "generations.jsonl") == rows


@pytest.mark.integration
@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 300)
def test_killed_run_resumes_without_regenerating_finished_rows(tiny_model, tmp_path):
    out = tmp_path / "killed"
    gen = out / "generations.jsonl"
    # one sequence at a time and one row per batch, so rows reach the file one append at a time; the driver
    # SIGKILLs itself right after the append that makes KILL_AFTER rows (tests/kill_after_rows.py), a kill
    # at a known point instead of a race between the generation speed and this test's polling
    overrides = ["sampling.max_new_tokens=16", "engine.batch_size=1", "+engine.extra.max_num_seqs=1"]
    killer = (str(REPO_ROOT / "tests" / "kill_after_rows.py"), str(KILL_AFTER))
    first = Stack(evaluate_cmd(tiny_model, out, *overrides, launcher=killer), tmp_path / "first.log")
    code, _ = first.run(RUN_TIMEOUT_S)
    assert code == -signal.SIGKILL, first.text()[-4000:]
    kept = complete_lines(gen)
    assert kept == KILL_AFTER, first.text()[-4000:]
    cmd = evaluate_cmd(tiny_model, out, *overrides)
    prefix = gen.read_bytes()[: gen.read_bytes().rindex(b"\n") + 1]

    second = Stack(cmd, tmp_path / "second.log")
    code, _ = second.run(RUN_TIMEOUT_S)
    assert code == 0, second.text()[-4000:]
    assert f"resume: {kept} finished rows kept, {N_ROWS - kept} to generate" in second.text()
    assert f"generated {N_ROWS - kept} rows" in second.text()
    final = gen.read_bytes()
    assert final.startswith(prefix)
    rows = read_rows(gen)
    assert len({(r["benchmark"], r["id"], r["sample_index"]) for r in rows}) == len(rows) == N_ROWS
    assert json.loads((out / "summary.json").read_text())["n_samples"] == 2


def test_dry_run_prints_config_and_plan_without_engine(tmp_path):
    out = tmp_path / "dry"
    cmd = [
        sys.executable,
        "-m",
        "recipe.atesd.eval.evaluate",
        "model_path=/nonexistent/model",
        f"output_dir={out}",
    ]
    result = subprocess.run(
        [*cmd, "limit_problems=1", "n_samples=3", "dry_run=true"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resume: 0 finished rows kept, 9 to generate" in result.stdout
    assert "hmmt25: 1 problems x 3 samples, 3 to generate" in result.stdout
    assert "top_p: 0.95" in result.stdout and "max_new_tokens: 1024" in result.stdout
    assert not out.exists()


def test_bad_config_and_data_name_the_key(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "recipe.atesd.eval.evaluate", "model_path=m", "n_samples=0", "dry_run=true"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "n_samples: invalid value" in bad.stderr
    (tmp_path / "aime24.jsonl").write_text('{"id": "1", "problem": "p", "answer": ""}\n')
    from recipe.atesd.eval.evaluate import load_benchmark

    with pytest.raises(ValueError, match=r"aime24.jsonl:1: field 'answer'"):
        load_benchmark(tmp_path, "aime24", None)
