"""Average@n evaluation (docs/method.md §3) with vLLM's offline engine.

``python -m recipe.atesd.eval.evaluate model_path=DIR [output_dir=...] [n_samples=12] [dry_run=true] ...``
(config ``recipe/atesd/config/evaluate.yaml``; ``--config-name evaluate_paper`` is the paper protocol).

Plan: every (benchmark, problem id, sample index j < n) not yet in ``output_dir/generations.jsonl``.
Prompts: the student template of docs/method.md §1 (``prompts.build_student_messages``) under the chat
template with thinking ON. Every request carries its own seed (``SamplingParams.seed``, see
:func:`sample_seed`): distinct over the sample indices of a problem (engines that share one
engine-level seed draw the same stream and collapse the n samples into copies) and over problems (with
one seed per index, a tiny random model gave 8 distinct texts out of 12), and independent of batching,
of the data-parallel layout and of a resume.

Data parallel: one engine process per group of ``tensor_parallel_size`` visible GPUs (CPU: one),
work items dealt round-robin. Each engine queues all its requests and streams finished ones back in
groups of ``engine.batch_size``; the main process grades them (``grader_kind``: math_grader, or the toy
grader for ``--config-name evaluate_toy``), appends the rows and
fsyncs; a rerun skips finished rows. Then ``summary.json`` / ``summary.md``.
"""

import json
import multiprocessing as mp
import os
import queue
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import hydra

from recipe.atesd.eval.store import GenerationStore, check_run_config
from recipe.atesd.eval.summary import render_markdown, summarize
from recipe.atesd.method.prompts import TeacherPromptConfig, build_student_messages, chat_ids
from recipe.atesd.rewards.math_grader import GraderConfig, GradeResult, grade, grader_stats, shutdown_workers
from recipe.atesd.rewards.toy_grader import toy_answer

LOG_PREFIX = "[evaluate]"
ENGINE_POLL_S = 2.0


@dataclass(frozen=True)
class WorkItem:
    benchmark: str
    problem_id: str
    sample_index: int
    seed: int
    prompt_ids: tuple[int, ...]


def toy_grade(text: str, ground_truth: str, cfg: GraderConfig | None = None) -> GradeResult:
    r"""The toy world's reward (``recipe/atesd/rewards/toy_grader.py``): exact match of the last ``\boxed{}``."""
    answer = toy_answer(text)
    correct = answer is not None and answer == ground_truth.strip()
    return GradeResult(correct=correct, answer=answer, status="ok" if answer is not None else "no_answer")


# ``grader_kind``: how a response is graded (math-verify for the benchmarks, exact match for the toy world).
GRADERS = {"math": grade, "toy": toy_grade}


def sample_seed(base_seed: int, benchmark: str, problem_id: str, sample_index: int) -> int:
    """``crc32("benchmark/id") * 2**16 + base_seed + sample_index``: stable across runs and machines."""
    if not 0 <= base_seed + sample_index < 2**16:
        raise ValueError(f"seed + sample_index must be in [0, 65536), got {base_seed + sample_index}")
    return zlib.crc32(f"{benchmark}/{problem_id}".encode()) * 2**16 + base_seed + sample_index


