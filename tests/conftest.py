import os
import socket
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_qwen(vocab: int, seed: int, tied: bool = False):
    """A random fp64 Qwen3 (hidden 32, 2 layers) for exact in-process checks; same seed → same weights.
    ``tied``: the LM head is the input embedding (Qwen3 ≤ 4B)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=4096,
        attn_implementation="sdpa",
        tie_word_embeddings=tied,
    )
    return Qwen3ForCausalLM(cfg).to(torch.float64).eval()


@pytest.fixture(scope="module")
def gloo():
    """One-process gloo group (world size 1) and its CPU device mesh, for in-process FSDP2 checks; the
    rendezvous variables and the group leave with the fixture (per test module)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        pytest.fail("a process group is already initialised in this pytest process")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp:  # the rendezvous variables leave with the fixture
        mp.setenv("MASTER_ADDR", "127.0.0.1")
        mp.setenv("MASTER_PORT", str(port))
        dist.init_process_group("gloo", rank=0, world_size=1)
        try:
            yield init_device_mesh("cpu", (1,))
        finally:
            dist.destroy_process_group()
