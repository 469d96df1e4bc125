import os
import sys
from pathlib import Path

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
