"""One-shot device check of the pure-torch core: loss correctness, loss memory/time, teacher scoring cost.

    python benchmarks/gpu_check.py --device cuda                   # one GPU, a few minutes
    python benchmarks/gpu_check.py --device cpu --quick            # tiny sizes, CPU smoke test
    python benchmarks/gpu_check.py --device cuda --sections loss teacher --tokenizer DIR

Needs only torch and transformers (no verl, vLLM, Ray, pandas or pyarrow, no network). Sections:

1. ``loss``: every case of ``tests/test_losses.py:CASES`` (all modes of the ``LOSSES`` registry), at
   temperatures 1.0 and 0.7, chunked ``distill_token_losses`` on the device with fp32 and bf16 logits
   vs the dense fp64 autograd reference ``tests/test_losses.py:_dense_loss`` evaluated on the same
   (already rounded) logits: loss values and student-logit gradients, max errors, PASS/FAIL. A clipped
   case failing on one or two gradient entries with a tiny loss error would be an entry ℓ within
   rounding of τ, clipped on one side only (rare at these sizes), not a kernel error.
2. ``bench``: ``benchmarks/bench_losses.py`` (naive vs chunked vs fused clipped forward KL from hidden
   states, peak memory and time); on cuda bf16 with Qwen3-8B shapes (H = 4096, V = 151,936),
   T = 2048, 8192, 32768 and chunk 256 (points over the memory cap are skipped).
3. ``teacher``: ``recipe.atesd.method.scoring.build_teacher_batch`` + ``teacher_response_logits`` on a
   randomly initialised Qwen3 shaped like Qwen3-1.7B (bf16), batch 8 x 1024 response tokens, teacher
   prompts from ``prompts.teacher_prompt_ids`` (real Qwen3 tokenizer, the longest reference solutions
   of a JSONL file) at alpha = 0.5 and alpha = 1: median ms, prompt tokens, ratio.

The exit status is non-zero when a correctness check fails or any section raises; a failing section
does not stop the others. ``--tokenizer`` defaults to ``artifacts/tiny-qwen3`` (``make model``), which
holds the Qwen3 tokenizer files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
import types
from dataclasses import asdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recipe.atesd.method.losses import LOSSES, DistillLossConfig, distill_token_losses  # noqa: E402

# Tolerances on normalised max errors, max|x − ref| / max|ref| (per case, over all tokens / entries).
# fp32: log_softmax over V ≈ 1.5e5 has an absolute error of a few ulp of |log p| (|log p| ≲ 40, ulp 3.8e-6;
# CPU measured 2.7e-5), and loss and gradient are p-weighted sums of such log-ratios over V terms
# accumulated in fp32 (random-walk error ≈ √V·ε ≈ 2.4e-5 of Σ|terms|), so 1e-4 ≈ 4√V·ε. (At V = 2048
# the errors are ≈ 4e-6; 1e-5 is not a sound bound at V = 1.5e5.) bf16 logits: the loss is still
# computed in fp32 from exactly representable inputs (the reference sees the same rounded logits), so
# the same 1e-4; the gradient is stored in bf16 (the student's dtype), rounded when written in the
# forward and again when backward rescales it by the per-token weights, each ≤ 2^-8 ≈ 3.9e-3 relative
# (bf16 unit roundoff, 8 significant bits): ≤ 2^-7 ≈ 7.8e-3 of the entry, so 2^-6 ≈ 1.6e-2 (2x margin).
TOLERANCES = {
    "fp32": {"loss": 1e-4, "grad": 1e-4},
    "bf16": {"loss": 1e-4, "grad": 2**-6},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# Qwen3-1.7B (Hugging Face config.json), randomly initialised here.
QWEN3_1P7B = dict(
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151_936,
    tie_word_embeddings=True,
    max_position_embeddings=40_960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
)


def _load_test_losses():
    """``tests/test_losses.py`` as a module (for ``_dense_loss`` and ``CASES``). pytest is only used
    there for decorators; where it is not installed a no-op stand-in is registered first."""
    if importlib.util.find_spec("pytest") is None and "pytest" not in sys.modules:
        stub = types.ModuleType("pytest")
        stub.mark = types.SimpleNamespace(parametrize=lambda *a, **k: lambda fn: fn)
        stub.fixture = lambda *a, **k: a[0] if a and callable(a[0]) else lambda fn: fn
        sys.modules["pytest"] = stub
    spec = importlib.util.spec_from_file_location("atesd_test_losses", REPO / "tests" / "test_losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------- 1. correctness
def _loss_inputs(n_tok: int, vocab: int, device: torch.device, seed: int = 0):
    """fp64 student / teacher logits, sampled ids and per-token weights.

    The teacher has 128 boosted entries per row at distinct values 8, 8.0625, …, 15.94 (exact and
    distinct in bf16) above a N(0, 1.5²) base, so its top-k (k ≤ 127) has no ties even after bf16
    rounding: with ties, the chunked and the reference top-k may pick different (equally valid)
    indices. The student is the teacher plus N(0, 1) noise (related, not identical).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    f64 = dict(device=device, dtype=torch.float64)
    teacher = torch.randn(n_tok, vocab, generator=gen, **f64) * 1.5
    n_boost = min(128, vocab)
    idx = torch.rand(n_tok, vocab, generator=gen, device=device).topk(n_boost, dim=-1).indices
    boost = (8.0 + 0.0625 * torch.arange(n_boost, **f64)).expand(n_tok, n_boost)
    teacher.scatter_(-1, idx, boost)
    student = teacher + torch.randn(n_tok, vocab, generator=gen, **f64)
    target = torch.randint(0, vocab, (n_tok,), generator=gen, device=device)
    weights = torch.rand(n_tok, generator=gen, **f64)
    return student, teacher, target, weights


