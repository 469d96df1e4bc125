"""Run a Ray/verl/vLLM stack in a subprocess that cannot outlive the test or leak shared memory.

:func:`run_stack` starts a command in its own process group (``start_new_session``) with:

- an outer timeout; at the end (normal exit, failure or timeout) every process of the stack gets
  SIGTERM, then SIGKILL. Ray puts its workers in their own sessions, so the process group alone does
  not reach them: each run exports a unique ``ATESD_STACK_ID`` that every descendant inherits (raylet,
  Ray workers, vLLM engine/worker processes) and we kill the group *and* every process whose
  environment carries that id;
- its own Ray session: ``RAY_TMPDIR`` points at a fresh folder under the work dir, ``RAY_ADDRESS`` is
  removed so ``ray.init`` starts a private local cluster, and :func:`ray_temp_overrides` gives the
  hydra override that puts Ray's session dir there;
- /dev/shm hygiene: names present before are remembered; afterwards (also on failure or timeout) new
  segments matching :data:`SHM_PATTERNS` (vLLM queues ``psm_*``, verl weight buckets ``verl_weights_*``,
  ...) are removed;
- logs (stdout+stderr) written to a file; :class:`StackResult` keeps the path and a tail for messages.

Used by tests/test_grpo_cpu_e2e.py and by the ATESD trainer's integration tests.
"""

import fnmatch
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO_ROOT

SHM_DIR = Path("/dev/shm")
STACK_ID_VAR = "ATESD_STACK_ID"
SHM_PATTERNS = ("psm_*", "verl_*", "sem.mp-*", "torch_*", "vllm*", "ray_*", "plasma*")


@dataclass
class StackResult:
    returncode: int
    timed_out: bool
    log_path: Path
    wall_s: float
    peak_pss_bytes: int
    stopped_early: bool = False

    def tail(self, n_lines: int = 80) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n_lines:])

    def describe(self) -> str:
        state = "timed out" if self.timed_out else f"exit code {self.returncode}"
        return f"stack {state} after {self.wall_s:.0f}s; log {self.log_path}; last lines:\n{self.tail()}"


def shm_names() -> set[str]:
    return set(os.listdir(SHM_DIR)) if SHM_DIR.is_dir() else set()


def shm_in_use() -> set[str]:
    """/dev/shm names some live process has mapped or open (read from /proc/<pid>/maps and fd links)."""
    used = set()
    prefix = f"{SHM_DIR}/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "maps").read_text().splitlines():
                path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
                if path.startswith(prefix):
                    used.add(path[len(prefix) :].removesuffix(" (deleted)"))
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(prefix):
                    used.add(target[len(prefix) :])
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError, OSError):
            continue
    return used


def remove_new_shm(before: set[str], patterns: Sequence[str] = SHM_PATTERNS) -> list[str]:
    """Delete /dev/shm entries created since ``before`` that match ``patterns`` and that no live process
    still uses (so a concurrent stack's segments survive); return them. Call after the stack is gone."""
    removed = []
    in_use = shm_in_use()
    for name in sorted(shm_names() - before - in_use):
        if any(fnmatch.fnmatch(name, p) for p in patterns):
            try:
                (SHM_DIR / name).unlink()
                removed.append(name)
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass
    return removed


@contextmanager
def shm_guard(patterns: Sequence[str] = SHM_PATTERNS) -> Iterator[set[str]]:
    """Remove the /dev/shm segments matching ``patterns`` that appear inside the block, even on error."""
    before = shm_names()
    try:
        yield before
    finally:
        remove_new_shm(before, patterns)


def stack_pids(pgid: int, stack_id: str) -> list[int]:
    """Processes in group ``pgid`` or whose environment has ``ATESD_STACK_ID=<stack_id>``."""
    marker = f"{STACK_ID_VAR}={stack_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) == pgid or marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(pid)
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return pids


def pss_bytes(pids: Sequence[int]) -> int:
    """Summed proportional set size (shared pages split between sharers) of ``pids``, from smaps_rollup."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def kill_stack(pgid: int, stack_id: str, grace_s: float = 10.0) -> None:
    """SIGTERM every process of the stack, wait up to ``grace_s``, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = stack_pids(pgid, stack_id)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = [
                p for p in stack_pids(pgid, stack_id) if Path(f"/proc/{p}/stat").exists() and not _zombie(p)
            ]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


RAY_TEMP_OVERRIDE = "+ray_kwargs.ray_init._temp_dir="
# Ray puts AF_UNIX sockets under its temp dir and refuses paths over 107 bytes; pytest's tmp paths are
# long, so the session goes to a short folder named after the requested one (removed by run_stack).
SHORT_RAY_ROOT = Path("/tmp")


def short_ray_dir(ray_dir: Path) -> Path:
    return SHORT_RAY_ROOT / f"atesd-ray-{hashlib.sha1(str(ray_dir).encode()).hexdigest()[:10]}"


def ray_temp_overrides(ray_dir: Path) -> list[str]:
    """Hydra overrides that put this run's Ray session in a private folder (a private local cluster)."""
    short = short_ray_dir(ray_dir)
    short.mkdir(parents=True, exist_ok=True)
    return [f"{RAY_TEMP_OVERRIDE}{short}"]


def run_stack(
    args: Sequence[str],
    workdir: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
    name: str = "stack",
    poll_s: float = 1.0,
    stop_when: Callable[[], bool] | None = None,
) -> StackResult:
    """Run ``args`` (a python ``-m`` command line etc.) from the repo root; never leaves processes or shm.

    ``workdir`` (e.g. pytest's ``tmp_path``) receives ``<name>.log`` and ``<name>-ray/``. The process
    group's summed RSS is sampled every ``poll_s`` seconds (``peak_pss_bytes``). ``stop_when`` is polled
    at the same rate; when it returns True the stack is killed like on a timeout (``stopped_early``), e.g.
    to simulate a crash right after a checkpoint.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    ray_dir = workdir / f"{name}-ray"
    ray_dir.mkdir(exist_ok=True)
    run_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_CURRENT_TEST")}
    stack_id = uuid.uuid4().hex
    run_env.update({"RAY_TMPDIR": str(ray_dir), "PYTHONUNBUFFERED": "1", STACK_ID_VAR: stack_id})
    run_env.update(env or {})
    before = shm_names()
    start = time.monotonic()
    peak = 0
    timed_out = stopped_early = False
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(args),
            cwd=REPO_ROOT,
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while proc.poll() is None:
                if time.monotonic() - start > timeout_s:
                    timed_out = True
                    break
                if stop_when is not None and stop_when():
                    stopped_early = True
                    break
                peak = max(peak, pss_bytes(stack_pids(proc.pid, stack_id)))
                time.sleep(poll_s)
        finally:
            kill_stack(proc.pid, stack_id)
            proc.wait()
            remove_new_shm(before)
            for arg in args:
                if arg.startswith(RAY_TEMP_OVERRIDE) and arg[len(RAY_TEMP_OVERRIDE) :].startswith(
                    str(SHORT_RAY_ROOT)
                ):
                    shutil.rmtree(arg[len(RAY_TEMP_OVERRIDE) :], ignore_errors=True)
    return StackResult(
        returncode=proc.returncode,
        timed_out=timed_out,
        log_path=log_path,
        wall_s=time.monotonic() - start,
        peak_pss_bytes=peak,
        stopped_early=stopped_early,
    )


def python_module(module: str, *overrides: str) -> list[str]:
    """``[sys.executable, "-m", module, *overrides]``."""
    return [sys.executable, "-m", module, *overrides]
