"""Naive vs chunked vs fused full-vocabulary clipped forward KL from hidden states (docs/method.md §1): memory and time.

Every implementation starts from the same inputs — student final hidden states h_S [T, H] and LM head
W_S [V, H] (both trained), teacher hidden states h_T [T, H] and head W_T [V, H] (frozen) — and runs
forward + backward of ``loss.mean()``:
- naive:   logits = h W[ᵀ] for both sides, dense autograd loss over [T, V] tensors;
- chunked: the same logits, then ``losses.distill_token_losses`` (chunked kernel; [T, V] logits and
  their gradient still exist);
- fused:   ``fused_loss.fused_distill_loss`` (LM head inside the chunk loop; no [T, V] tensor).
Each (implementation, T) runs in a fresh subprocess. Peak extra memory = peak during the timed runs −
memory after the inputs exist − the bytes of the gradients every implementation must produce
(∂h_S and ∂W_S):
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (allocator bytes).
- CPU: the process's resident-set high-water mark (VmHWM in /proc/self/status, reset through
  /proc/self/clear_refs before the timed runs), i.e. what the OS really had to provide.
Time = the fastest of ``--repeats`` runs after one warm-up. A point whose estimated need exceeds the
cap — ``--mem-cap-gib`` if given, else 85 % of the memory free *at that point* (re-read before each
point: the machine may be shared) — prints "skipped (cap)" with both figures instead of running out
of memory: before an implementation's first point the
estimate is analytic (``PER_TOKEN_VOCAB_BUFFERS`` fp32 [T, V] buffers, an upper bound), afterwards a
linear extrapolation of the implementation's measured peak extra per token at its largest measured T,
times ``EXTRAPOLATION_MARGIN`` (an over-estimate for the fused path, whose extra is constant in T).

    python benchmarks/bench_losses.py                          # CPU, fp32, T = 2048 8192 16384 (tens of GiB)
    python benchmarks/bench_losses.py --threads 2 --mem-cap-gib 21.5   # idle 24 GiB box: docs/design.md table (29 min)
    python benchmarks/bench_losses.py --threads 1 --tokens 512 2048 --mem-cap-gib 7   # shared 24 GiB box
    python benchmarks/bench_losses.py --tokens 512 1024        # a quick check of the script (minutes)
    python benchmarks/bench_losses.py --device cuda --dtype bf16 --hidden 4096 --tokens 8192 32768
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atesd.method.fused_loss import fused_distill_loss  # noqa: E402
from recipe.atesd.method.losses import DistillLossConfig, distill_token_losses  # noqa: E402

GIB = 1024**3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
IMPLS = ("naive", "chunked", "fused")
# fp32 [T, V] buffers each implementation holds at its peak (the a-priori estimate for the memory cap):
# naive keeps the autograd graph of log_softmax / exp / product / clamp over both sides; chunked keeps
# the student logits, the teacher logits, their gradient and the matmul's gradient; fused none.
PER_TOKEN_VOCAB_BUFFERS = {"naive": 10, "chunked": 4, "fused": 0}
EXTRAPOLATION_MARGIN = 1.3


def naive_clipped_forward_kl(student, teacher, tau, temperature):
    """Dense autograd reference: Σ_v min(p_T (log p_T − log p_S), τ) over full [T, V] tensors."""
    lps = torch.log_softmax(student.float() / temperature, -1)
    lpt = torch.log_softmax(teacher.float() / temperature, -1).detach()
    return (lpt.exp() * (lpt - lps)).clamp(max=tau).sum(-1)


def _rss_hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def worker(args) -> dict:
    """One configuration in this (fresh) process; returns peak extra bytes and best time."""
    dev, dtype, tokens = torch.device(args.device), DTYPES[args.dtype], args.tokens[0]
    gen = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape, scale):
        return torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32).mul_(scale).to(dtype)

    # logits h Wᵀ of standard deviation ~3, as in the logit-level benchmarks and tests
    h_s = randn(tokens, args.hidden, scale=1.0).requires_grad_()
    w_s = randn(args.vocab, args.hidden, scale=3 / args.hidden**0.5).requires_grad_()
    h_t = randn(tokens, args.hidden, scale=1.0)
    w_t = randn(args.vocab, args.hidden, scale=3 / args.hidden**0.5)
    cfg = DistillLossConfig(clip_tau=args.tau, chunk_size=args.chunk_size)
    grad_bytes = (h_s.numel() + w_s.numel()) * h_s.element_size()

    def step():
        if args.impl == "fused":
            loss = fused_distill_loss(h_s, w_s, h_t, w_t, cfg, temperature=args.temperature)[0]
        else:
            student = h_s @ w_s.t()
            with torch.no_grad():
                teacher = h_t @ w_t.t()
            if args.impl == "naive":
                loss = naive_clipped_forward_kl(student, teacher, args.tau, args.temperature)
            else:
                loss = distill_token_losses(student, teacher, cfg, temperature=args.temperature)[0]
            del student, teacher
        loss.mean().backward()
        h_s.grad = w_s.grad = None

    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_now()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _rss_hwm()
    return {"extra": peak - base - grad_bytes, "time": min(times)}


def available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
    return info["MemAvailable"]


def run_one(args, impl, tokens) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--tokens", str(tokens)]
    cmd += ["--chunk-size", str(args.chunk_size), "--vocab", str(args.vocab), "--hidden", str(args.hidden)]
    cmd += ["--device", args.device, "--dtype", args.dtype, "--repeats", str(args.repeats)]
    cmd += ["--tau", str(args.tau), "--temperature", str(args.temperature), "--threads", str(args.threads)]
    # Fixed mmap threshold: every large tensor is its own mapping, returned to the OS when freed.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        errors = [line for line in out.stderr.splitlines() if "Error" in line]
        return {"error": errors[-1] if errors else f"exit code {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimated_need(args, impl, tokens, measured: dict) -> int:
    """Bytes a point needs: inputs + gradients + the estimated peak extra (module docstring)."""
    elt = DTYPES[args.dtype].itemsize
    inputs = (3 * tokens * args.hidden + 3 * args.vocab * args.hidden) * elt  # h_S, h_T, ∂h_S, W_S, W_T, ∂W_S
    done = sorted(t for (name, t), r in measured.items() if name == impl and "extra" in r)
    if not done:
        chunk_buffers = 8 * args.chunk_size * args.vocab * 4
        return inputs + PER_TOKEN_VOCAB_BUFFERS[impl] * tokens * args.vocab * 4 + chunk_buffers
    # measured beats the analytic count (an upper bound: chunked held 2.9 and naive 6.5 of its 4 and 10
    # [T, V] buffers at T=2048, 2026-11-29); extrapolated linearly with a margin of 1.3, the superlinear
    # growth seen for naive from T=512 to 2048 (1.44 -> 7.51 GiB, 1.3x the extrapolation); the measured
    # extra already holds the chunk buffers
    per_token = max(measured[(impl, done[-1])]["extra"], 0) / done[-1]
    return inputs + int(EXTRAPOLATION_MARGIN * per_token * tokens)


def memory_cap(args) -> int:
    """``--mem-cap-gib``, else 85 % of what is free now."""
    return int(args.mem_cap_gib * GIB) if args.mem_cap_gib else int(0.85 * available_bytes(args.device))


def main(args) -> None:
    cap_text = f"{args.mem_cap_gib:.1f} GiB" if args.mem_cap_gib else "85% of free memory, per point"
    print(
        f"clipped forward KL (tau={args.tau}) from hidden states, H={args.hidden}, V={args.vocab}, "
        f"chunk={args.chunk_size}, device={args.device}, dtype={args.dtype}, threads={args.threads}, "
        f"forward+backward, best of {args.repeats} after 1 warm-up, memory cap {cap_text}"
    )
    print(
        "peak extra = peak memory - (inputs after creation) - (gradient bytes of h_S and W_S); "
        + (
            "CUDA max_memory_allocated"
            if args.device == "cuda"
            else "CPU RSS high-water (VmHWM), fresh process"
        )
    )
    results: dict[tuple[str, int], dict] = {}
    for tokens in sorted(args.tokens):
        for impl in IMPLS:
            need, cap = estimated_need(args, impl, tokens, results), memory_cap(args)
            if need > cap:
                results[(impl, tokens)] = {"skip": need, "cap": cap}
            else:
                results[(impl, tokens)] = run_one(args, impl, tokens)
            print(f"  {impl} T={tokens}: {results[(impl, tokens)]}", file=sys.stderr, flush=True)

    print(f"\n{'impl':<9}{'T':>7}{'peak extra GiB':>16}{'time s':>9}{'mem/chunked':>13}{'time/chunked':>14}")
    for tokens in sorted(args.tokens):
        ref = results[("chunked", tokens)]
        for impl in IMPLS:
            r = results[(impl, tokens)]
            if "skip" in r:
                print(
                    f"{impl:<9}{tokens:>7}   skipped (cap): would need ~{r['skip'] / GIB:.1f} GiB, "
                    f"cap {r['cap'] / GIB:.1f} GiB"
                )
            elif "error" in r:
                print(f"{impl:<9}{tokens:>7}   failed: {r['error']}")
            else:
                ratios = ""
                if "extra" in ref:
                    ratios = f"{r['extra'] / ref['extra']:>13.3f}{r['time'] / ref['time']:>14.2f}"
                print(f"{impl:<9}{tokens:>7}{r['extra'] / GIB:>16.3f}{r['time']:>9.2f}{ratios}")
    lo, hi = min(args.tokens), max(args.tokens)
    for impl in IMPLS:
        a, b = results[(impl, lo)], results[(impl, hi)]
        if hi > lo and "extra" in a and "extra" in b:
            print(f"{impl}: peak extra T={hi} / T={lo} = {b['extra'] / max(a['extra'], 1):.2f}")
    at = 8192 if 8192 in args.tokens else hi
    fused, chunked = results[("fused", at)], results[("chunked", at)]
    ratio = f"{fused['extra'] / chunked['extra']:.3f}" if "extra" in fused and "extra" in chunked else "n/a"
    print(f"fused/chunked peak-extra at T={at}: {ratio}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--vocab", type=int, default=151_669)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--mem-cap-gib",
        type=float,
        default=None,
        help="skip points estimated above it (default: 85%% of free)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    if cli.worker:
        print(json.dumps(worker(cli)))
    else:
        main(cli)