def _max_err(x: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    err = float((x.double() - ref).abs().max())
    return err, err / max(float(ref.abs().max()), 1e-30)


def section_loss(args, device: torch.device) -> dict:
    tl = _load_test_losses()
    cases = [dict(c) for c in tl.CASES]
    for case in cases:
        if case["mode"] == "topk_tail":
            case["topk"] = min(DistillLossConfig.topk, args.loss_vocab - 1)  # the default k, not the test's 5
    missing = set(LOSSES) - {c["mode"] for c in cases}
    if missing:
        raise RuntimeError(f"registered loss modes without a case in tests/test_losses.py: {sorted(missing)}")
    s64, t64, target, w64 = _loss_inputs(args.loss_tokens, args.loss_vocab, device)
    print(
        f"T={args.loss_tokens} tokens, V={args.loss_vocab}, chunk={args.loss_chunk}, device={device}; "
        "reference: dense fp64 autograd (tests/test_losses.py:_dense_loss) on the same rounded logits"
    )
    print("errors: max|x - ref| (abs) and max|x - ref| / max|ref| (rel); weighted-sum backward")
    header = f"{'dtype':<5} {'temp':>4}  {'case':<40}{'loss abs':>10}{'loss rel':>10}"
    header += f"{'grad abs':>10}{'grad rel':>10}{'max|g|':>9}  result"
    print(header)
    rows, failures = [], []
    for dname, dtype in DTYPES.items():
        tol = TOLERANCES[dname]
        s_in, t_in = s64.to(dtype), t64.to(dtype)
        w_in = w64.to(torch.float32)
        for temperature in (1.0, 0.7):
            for case in cases:
                cfg = DistillLossConfig(chunk_size=args.loss_chunk, **case)
                s = s_in.detach().clone().requires_grad_(True)
                loss, _ = distill_token_losses(s, t_in, cfg, target_ids=target, temperature=temperature)
                (loss * w_in).sum().backward()
                s_ref = s_in.double().requires_grad_(True)
                ref = tl._dense_loss(s_ref, t_in.double(), cfg, target, temperature)
                (ref * w_in.double()).sum().backward()
                _sync(device)
                l_abs, l_rel = _max_err(loss.detach(), ref.detach())
                g_abs, g_rel = _max_err(s.grad, s_ref.grad)
                finite = bool(torch.isfinite(loss).all() and torch.isfinite(s.grad).all())
                ok = finite and l_rel <= tol["loss"] and g_rel <= tol["grad"]
                name = tl.case_id(case)
                line = f"{dname:<5} {temperature:>4}  {name:<40}{l_abs:>10.2e}{l_rel:>10.2e}"
                line += f"{g_abs:>10.2e}{g_rel:>10.2e}{float(s_ref.grad.abs().max()):>9.3f}  "
                if ok:
                    line += "PASS"
                else:  # one or two entries only: likely an entry within rounding of the clip threshold τ
                    bad = (s.grad.double() - s_ref.grad).abs() > tol["grad"] * s_ref.grad.abs().max()
                    line += f"FAIL ({int(bad.sum())} grad entries over tol, finite={finite})"
                print(line)
                rows.append((dname, l_rel, g_rel))
                if not ok:
                    failures.append(f"{dname} T={temperature} {name}")
                del s, s_ref, loss, ref
    worst = {d: (max(r[1] for r in rows if r[0] == d), max(r[2] for r in rows if r[0] == d)) for d in DTYPES}
    summary = [
        f"{d}: worst loss rel {lw:.1e} (tol {TOLERANCES[d]['loss']:.1e}), "
        f"worst grad rel {gw:.1e} (tol {TOLERANCES[d]['grad']:.1e})"
        for d, (lw, gw) in worst.items()
    ]
    summary.append(f"{len(rows) - len(failures)}/{len(rows)} cases pass")
    summary += [f"FAIL {f}" for f in failures]
    return {"ok": not failures, "lines": summary}


# ---------------------------------------------------------------------------------------- 2. bench
_BENCH_ROW = re.compile(r"^(naive|chunked|fused)\s+(\d+)\s+(.*)$")


def section_bench(args, device: torch.device) -> dict:
    if args.quick:
        sizes = ["--tokens", "64", "256", "--chunk-size", "32", "--vocab", "4096", "--hidden", "64"]
        sizes += ["--repeats", "1"]
    else:
        sizes = ["--tokens", "2048", "8192", "32768", "--chunk-size", "256", "--vocab", "151936"]
        sizes += ["--hidden", "4096", "--repeats", "3"]
    dtype = "bf16" if device.type == "cuda" else "fp32"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_losses.py"), "--device", device.type]
    cmd += ["--dtype", dtype, *sizes]
    print("$ " + " ".join(cmd[1:]), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.bench_timeout, check=False)
    print(out.stdout, end="")
    if out.returncode != 0:
        print(out.stderr[-4000:], end="")
        raise RuntimeError(f"bench_losses.py exited with {out.returncode}")
    lines, failed = [], False
    for row in out.stdout.splitlines():
        if m := _BENCH_ROW.match(row):
            impl, tokens, rest = m.groups()
            nums = rest.split()
            if nums[0].replace(".", "").isdigit():
                text = f"{impl} T={tokens}: peak extra {nums[0]} GiB, {nums[1]} s"
                if len(nums) == 4:
                    text += f", mem/chunked {nums[2]}, time/chunked {nums[3]}"
            else:
                failed = failed or "failed" in rest
                text = f"{impl} T={tokens}: {rest.strip()}"
            lines.append(text)
        elif "peak extra T=" in row or row.startswith("fused/chunked"):
            lines.append(row.strip())
    return {"ok": not failed, "lines": lines}


# -------------------------------------------------------------------------------------- 3. teacher
def _read_references(paths: list[str], n: int) -> list[dict]:
    rows = []
    for path in paths:
        with open(path) as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    rows = [r for r in rows if r.get("solution") and r.get("problem")]
    if len(rows) < n:
        raise ValueError(f"{paths}: only {len(rows)} rows with 'problem' and 'solution', need {n}")
    return sorted(rows, key=lambda r: len(r["solution"]), reverse=True)[:n]


def _build_model(device: torch.device, dtype: torch.dtype, spec: dict, vocab: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**{"vocab_size": vocab, **spec})
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise directly in the target dtype and on the device
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval()


def section_teacher(args, device: torch.device) -> dict:
    from transformers import AutoTokenizer

    from recipe.atesd.data.tiny_model import TOKENIZER_FILES, TinyQwen3Spec, padded_vocab_size
    from recipe.atesd.method.prompts import TeacherPromptConfig, teacher_prompt_ids
    from recipe.atesd.method.scoring import (
        build_teacher_batch,
        sequence_token_logprobs,
        teacher_response_logits,
    )

    tok_dir = Path(args.tokenizer)
    missing = [f for f in TOKENIZER_FILES if not (tok_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"--tokenizer {tok_dir}: missing {missing} (run `make model` or pass a dir)")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    spec = asdict(TinyQwen3Spec()) if args.quick else QWEN3_1P7B  # quick: the shipped tiny model's shape
    vocab = spec.get("vocab_size", padded_vocab_size(len(tokenizer)))
    if vocab < len(tokenizer):
        raise ValueError(f"model vocab {vocab} < tokenizer size {len(tokenizer)}")
    dtype = DTYPES[args.model_dtype]
    t0 = time.perf_counter()
    model = _build_model(device, dtype, spec, vocab)
    _sync(device)
    n_params = sum(p.numel() for p in model.parameters())
    attn = getattr(model.config, "_attn_implementation", "?")
    print(
        f"random Qwen3: {n_params / 1e9:.3f} B params, hidden {spec['hidden_size']}, "
        f"{spec['num_hidden_layers']} layers, vocab {vocab}, {args.model_dtype}, attention {attn}, "
        f"built in {time.perf_counter() - t0:.1f} s"
    )

    refs = _read_references(args.references, args.batch)
    cfg = TeacherPromptConfig()
    max_len = cfg.max_length
    gen = torch.Generator().manual_seed(0)
    responses = torch.randint(
        0, tokenizer.vocab_size, (args.batch, args.response_len), generator=gen
    ).tolist()
    print(
        f"batch {args.batch} x {args.response_len} response tokens (random ids); references: the "
        f"{args.batch} longest solutions of {', '.join(args.references)} "
        f"({min(len(r['solution']) for r in refs)}-{max(len(r['solution']) for r in refs)} chars); "
        f"segmenter {cfg.segmenter}, teacher_prompt.max_length {max_len}"
    )
    alphas = (0.5, 1.0)
    prompts, info = {}, {}
    for alpha in alphas:
        tps = [
            teacher_prompt_ids(tokenizer, r["problem"], r["solution"], alpha, cfg, max_len, r.get("answer"))
            for r in refs
        ]
        prompts[alpha] = [tp.ids for tp in tps]
        lens = [len(tp.ids) for tp in tps]
        info[alpha] = {
            "prompt_mean": sum(lens) / len(lens),
            "prompt_min": min(lens),
            "prompt_max": max(lens),
            "revealed": sum(tp.revealed.n_revealed for tp in tps),
            "segments": sum(tp.revealed.n_segments for tp in tps),
            "cut": sum(tp.n_cut_segments for tp in tps),
        }

    def score(alpha: float) -> tuple[float, float, torch.Tensor, object]:
        _sync(device)
        start = time.perf_counter()
        batch = build_teacher_batch(prompts[alpha], responses, tokenizer.pad_token_id)
        built = time.perf_counter()
        logits = teacher_response_logits(model, batch, device)
        _sync(device)
        end = time.perf_counter()
        return built - start, end - built, logits, batch

    # alignment: batched left-padded rows (LM head on response rows only) vs one unpadded forward each
    n_check, l_check = min(2, args.batch), min(256, args.response_len)
    p_chk, r_chk = prompts[0.5][:n_check], [r[:l_check] for r in responses[:n_check]]
    got = teacher_response_logits(model, build_teacher_batch(p_chk, r_chk, tokenizer.pad_token_id), device)
    with torch.no_grad():
        want = torch.cat(
            [
                model(input_ids=torch.tensor([p + r], device=device)).logits[
                    0, len(p) - 1 : len(p) + len(r) - 1
                ]
                for p, r in zip(p_chk, r_chk, strict=True)
            ]
        )
    tgt = torch.tensor([t for r in r_chk for t in r], device=device)[:, None]
    lp_got = got.float().log_softmax(-1).gather(-1, tgt)
    lp_want = want.float().log_softmax(-1).gather(-1, tgt)
    diff = (lp_got - lp_want).abs()
    total, count = sequence_token_logprobs(model, p_chk, r_chk, tokenizer.pad_token_id, device)
    probe_err = abs(total.item() - lp_want.double().sum().item()) / count.item()
    tol = 1e-4 if dtype == torch.float32 else 5e-2  # bf16: padded vs unpadded attention rounds differently
    aligned = diff.mean().item() <= tol and probe_err <= tol
    print(
        f"alignment ({n_check} seqs x {l_check} tokens, alpha=0.5, {args.model_dtype}): target log-prob "
        f"|batched - unpadded| max {diff.max().item():.2e} mean {diff.mean().item():.2e}; probe scorer "
        f"per-token |error| {probe_err:.2e} (tol {tol:.0e}) -> {'PASS' if aligned else 'FAIL'}"
    )
    del got, want

    for alpha in alphas:  # shape / finiteness check, then warm-up
        for _ in range(args.warmup):
            _, _, logits, batch = score(alpha)
        expected = (args.batch * args.response_len, vocab)
        if tuple(logits.shape) != expected or not bool(torch.isfinite(logits).all()):
            raise RuntimeError(
                f"alpha={alpha}: teacher logits {tuple(logits.shape)} (want {expected}) or non-finite"
            )
        info[alpha]["width"] = batch.input_ids.shape[1]
        del logits
    times = {a: ([], []) for a in alphas}
    peaks = {}
    for _ in range(args.repeats):  # interleaved, so drift affects both alphas alike
        for alpha in alphas:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            build_s, fwd_s, logits, _ = score(alpha)
            if device.type == "cuda":
                peaks[alpha] = torch.cuda.max_memory_allocated(device) / 1024**3
            del logits
            times[alpha][0].append(build_s)
            times[alpha][1].append(fwd_s)
    print(f"median of {args.repeats} after {args.warmup} warm-up; synchronised wall time")
    print(
        f"{'alpha':>5}{'prompt tok mean':>16}{'min':>6}{'max':>6}{'revealed/segs':>15}{'cut':>5}"
        f"{'padded BxS':>13}{'build ms':>10}{'forward ms':>12}{'total ms':>10}{'peak GiB':>10}"
    )
    med = {}
    for alpha in alphas:
        b, f = statistics.median(times[alpha][0]) * 1e3, statistics.median(times[alpha][1]) * 1e3
        t = statistics.median([x + y for x, y in zip(*times[alpha], strict=True)]) * 1e3
        med[alpha] = (b, f, t)
        i = info[alpha]
        peak = f"{peaks[alpha]:>10.2f}" if alpha in peaks else f"{'-':>10}"
        print(
            f"{alpha:>5}{i['prompt_mean']:>16.1f}{i['prompt_min']:>6}{i['prompt_max']:>6}"
            f"{i['revealed']:>9}/{i['segments']:<5}{i['cut']:>5}{args.batch:>7}x{i['width']:<5}"
            f"{b:>10.1f}{f:>12.1f}{t:>10.1f}{peak}"
        )
    ratio_total, ratio_fwd = med[0.5][2] / med[1.0][2], med[0.5][1] / med[1.0][1]
    ratio_prompt = info[0.5]["prompt_mean"] / info[1.0]["prompt_mean"]
    print(
        f"alpha=0.5 / alpha=1: total time {ratio_total:.3f}, forward {ratio_fwd:.3f}, "
        f"prompt tokens {ratio_prompt:.3f}, "
        f"sequence tokens {info[0.5]['width'] / info[1.0]['width']:.3f} (padded width)"
    )
    lines = [
        f"alpha={a}: prompt {info[a]['prompt_mean']:.0f} tok (mean), total {med[a][2]:.1f} ms "
        f"(build {med[a][0]:.1f}, forward {med[a][1]:.1f})"
        for a in alphas
    ]
    lines.append(f"ratio alpha=0.5/alpha=1: total {ratio_total:.3f}, forward {ratio_fwd:.3f}")
    lines.append(
        f"alignment batched vs unpadded: mean |d log p| {diff.mean().item():.2e}, probe {probe_err:.2e}"
    )
    return {"ok": aligned, "lines": lines}


# ------------------------------------------------------------------------------------------- main
SECTIONS = {"loss": section_loss, "bench": section_bench, "teacher": section_teacher}


def _versions(device: torch.device) -> list[str]:
    import transformers

    lines = [
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
        f"device {device}",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(
            f"GPU {props.name}, {props.total_memory / 1024**3:.1f} GiB, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}"
        )
    else:
        lines.append(f"CPU threads {torch.get_num_threads()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--tokenizer", default=str(REPO / "artifacts" / "tiny-qwen3"))
    parser.add_argument("--references", nargs="+", default=[str(REPO / "data" / "train" / "sample.jsonl")])
    parser.add_argument("--batch", type=int, default=None, help="teacher batch (default 8; quick 2)")
    parser.add_argument("--response-len", type=int, default=None, help="default 1024; quick 64")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="default 2; quick 1")
    parser.add_argument("--model-dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--loss-tokens", type=int, default=None, help="default 600; quick 37")
    parser.add_argument("--loss-vocab", type=int, default=None, help="default 151936; quick 2048")
    parser.add_argument("--loss-chunk", type=int, default=None, help="default 256; quick 16")
    parser.add_argument("--bench-timeout", type=int, default=300)
    args = parser.parse_args(argv)
    defaults = dict(batch=(8, 2), response_len=(1024, 64), repeats=(5, 2), warmup=(2, 1))
    defaults.update(loss_tokens=(600, 37), loss_vocab=(151_936, 2048), loss_chunk=(256, 16))
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2

    started = time.perf_counter()
    print("=" * 100)
    for line in _versions(device):
        print(line)
    results = {}
    for name in args.sections:
        print("\n" + "=" * 100 + f"\n[{name}]", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = SECTIONS[name](args, device)
        except Exception as exc:  # a failing section must not stop the others
            traceback.print_exc()
            results[name] = {"ok": False, "lines": [f"ERROR {type(exc).__name__}: {exc}"]}
        results[name]["seconds"] = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.empty_cache()
        sys.stdout.flush()

    print("\n" + "=" * 100 + "\nSUMMARY")
    for line in _versions(device):
        print(f"  {line}")
    for name, res in results.items():
        print(f"[{name}] {'OK' if res['ok'] else 'FAILED'} ({res['seconds']:.1f} s)")
        for line in res["lines"]:
            print(f"  {line}")
    ok = all(r["ok"] for r in results.values())
    print(f"overall: {'OK' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
