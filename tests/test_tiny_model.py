import json

import pytest
from safetensors import safe_open

from recipe.atesd.data.tiny_model import (
    STAMP_NAME,
    TinyQwen3Spec,
    build_tiny_model,
    is_built,
    padded_vocab_size,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", seed=0)


def test_padded_vocab_size_rounds_up_to_multiple_of_64():
    assert padded_vocab_size(151_669) == 151_680
    assert padded_vocab_size(128) == 128
    assert padded_vocab_size(129) == 192


def test_padded_vocab_size_rejects_non_positive():
    with pytest.raises(ValueError, match="n_tokens"):
        padded_vocab_size(0)


def test_config_vocab_covers_tokenizer_and_is_padded(built):
    from transformers import AutoTokenizer

    config = json.loads((built / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(built), local_files_only=True)
    assert config["vocab_size"] % 64 == 0
    assert len(tokenizer) <= config["vocab_size"] < len(tokenizer) + 64
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert config["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_chat_template_is_qwen3(built):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(built), local_files_only=True)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+1?"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert text.startswith("<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n")
    assert "<think>" in text


def test_weights_are_bf16_with_padded_embedding(built):
    with safe_open(str(built / "model.safetensors"), "pt") as f:
        emb = f.get_tensor("model.embed_tokens.weight")
    assert str(emb.dtype) == "torch.bfloat16"
    assert tuple(emb.shape) == (151_680, 64)
    assert emb.float().std() > 0


def test_rebuild_same_seed_is_byte_identical(built, tmp_path):
    other = build_tiny_model(tmp_path / "again", seed=0)
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(p.name for p in other.iterdir())
    for name in names:
        assert (built / name).read_bytes() == (other / name).read_bytes(), name


def test_different_seed_gives_different_weights(built, tmp_path):
    other = build_tiny_model(tmp_path / "seed1", seed=1)
    assert (built / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()


def test_second_build_is_skipped(built):
    weights = built / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert is_built(built, 0)
    build_tiny_model(built, seed=0)
    assert weights.stat().st_mtime_ns == mtime


def test_changed_seed_or_spec_triggers_rebuild(tmp_path):
    out = build_tiny_model(tmp_path / "m", seed=0)
    assert not is_built(out, 1)
    assert not is_built(out, 0, TinyQwen3Spec(num_hidden_layers=3))
    build_tiny_model(out, seed=1)
    assert json.loads((out / STAMP_NAME).read_text())["seed"] == 1
