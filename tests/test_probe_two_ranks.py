"""The probe signals on two FSDP2 ranks (gloo, two processes): no hang, and the same sums as one process.

``ATESDWorker._probe_sums`` (recipe/atesd/glue/worker.py) runs one FSDP forward per probe chunk — a collective
— then all-reduces [Σ log p, #tokens]. ``ProbeSet.shard`` (recipe/atesd/method/probe.py) pads every rank to
the same number of chunks; without that, a probe size that does not divide evenly over the ranks leaves one
rank in an all-gather that the other never joins (issue 15, item 1). Each case below gives the ranks unequal
real-row counts: (5 rows, batch 2) → rank 0 rows 0,2 | 4, rank 1 rows 1,3 | padding only; (7, 1) is the CPU
stack test's probe (tests/test_atesd_cpu_e2e.py); (1, 1) leaves rank 1 with padding only (8 rows on 16 GPUs).
Checked once by hand: with the pre-fix shard (no padding rows) the (5, 2) case never returns.
"""

import os
import socket
import time
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_qwen

VOCAB = 97
CASES = ((5, 2), (7, 1), (1, 1))  # (probe rows, probe.batch_size)
# Both sides are fp64 forwards of the same weights (FSDP2 gathers them exactly); the sums differ only in
# the order of additions across chunks and ranks: |Σ| ≲ 7 rows · 12 tokens · ln 97 ≈ 400 at u = 1.1e-16,
# ~1e-13. 1e-9 as tests/test_teacher_alignment.py; a dropped or double-counted row moves Σ by ≥ 1 (one
# token's log p on a random 97-token model is ≈ −4.6).
FP64_SUM_TOL = 1e-9
HANG_TIMEOUT_S = 300  # two processes importing verl on a loaded 2-core machine; a hang never returns


def probe_rows(n: int):
    """A ProbeSet of ``n`` tokenised rows of different lengths (prompts 2–7 tokens, references 1–12)."""
    from recipe.atesd.method.probe import ProbeSet

    gen = torch.Generator().manual_seed(n)
    probe = ProbeSet.__new__(ProbeSet)
    probe.rows = [{"id": f"r{i}"} for i in range(n)]
    probe.student_prompts = [torch.randint(1, VOCAB, (2 + i % 6,), generator=gen).tolist() for i in range(n)]
    probe.references = [
        torch.randint(1, VOCAB, (1 + (5 * i) % 12,), generator=gen).tolist() for i in range(n)
    ]
    return probe


def probe_worker(n: int, batch_size: int):
    """The state ``_probe_sums`` reads (what ``init_teacher`` sets), fp64 without autocast."""
    return SimpleNamespace(
        actor=SimpleNamespace(engine=SimpleNamespace(eval_mode=nullcontext)),
        _autocast=nullcontext,
        _device=lambda: "cpu",
        _probe=probe_rows(n),
        _settings=SimpleNamespace(probe_batch_size=batch_size),
        _tokenizer=SimpleNamespace(pad_token_id=0),
    )


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from verl.utils.fsdp_utils import apply_fsdp2

    from recipe.atesd.glue.worker import ATESDWorker

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = tiny_qwen(VOCAB, seed=0)
        apply_fsdp2(model, {"mesh": init_device_mesh("cpu", (2,)), "reshard_after_forward": True}, {})
        sums = {}
        for n, batch_size in CASES:
            worker = probe_worker(n, batch_size)
            sums[(n, batch_size)] = ATESDWorker._probe_sums(
                worker, model, lambda chunk: (chunk.student_prompts, chunk.references)
            )
        torch.save(sums, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_probe_sums_on_two_ranks_equal_one_process(tmp_path):
    import torch.multiprocessing as tmp

    from recipe.atesd.method.scoring import sequence_token_logprobs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = tmp.start_processes(_rank_main, args=(port, str(tmp_path)), nprocs=2, join=False)
    deadline, finished = time.monotonic() + HANG_TIMEOUT_S, False
    try:
        while not finished and time.monotonic() < deadline:
            finished = ctx.join(timeout=5)  # True once both ranks exited; a rank's exception is raised here
    finally:
        alive = [p.pid for p in ctx.processes if p.is_alive()]
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    assert finished and not alive, (
        f"ranks {alive} still running after {HANG_TIMEOUT_S} s: a probe collective hung"
    )
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    model = tiny_qwen(VOCAB, seed=0)
    for n, batch_size in CASES:
        probe = probe_rows(n)
        with torch.no_grad():
            whole = torch.stack(
                sequence_token_logprobs(model, probe.student_prompts, probe.references, 0, "cpu")
            )
        two = got[0][(n, batch_size)]
        assert torch.equal(two, got[1][(n, batch_size)]), "the all-reduce left the ranks with different sums"
        assert two[1].item() == whole[1].item() == sum(len(r) for r in probe.references), (n, batch_size)
        assert two[0].item() == pytest.approx(whole[0].item(), abs=FP64_SUM_TOL), (n, batch_size)
        print(
            f"probe {n} rows, batch {batch_size}: two ranks vs one process {abs(two[0] - whole[0]).item():.1e}"
        )