def _benchmark_rows(path: Path) -> list[tuple[str, dict]]:
    """(position, row) of a ``.jsonl`` (one object per line) or of a verl-row ``.parquet`` (its ``extra_info``
    holds ``id``, ``problem``, ``answer``: recipe/atesd/data/schema.py)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        infos = pq.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist()
        return [(f"row {i}", info or {}) for i, info in enumerate(infos)]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(str(n), json.loads(line)) for n, line in enumerate(lines, start=1) if line.strip()]


def load_benchmark(data_dir: Path, name: str, limit: int | None) -> list[dict]:
    """Rows ``{"id", "problem", "answer"}`` of ``data_dir/<name>.jsonl``, else of ``data_dir/<name>.parquet``
    (verl rows, e.g. the toy world's ``data/toy/val.parquet``); first ``limit`` if set."""
    candidates = [Path(data_dir) / f"{name}{suffix}" for suffix in (".jsonl", ".parquet")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ValueError(
            f"benchmarks: no file {candidates[0]} or {candidates[1].name} for benchmark '{name}'"
        )
    rows = []
    for number, row in _benchmark_rows(path):
        for field in ("id", "problem", "answer"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise ValueError(f"{path}:{number}: field '{field}' must be a non-empty string")
        rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate problem ids")
    return rows[:limit] if limit is not None else rows


def validate(cfg) -> None:
    """ValueError naming the first bad key of the evaluation config."""
    if not cfg.model_path:
        raise ValueError("model_path must be set")
    if not cfg.benchmarks:
        raise ValueError("benchmarks must list at least one benchmark")
    checks = {
        "n_samples": cfg.n_samples >= 1,
        "limit_problems": cfg.limit_problems is None or cfg.limit_problems >= 1,
        "sampling.temperature": cfg.sampling.temperature >= 0,
        "sampling.top_p": 0 < cfg.sampling.top_p <= 1,
        "sampling.top_k": cfg.sampling.top_k >= 0,
        "sampling.max_new_tokens": cfg.sampling.max_new_tokens >= 1,
        "engine.tensor_parallel_size": cfg.engine.tensor_parallel_size >= 1,
        "engine.data_parallel_size": cfg.engine.data_parallel_size is None
        or cfg.engine.data_parallel_size >= 1,
        "engine.batch_size": cfg.engine.batch_size >= 1,
        "grader_workers": cfg.grader_workers >= 1,
        "grader_kind": cfg.grader_kind in GRADERS,
    }
    for key, ok in checks.items():
        if not ok:
            raise ValueError(f"{key}: invalid value")


def student_template(cfg) -> str:
    """The configured template, else the project's student template (docs/method.md §1)."""
    return cfg.student_template or TeacherPromptConfig().student_template


def prompt_token_ids(tokenizer, problem: str, template: str, enable_thinking: bool) -> tuple[int, ...]:
    """Student messages (docs/method.md §1) under the chat template with the generation prompt, encoded
    without extra special tokens (as verl's RLHFDataset)."""
    messages = build_student_messages(problem, TeacherPromptConfig(student_template=template))
    return tuple(chat_ids(tokenizer, messages, enable_thinking))


def engine_layout(cfg) -> tuple[list[str], list[list[str]]]:
    """(visible device ids, device ids per engine); no GPU -> one CPU engine ``[[]]``."""
    import torch

    n_gpu = torch.cuda.device_count()
    if n_gpu == 0:
        return [], [[]]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d for d in env.split(",") if d] if env else [str(i) for i in range(n_gpu)]
    tp = cfg.engine.tensor_parallel_size
    dp = cfg.engine.data_parallel_size or len(visible) // tp
    if dp * tp > len(visible) or dp < 1:
        raise ValueError(f"engine.data_parallel_size={dp} x tensor_parallel_size={tp} > {len(visible)} GPUs")
    return visible, [visible[r * tp : (r + 1) * tp] for r in range(dp)]


def _engine_main(rank: int, devices: list[str], engine: dict, env: dict, sampling: dict, items, batch, out):
    """One vLLM engine (own process): all ``items`` are queued at once; finished requests are put on ``out``
    in groups of ``batch`` as they complete, so no row waits for the longest sample of a batch."""
    try:
        os.environ.update(env)
        if devices:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        from vllm import LLM, SamplingParams

        llm = LLM(**engine)
        core = llm.llm_engine
        pending = {}
        for it in items:
            rid = f"{it.benchmark}/{it.problem_id}/{it.sample_index}"
            pending[rid] = it
            params = SamplingParams(**sampling, seed=it.seed)
            core.add_request(rid, {"prompt_token_ids": list(it.prompt_ids)}, params)
        rows = []
        while core.has_unfinished_requests():
            for o in core.step():
                if o.finished:
                    c = o.outputs[0]
                    rows.append((pending.pop(o.request_id), c.text, len(c.token_ids), c.finish_reason))
            if len(rows) >= batch or (rows and not core.has_unfinished_requests()):
                out.put(("rows", rank, rows))
                rows = []
        if pending:
            raise RuntimeError(f"engine {rank}: {len(pending)} requests never finished")
        llm.llm_engine.engine_core.shutdown()
        out.put(("done", rank, None))
    except BaseException:
        out.put(("error", rank, traceback.format_exc()))
        raise


def _grade_rows(
    results, answers: dict, grader, grader_cfg: GraderConfig, pool: ThreadPoolExecutor
) -> list[dict]:
    def one(result):
        item, text, n_tokens, finish = result
        graded = grader(text, answers[(item.benchmark, item.problem_id)], grader_cfg)
        return {
            "benchmark": item.benchmark,
            "id": item.problem_id,
            "sample_index": item.sample_index,
            "seed": item.seed,
            "text": text,
            "answer": graded.answer,
            "correct": graded.correct,
            "grade_status": graded.status,
            "n_tokens": n_tokens,
            "finish_reason": finish,
        }

    return list(pool.map(one, results))


def generate(cfg, todo: list[WorkItem], answers: dict, store: GenerationStore, max_model_len: int) -> int:
    """Run the engines over ``todo``; grade and append rows as batches arrive; return rows written."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    groups = engine_layout(cfg)[1][: len(todo)]  # no idle engines when few items are left
    engine = {
        "model": cfg.model_path,
        "dtype": cfg.engine.dtype,
        "seed": cfg.seed,
        "max_model_len": max_model_len,
        "tensor_parallel_size": cfg.engine.tensor_parallel_size,
        "gpu_memory_utilization": cfg.engine.gpu_memory_utilization,
        "enforce_eager": cfg.engine.enforce_eager,
        "generation_config": "vllm",  # ignore the checkpoint's sampling defaults (Qwen3 ships top_k=20)
        **OmegaConf.to_container(cfg.engine.extra),
    }
    env = {} if groups[0] else {"VLLM_CPU_KVCACHE_SPACE": str(cfg.engine.cpu_kvcache_space_gb)}
    s = cfg.sampling
    sampling = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "max_tokens": s.max_new_tokens,
    }
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    for rank, devices in enumerate(groups):
        args = (rank, devices, engine, env, sampling, todo[rank :: len(groups)], cfg.engine.batch_size, out)
        procs.append(ctx.Process(target=_engine_main, args=args, daemon=False))
    for p in procs:
        p.start()
    grader_cfg = GraderConfig(**OmegaConf.to_container(cfg.grader))
    written, done = 0, set()
    try:
        with ThreadPoolExecutor(cfg.grader_workers) as pool, tqdm(total=len(todo), desc="generate") as bar:
            while len(done) < len(procs):
                try:
                    kind, rank, payload = out.get(timeout=ENGINE_POLL_S)
                except queue.Empty:
                    dead = [r for r, p in enumerate(procs) if r not in done and not p.is_alive()]
                    if dead:
                        raise RuntimeError(f"engine process(es) {dead} exited without finishing") from None
                    continue
                if kind == "error":
                    raise RuntimeError(f"engine {rank} failed:\n{payload}")
                if kind == "done":
                    done.add(rank)
                    continue
                rows = _grade_rows(payload, answers, GRADERS[cfg.grader_kind], grader_cfg, pool)
                store.append(rows)
                written += len(rows)
                bar.update(len(rows))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
        shutdown_workers()
    return written


def run(cfg) -> dict | None:
    """Plan, generate what is missing, summarise. Returns the summary (None for ``dry_run``)."""
    from omegaconf import OmegaConf

    validate(cfg)
    out_dir = Path(cfg.output_dir)
    problems = {b: load_benchmark(Path(cfg.data_dir), b, cfg.limit_problems) for b in cfg.benchmarks}
    store = GenerationStore(out_dir / "generations.jsonl") if out_dir.exists() else None
    finished = store.keys if store else set()
    plan = [
        (b, row["id"], j)
        for b, rows in problems.items()
        for row in rows
        for j in range(cfg.n_samples)
        if (b, row["id"], j) not in finished
    ]
    n_total = sum(len(rows) for rows in problems.values()) * cfg.n_samples
    print(
        f"{LOG_PREFIX} resume: {n_total - len(plan)} finished rows kept, {len(plan)} to generate", flush=True
    )
    if cfg.dry_run:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        for b, rows in problems.items():
            todo_b = sum(1 for p in plan if p[0] == b)
            print(f"{LOG_PREFIX} {b}: {len(rows)} problems x {cfg.n_samples} samples, {todo_b} to generate")
        print(
            f"{LOG_PREFIX} engines (devices per engine): {engine_layout(cfg)[1]}; seeds crc32(benchmark/id)*2^16 + {cfg.seed} + j"
        )
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    store = store or GenerationStore(out_dir / "generations.jsonl")
    template = student_template(cfg)
    recorded = {
        "model_path": str(cfg.model_path),
        "seed": cfg.seed,
        "sampling": OmegaConf.to_container(cfg.sampling),
        "enable_thinking": cfg.enable_thinking,
        "student_template": template,
        "grader_kind": cfg.grader_kind,
    }
    check_run_config(out_dir / "run_config.json", recorded)
    answers = {(b, r["id"]): r["answer"] for b, rows in problems.items() for r in rows}
    written = 0
    if plan:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
        prompt_ids = {
            (b, r["id"]): prompt_token_ids(tokenizer, r["problem"], template, cfg.enable_thinking)
            for b, rows in problems.items()
            for r in rows
        }
        todo = [
            WorkItem(b, pid, j, sample_seed(cfg.seed, b, pid, j), prompt_ids[(b, pid)]) for b, pid, j in plan
        ]
        max_len = cfg.engine.max_model_len or max(map(len, prompt_ids.values())) + cfg.sampling.max_new_tokens
        written = generate(cfg, todo, answers, store, max_len)
    print(f"{LOG_PREFIX} generated {written} rows; grader {grader_stats()}", flush=True)
    summary = summarize(
        {b: [r["id"] for r in rows] for b, rows in problems.items()}, store.rows, cfg.n_samples
    )
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "summary.md").write_text(render_markdown(summary))
    print(render_markdown(summary).split("\n\n")[1], flush=True)
    return summary


@hydra.main(config_path="../config", config_name="evaluate", version_base=None)
def main(cfg) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
