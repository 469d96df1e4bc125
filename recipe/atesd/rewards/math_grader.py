r"""Math answer grader (docs/method.md §3): the last ``\boxed{}`` graded with math-verify, under a hard timeout.

verl custom reward (``reward.custom_reward_function.path=<this file>``, ``name=compute_score``; extra
keyword arguments come from ``reward.custom_reward_function.reward_kwargs`` and set
:class:`GraderConfig` fields)::

    compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) -> dict
        {"score": 1.0|0.0, "acc": 1.0|0.0, "pred": str, "timeout": bool}

verl's reward managers call it in executor threads, where signal-based timeouts (math-verify's own)
do not work, and sympy can sit for minutes inside one C-level big-integer operation that no signal
interrupts (``2^{2^{2^{10}}}``). So the parsing and comparison never run in the caller: each calling
thread borrows a long-lived grading subprocess (this file run as a script, stdlib + math-verify only,
so it works however verl loaded the module). Two layers of timeout:

1. inside the subprocess (its main thread), ``SIGPROF`` after ``timeout_s`` seconds of its CPU time
   interrupts Python-level work (math-verify's own timeouts are disabled: ``parsing_timeout=None``,
   ``timeout_seconds=None``);
2. the caller kills the subprocess once it has used ``timeout_s + kill_grace_s`` CPU seconds on the
   request, or after ``wall_timeout_s`` wall seconds whatever happens (a fresh one starts on the next
   call).

Either way the answer scores 0 with status ``timeout``, counted in :func:`grader_stats`.

Budgets are CPU time, not wall time, so a loaded machine (rollouts, other jobs) does not turn slow but
valid gradings into timeouts; the wall-clock cap still guarantees that no call hangs. Backstop that
needs no caller: each request also sets the subprocess's ``RLIMIT_CPU`` a little past the same budget
(the kernel kills it), so an orphaned subprocess cannot spin; an idle one exits when its stdin closes.
Address space is capped (``memory_limit_mb``); a subprocess that dies gives status ``error``.

Answer rules: ``recipe/atesd/method/answer.py::last_box``, the recipe's one answer parser (so the caller
needs the repository root importable, as it is in every launch, ``recipe/atesd/rewards/toy_grader.py``): the
content of the LAST ``\boxed{...}`` / ``\fbox{...}`` (nested braces; ``\boxed 5`` also accepted); an unclosed
or empty last box is no answer. Its cheap caps run before any parsing: only the last box is located
(``str.rfind``), and a box longer than ``max_answer_chars`` or nested deeper than ``max_brace_depth`` scores 0
with status ``oversize``. Before math-verify: ``$`` signs, outer spaces and trailing ``.``/``,``/``;`` are
removed, and when the gold answer has no comma, thousands separators (``3,375``, ``3{,}375``, ``3\,375``)
are dropped. math-verify then decides equivalence: numeric (``070`` = 70), ``\dfrac``/``\tfrac``, radicals,
``2^{25} \cdot 26!``, unordered comma lists (sets).
"""

import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

