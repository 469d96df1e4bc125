"""Adapter-only LoRA checkpoints: verl's ``checkpoint.save_lora_only`` through its FSDP checkpoint manager
(verl/utils/checkpoint/fsdp_checkpoint_manager.py) on a tiny PEFT model wrapped in FSDP2 (gloo, world 1), and
the base-model guard in recipe/atesd/glue/lora_checkpoint.py."""

import os

import pytest
import torch
from conftest import tiny_qwen

from recipe.atesd.glue import lora_checkpoint
from recipe.atesd.glue.lora_checkpoint import DIGEST_FILE, check_base_model, record_base_model

VOCAB = 64
CONTENTS = ["model", "optimizer", "extra"]


def actor(mesh, lora_seed: int):
    """verl's LoRA actor in miniature: fp32 base (same weights every call, as from model.path) + PEFT adapters,
    FSDP2-wrapped, AdamW over module.parameters() as verl's engine builds it (transformer_impl._build_optimizer)."""
    from peft import LoraConfig, get_peft_model
    from verl.utils.fsdp_utils import apply_fsdp2

    model = tiny_qwen(VOCAB, 1).to(torch.float32).train()
    torch.manual_seed(lora_seed)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    apply_fsdp2(model, {"mesh": mesh, "reshard_after_forward": True}, {})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return model, opt


def manager(model, opt, lora_only: bool):
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    cfg = {"save_contents": CONTENTS, "load_contents": CONTENTS, "save_lora_only": lora_only}
    return FSDPCheckpointManager(model, opt, checkpoint_config=cfg)


def step(model, opt):
    ids = torch.randint(
        0, VOCAB, (2, 12)
    )  # from the global RNG: a resume must restore it to repeat the batch
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()


def snapshot(model, opt):
    params = {k: v.full_tensor().clone() for k, v in model.state_dict().items()}
    state = {
        (i, k): v.full_tensor().clone() if hasattr(v, "full_tensor") else v.clone()
        for i, s in enumerate(opt.state.values())
        for k, v in s.items()
    }
    return params, state


def assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def dir_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


def test_adapter_only_resume_is_exact_and_smaller(gloo, tmp_path):
    torch.manual_seed(0)
    model, opt = actor(gloo, lora_seed=1)
    for _ in range(2):
        step(model, opt)
    manager(model, opt, lora_only=True).save_checkpoint(str(tmp_path / "lora"), global_step=2)
    manager(model, opt, lora_only=False).save_checkpoint(str(tmp_path / "full"), global_step=2)
    saved = snapshot(model, opt)
    step(model, opt)  # the uninterrupted run's step 3
    after = snapshot(model, opt)

    fresh, fresh_opt = actor(gloo, lora_seed=99)  # other adapters, empty optimizer, RNG elsewhere
    torch.manual_seed(12345)
    manager(fresh, fresh_opt, lora_only=True).load_checkpoint(str(tmp_path / "lora"))
    for got, want in zip(snapshot(fresh, fresh_opt), saved, strict=True):
        assert_bitwise(got, want)
    step(fresh, fresh_opt)  # same batch (restored RNG), same Adam moments and step count
    for got, want in zip(snapshot(fresh, fresh_opt), after, strict=True):
        assert_bitwise(got, want)

    model_file = "model_world_size_1_rank_0.pt"
    lora_keys = torch.load(tmp_path / "lora" / model_file, weights_only=False).keys()
    assert lora_keys and all("lora_" in k for k in lora_keys)
    lora_b, full_b = dir_bytes(tmp_path / "lora"), dir_bytes(tmp_path / "full")
    print(
        f"\ntiny LoRA actor checkpoint: full {full_b} B, adapters only {lora_b} B "
        f"(model file {os.path.getsize(tmp_path / 'full' / model_file)} -> "
        f"{os.path.getsize(tmp_path / 'lora' / model_file)} B)"
    )
    assert lora_b < full_b


def base_dir(path, byte: int):
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(bytes([byte]) * 1000)
    return str(path)


def test_resume_onto_another_base_model_is_refused(tmp_path):
    same, other = base_dir(tmp_path / "a", 1), base_dir(tmp_path / "b", 2)
    step_dir = tmp_path / "global_step_2"
    step_dir.mkdir()
    record_base_model(str(step_dir), same)
    check_base_model(str(step_dir), same)
    check_base_model(str(step_dir), base_dir(tmp_path / "copy", 1))  # the same files elsewhere: accepted
    with pytest.raises(ValueError, match="not the base model"):
        check_base_model(str(step_dir), other)
    (step_dir / DIGEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=DIGEST_FILE):
        check_base_model(str(step_dir), same)


def test_a_hub_id_is_fingerprinted_from_its_cached_snapshot(tmp_path, monkeypatch):
    """The presets' model.path is a Hub id (Qwen/Qwen3-8B): the digest reads the snapshot the engine cached."""
    import huggingface_hub

    snapshot = base_dir(tmp_path / "snapshot", 1)
    calls = []

    def cached(repo_id, local_files_only=False):
        calls.append((repo_id, local_files_only))
        if repo_id != "Org/Cached":
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        return snapshot

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    lora_checkpoint.base_model_digest.cache_clear()
    assert lora_checkpoint.base_model_digest("Org/Cached") == lora_checkpoint.base_model_digest(snapshot)
    assert calls == [("Org/Cached", True)]
    with pytest.raises(FileNotFoundError, match="model.path=Org/Missing: neither a folder nor a cached"):
        lora_checkpoint.base_model_digest("Org/Missing")
