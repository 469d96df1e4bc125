"""Chunked vs naive full-vocabulary clipped forward KL (method.md §1 and §4): memory and time.

Each (implementation, chunk size, T) runs forward + backward of ``loss.mean()`` in a fresh
subprocess. Peak extra memory = peak during the timed runs − memory after the inputs exist − the
bytes of the student-logit gradient (which any implementation must produce):
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (allocator bytes).
- CPU: the process's resident-set high-water mark (VmHWM in /proc/self/status, reset through
  /proc/self/clear_refs before the timed runs), i.e. what the OS really had to provide.
Time = the fastest of ``--repeats`` runs after one warm-up. Naive runs whose extrapolated need
(from the smallest T's measured extra per token) exceeds the memory available are skipped.

    python benchmarks/bench_losses.py                          # CPU, fp32
    python benchmarks/bench_losses.py --device cuda --dtype bf16
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

from recipe.atesd.method.losses import DistillLossConfig, distill_token_losses  # noqa: E402

GIB = 1024**3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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
    student = (torch.randn(tokens, args.vocab, generator=gen, device=dev, dtype=dtype) * 3).requires_grad_()
    teacher = torch.randn(tokens, args.vocab, generator=gen, device=dev, dtype=dtype) * 3
    cfg = DistillLossConfig(clip_tau=args.tau, temperature=args.temperature, chunk_size=args.chunk_size)
    grad_bytes = student.numel() * student.element_size()

    def step():
        if args.impl == "naive":
            loss = naive_clipped_forward_kl(student, teacher, args.tau, args.temperature)
        else:
            loss = distill_token_losses(student, teacher, cfg)[0]
        loss.mean().backward()
        student.grad = None

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


def run_one(args, impl, tokens, chunk_size) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--tokens", str(tokens)]
    cmd += ["--chunk-size", str(chunk_size), "--vocab", str(args.vocab), "--device", args.device]
    cmd += ["--dtype", args.dtype, "--repeats", str(args.repeats), "--tau", str(args.tau)]
    cmd += ["--temperature", str(args.temperature), "--threads", str(args.threads)]
    # Fixed mmap threshold: every large tensor is its own mapping, returned to the OS when freed.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        errors = [line for line in out.stderr.splitlines() if "Error" in line]
        return {"error": errors[-1] if errors else f"exit code {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args) -> None:
    elt = DTYPES[args.dtype].itemsize
    print(
        f"clipped forward KL (tau={args.tau}), V={args.vocab}, device={args.device}, dtype={args.dtype}, "
        f"threads={args.threads}, forward+backward, best of {args.repeats} after 1 warm-up"
    )
    print(
        "peak extra = peak memory - (inputs after creation) - (student-logit gradient bytes); "
        + (
            "CUDA max_memory_allocated"
            if args.device == "cuda"
            else "CPU RSS high-water (VmHWM), fresh process"
        )
    )
    naive, chunked = {}, {}
    naive_per_tok = None
    for tokens in sorted(args.tokens):
        inputs = 3 * tokens * args.vocab * elt  # student, teacher, gradient
        if naive_per_tok is not None:
            need = inputs + naive_per_tok * tokens
            if need > 0.9 * available_bytes(args.device):
                naive[tokens] = {"skip": need}
        if tokens not in naive:
            naive[tokens] = run_one(args, "naive", tokens, 0)
            if naive_per_tok is None and "extra" in naive[tokens]:
                naive_per_tok = naive[tokens]["extra"] / tokens
        for chunk in args.chunk_sizes:
            chunked[(tokens, chunk)] = run_one(args, "chunked", tokens, chunk)

    print(f"\n{'impl':<16}{'T':>6}{'peak extra GiB':>16}{'time s':>9}{'mem/naive':>11}{'time/naive':>12}")
    for tokens in sorted(args.tokens):
        nv = naive[tokens]
        if "skip" in nv:
            print(f"{'naive':<16}{tokens:>6}   skipped (would need {nv['skip'] / GIB:.1f} GiB, extrapolated)")
        elif "error" in nv:
            print(f"{'naive':<16}{tokens:>6}   failed: {nv['error']}")
        else:
            print(f"{'naive':<16}{tokens:>6}{nv['extra'] / GIB:>16.3f}{nv['time']:>9.2f}")
        for chunk in args.chunk_sizes:
            r = chunked[(tokens, chunk)]
            name = f"chunked c={chunk}"
            if "error" in r:
                print(f"{name:<16}{tokens:>6}   failed: {r['error']}")
                continue
            ratios = ""
            if "extra" in nv:
                ratios = f"{r['extra'] / nv['extra']:>11.3f}{r['time'] / nv['time']:>12.2f}"
            print(f"{name:<16}{tokens:>6}{r['extra'] / GIB:>16.3f}{r['time']:>9.2f}{ratios}")
    lo, hi = min(args.tokens), max(args.tokens)
    for chunk in args.chunk_sizes:
        a, b = chunked[(lo, chunk)], chunked[(hi, chunk)]
        if "extra" in a and "extra" in b:
            print(f"chunked c={chunk}: peak extra T={hi} / T={lo} = {b['extra'] / max(a['extra'], 1):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--vocab", type=int, default=151_669)
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, default=1024, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    if cli.worker:
        print(json.dumps(worker(cli)))
    else:
        main(cli)