STATUSES = ("ok", "no_answer", "oversize", "timeout", "error")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:(?:,|\{,\}|\\,|\\ |\\!| )\d{3})+")
_SEPARATORS_RE = re.compile(r",|\{,\}|\\,|\\ |\\!| ")
STARTUP_TIMEOUT_S = 120.0
POLL_S = 0.05
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class GraderConfig:
    """Limits of one grading call (see the module docstring)."""

    timeout_s: float = 2.0  # CPU seconds; valid answers take ~5-50 ms (benchmarks/bench_grader.py)
    kill_grace_s: float = 1.0
    wall_timeout_s: float = 60.0
    max_answer_chars: int = 1000
    max_brace_depth: int = 32
    memory_limit_mb: int = 4096

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"grader.{f.name} must be a positive number, got {value!r}")

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "GraderConfig":
        """Config from verl ``reward_kwargs``; an unknown key is a ValueError naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown grader keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**kwargs)


@dataclass(frozen=True)
class GradeResult:
    correct: bool
    answer: str | None  # normalised content of the last box (None: no box)
    status: str  # one of STATUSES


_stats: Counter = Counter()
_stats_lock = threading.Lock()


def grader_stats() -> dict[str, int]:
    """Counts of grading calls in this process by status (``calls`` = their sum)."""
    with _stats_lock:
        counts = {s: _stats[s] for s in STATUSES}
    return {"calls": sum(counts.values()), **counts}


def reset_grader_stats() -> None:
    with _stats_lock:
        _stats.clear()


def normalize_answer(content: str, ground_truth: str) -> str:
    """Strip ``$``, spaces and trailing punctuation; drop thousands separators unless the gold is a list."""
    text = content.replace("$", "").strip().rstrip(".,;").strip()
    if "," not in ground_truth and _THOUSANDS_RE.fullmatch(text):
        text = _SEPARATORS_RE.sub("", text)
    return text


class _Worker:
    """One grading subprocess speaking JSON lines over its stdin/stdout."""

    def __init__(self, memory_limit_mb: int):
        self.memory_limit_mb = memory_limit_mb
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve()), str(memory_limit_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._buf = b""
        if self._read_line(STARTUP_TIMEOUT_S) != "ready":
            self.kill()
            raise RuntimeError(f"grading subprocess did not start within {STARTUP_TIMEOUT_S}s")

    def _read_line(self, wall_s: float, cpu_s: float | None = None) -> str | None:
        """Next reply line; None when the worker closed its stdout, or after ``wall_s`` wall seconds, or
        once it has used ``cpu_s`` more CPU seconds."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + wall_s
        cpu_limit = None if cpu_s is None else self.cpu_seconds() + cpu_s
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cpu_limit is not None and self.cpu_seconds() > cpu_limit):
                return None
            if not select.select([fd], [], [], min(remaining, POLL_S))[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def cpu_seconds(self) -> float:
        """user + system CPU time of the subprocess (``/proc/<pid>/stat``); 0.0 once it is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        return (int(stat[11]) + int(stat[12])) / _CLOCK_TICKS

    def request(self, gold: str, pred: str, cfg: "GraderConfig") -> tuple[str, bool]:
        """(result, healthy): the worker's ``ok-correct``/``ok-wrong``/``timeout``/``error``; ``timeout`` when
        it ran over its CPU or wall budget; ``error`` when it died (e.g. over its memory cap)."""
        try:
            request = {
                "gold": gold,
                "pred": pred,
                "timeout_s": cfg.timeout_s,
                "kill_grace_s": cfg.kill_grace_s,
            }
            line = json.dumps(request) + "\n"
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except OSError:
            return "error", False
        reply = self._read_line(cfg.wall_timeout_s, cfg.timeout_s + cfg.kill_grace_s)
        if reply is None:
            return ("error" if self.proc.poll() is not None else "timeout"), False
        return reply, True

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


_idle: list[_Worker] = []
_all: set[_Worker] = set()
_pool_lock = threading.Lock()


def _acquire(memory_limit_mb: int, fresh: bool = False) -> tuple[_Worker, bool]:
    """(worker, reused): an idle worker with this memory cap, else (or if ``fresh``) a new one."""
    with _pool_lock:
        for i, worker in enumerate(_idle):
            if not fresh and worker.memory_limit_mb == memory_limit_mb and worker.proc.poll() is None:
                return _idle.pop(i), True
    worker = _Worker(memory_limit_mb)
    with _pool_lock:
        _all.add(worker)
    return worker, False


def _release(worker: _Worker, healthy: bool) -> None:
    with _pool_lock:
        if healthy:
            _idle.append(worker)
            return
        _all.discard(worker)
    worker.kill()


def shutdown_workers() -> None:
    """Kill every grading subprocess of this process (they also exit when it does)."""
    with _pool_lock:
        workers = list(_all)
        _all.clear()
        _idle.clear()
    for worker in workers:
        worker.kill()


def _verify(gold: str, pred: str, cfg: GraderConfig) -> str:
    """``ok-correct`` / ``ok-wrong`` / ``timeout`` / ``error`` from a grading subprocess."""
    worker, reused = _acquire(cfg.memory_limit_mb)
    result, healthy = worker.request(gold, pred, cfg)
    _release(worker, healthy)
    if result == "error" and not healthy and reused:  # an idle worker that had died meanwhile: retry fresh
        worker, _ = _acquire(cfg.memory_limit_mb, fresh=True)
        result, healthy = worker.request(gold, pred, cfg)
        _release(worker, healthy)
    return result


def grade(solution_str: str, ground_truth: str, cfg: GraderConfig | None = None) -> GradeResult:
    """Grade the last box of ``solution_str`` against ``ground_truth`` (module docstring); counted by status."""
    if not isinstance(solution_str, str):
        raise ValueError(f"solution_str must be str, got {type(solution_str).__name__}")
    if not isinstance(ground_truth, str) or not ground_truth.strip():
        raise ValueError(f"ground_truth must be a non-empty str, got {ground_truth!r:.80}")
    cfg = cfg or GraderConfig()
    # imported here: the grading subprocess runs this file with ``python -I``, where the recipe is not importable
    from recipe.atesd.method.answer import last_box

    content, status = last_box(solution_str, max_chars=cfg.max_answer_chars, max_depth=cfg.max_brace_depth)
    correct = False
    answer = None
    if status == "ok":
        answer = normalize_answer(content, ground_truth)
        result = _verify(ground_truth.strip(), answer, cfg) if answer else "ok-wrong"
        status = "ok" if result.startswith("ok") else result
        correct = result == "ok-correct"
    with _stats_lock:
        _stats[status] += 1
    return GradeResult(correct=correct, answer=answer, status=status)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **reward_kwargs) -> dict:
    """verl custom reward: ``{"score", "acc", "pred", "timeout"}``; ``score`` = ``acc`` ∈ {0, 1}.

    ``pred`` (the normalised boxed answer, ``""`` if none) feeds verl's maj@N validation metric.
    """
    result = grade(solution_str, str(ground_truth), GraderConfig.from_kwargs(reward_kwargs))
    score = float(result.correct)
    return {"score": score, "acc": score, "pred": result.answer or "", "timeout": result.status == "timeout"}


def _serve(memory_limit_mb: int) -> None:
    """Grading subprocess: ``"ready"``, then one JSON request per stdin line -> one JSON result line."""
    import logging
    import resource
    import signal
    from functools import lru_cache

    limit = memory_limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.WARNING)
    from math_verify import parse, verify
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    extraction = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    class _Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise _Alarm

    signal.signal(signal.SIGPROF, on_alarm)

    def parse_math(text: str):
        return parse(
            f"${text}$", extraction_config=extraction, fallback_mode="no_fallback", parsing_timeout=None
        )

    parse_gold = lru_cache(maxsize=4096)(parse_math)
    sys.stdout.write(json.dumps("ready") + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        # kernel backstop (SIGXCPU kills) should the caller be gone and unable to kill us
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        cap = int(used + request["timeout_s"] + request["kill_grace_s"]) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cap, resource.RLIM_INFINITY))
        signal.setitimer(signal.ITIMER_PROF, request["timeout_s"])
        try:
            gold = parse_gold(request["gold"])
            pred = parse_math(request["pred"])
            same = bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=None)
            result = "ok-correct" if same else "ok-wrong"
        except _Alarm:
            result = "timeout"
        except Exception:  # sympy/antlr failures, MemoryError, RecursionError: not gradable
            result = "error"
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
