"""recipe/atesd/export.py on checkpoints built here in verl 0.9.1's layout (no stack).

``write_checkpoint`` saves a model the way ``verl/utils/checkpoint/fsdp_checkpoint_manager.py::save_checkpoint``
does for FSDP2: one ``model_world_size_W_rank_r.pt`` per rank holding DTensors ``Shard(0)`` (the rank's rows),
``fsdp_config.json``, ``huggingface/`` (config, tokenizer, generation config) and, for LoRA,
``lora_train_meta.json``; the DTensors live on a 1-process gloo mesh, so W > 1 is written by slicing rows.
verl's own merger (``FSDPModelMerger``) reads the same files: the bf16 export must equal its output bit for bit.
"""

import json
import re
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_qwen

from recipe.atesd import export
from recipe.atesd.export import CheckpointError, export_run, export_step

VOCAB = 128  # the toy tokenizer's 111 tokens, padded
TOKENS = torch.tensor([[5, 17, 42, 99, 3, 64, 110, 7, 8, 9, 23, 31]])


@pytest.fixture(scope="module")
def mesh():
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tokenizer():
    from recipe.atesd.toy.tokenizer import make_tokenizer

    return make_tokenizer()


def fp32_model(seed=0, vocab=VOCAB):
    return tiny_qwen(vocab, seed).float()


def write_checkpoint(root: Path, step: int, state: dict, config, tokenizer, mesh, world=2, lora=None):
    from torch.distributed.tensor import DTensor, Shard
    from transformers import GenerationConfig

    actor = root / f"global_step_{step}" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    for rank in range(world):
        shard = {}
        for key, value in state.items():
            rows = value.detach().chunk(world, dim=0)[rank].clone()
            shard[key] = DTensor.from_local(
                rows, mesh, [Shard(0)], run_check=False, shape=value.shape, stride=value.stride()
            )
        torch.save(shard, actor / f"model_world_size_{world}_rank_{rank}.pt")
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": world}))
    config.architectures = [type(tiny_qwen(8, 0)).__name__]  # what save_pretrained of the model records
    config.save_pretrained(actor / "huggingface")
    tokenizer.save_pretrained(actor / "huggingface")
    GenerationConfig(eos_token_id=2, pad_token_id=0).save_pretrained(actor / "huggingface")
    if lora:
        (actor / "lora_train_meta.json").write_text(json.dumps(lora))
    (root / "latest_checkpointed_iteration.txt").write_text(str(step))
    return actor


def log_probs(model, tokens=TOKENS) -> torch.Tensor:
    """log p(token_t | tokens_<t) of the fixed tokens, in float64 for the comparison."""
    with torch.no_grad():
        logits = model(input_ids=tokens).logits.double()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def full_state(model) -> dict:
    return {
        k: v for k, v in model.state_dict().items() if k != "lm_head.weight"
    }  # tied (verl saves both too)


@pytest.fixture
def full_ckpt(tmp_path, mesh, tokenizer):
    model = fp32_model()
    state = dict(model.state_dict())  # FSDP2's state dict holds the tied alias too
    write_checkpoint(tmp_path / "ckpt", 3, state, model.config, tokenizer, mesh)
    return tmp_path / "ckpt", model


@pytest.fixture
def one_rank_ckpt(tmp_path, mesh, tokenizer):
    """world_size 1: verl's merger takes the rank count from the DTensors' mesh (1 process here)."""
    model = fp32_model()
    write_checkpoint(tmp_path / "ckpt1", 3, dict(model.state_dict()), model.config, tokenizer, mesh, world=1)
    return tmp_path / "ckpt1", model


def test_float32_export_is_the_checkpoint_exactly(full_ckpt, tmp_path):
    root, model = full_ckpt
    (result,) = export_run(root, tmp_path / "out", dtype="float32")
    assert result.step == 3 and not result.skipped  # the tracker's step
    exported = load(result.out_dir)
    for key, value in full_state(model).items():
        assert torch.equal(exported.state_dict()[key], value), key
    # same weights, same kernels: the log-probs are identical
    assert torch.equal(log_probs(exported), log_probs(model))
    from transformers import AutoTokenizer

    assert (
        AutoTokenizer.from_pretrained(result.out_dir).get_vocab()
        == AutoTokenizer.from_pretrained(root / "global_step_3" / "actor" / "huggingface").get_vocab()
    )
    assert json.loads((result.out_dir / "generation_config.json").read_text())["eos_token_id"] == 2
    marker = json.loads((result.out_dir / "export.json").read_text())
    assert marker["step"] == 3 and marker["dtype"] == "float32" and marker["world_size"] == 2


def test_bfloat16_export_equals_verls_merger(one_rank_ckpt, tmp_path):
    from safetensors.torch import load_file

    from recipe.atesd.glue.platform import configure_process_env

    configure_process_env()  # before verl's first import in this process, as the entry points do
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    root, _ = one_rank_ckpt
    actor = root / "global_step_3" / "actor"
    (ours,) = export_run(root, tmp_path / "out", steps=[3])
    cfg = ModelMergerConfig(
        operation="merge",
        backend="fsdp",
        local_dir=str(actor),
        target_dir=str(tmp_path / "verl"),
        hf_model_config_path=str(actor / "huggingface"),
    )
    FSDPModelMerger(cfg).merge_and_save()
    a, b = load_file(ours.out_dir / "model.safetensors"), load_file(tmp_path / "verl" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == torch.bfloat16 and torch.equal(a[key], b[key]), key


def test_export_is_idempotent_and_atomic(full_ckpt, tmp_path):
    root, _ = full_ckpt
    out = tmp_path / "out"
    (first,) = export_run(root, out)
    stamp = (first.out_dir / "model.safetensors").stat().st_mtime_ns
    (again,) = export_run(root, out, all_steps=True)
    assert again.skipped and (again.out_dir / "model.safetensors").stat().st_mtime_ns == stamp
    # a killed export leaves only the .partial folder, which the next export replaces
    (out / ".step_3.partial").mkdir()
    (out / ".step_3.partial" / "junk").write_text("x")
    (first.out_dir / "export.json").unlink()
    with pytest.raises(CheckpointError, match="exists without export.json"):
        export_step(root, 3, out)


def lora_model(seed=0):
    from peft import LoraConfig, get_peft_model

    base = fp32_model(seed)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", bias="none"))
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # "trained" adapters: B is zero at initialisation, which would merge to nothing
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return peft_model.eval()


def test_lora_export_merges_adapters(tmp_path, mesh, tokenizer):
    from peft import PeftModel

    trained = lora_model()
    state = dict(trained.state_dict())
    assert any(k.startswith("base_model.model.") and ".base_layer." in k for k in state)
    meta = {"r": 4, "lora_alpha": 8, "task_type": "CAUSAL_LM"}
    root = tmp_path / "ckpt"
    write_checkpoint(root, 2, state, trained.base_model.model.config, tokenizer, mesh, lora=meta)
    (result,) = export_run(root, tmp_path / "out", dtype="float32", adapter=True)
    merged = load(result.out_dir)
    assert not any("lora" in k for k in merged.state_dict())
    # Merged W + (alpha/r) B A vs the adapter applied on the side: same maths, other fp32 rounding order. Each
    # fp32 product is off by ~u·sqrt(k) relative (u = 6e-8, k <= 64 here), compounded over 2 layers and the
    # log-softmax of O(1) logits: ~1e-6 (seen 7.9e-8); 1e-5 is far below what the adapters change (0.22 here,
    # so a wrong alpha/r scale or a dropped module moves the log-probs by >= 1e-2).
    reference = log_probs(trained)
    torch.testing.assert_close(log_probs(merged), reference, atol=1e-5, rtol=0)
    assert (reference - log_probs(fp32_model())).abs().max() > 0.1  # the adapters do change the model
    # the adapter alone, on the initial base weights, is the trained model again
    adapter_dir = result.out_dir / "lora_adapter"
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["lora_alpha"] == 8
    reloaded = PeftModel.from_pretrained(fp32_model(), adapter_dir).eval()
    torch.testing.assert_close(log_probs(reloaded), reference, atol=0, rtol=0)
    assert json.loads((result.out_dir / "export.json").read_text())["lora"]["r"] == 4


def test_adapter_only_lora_export_merges_onto_the_recorded_base(tmp_path, mesh, tokenizer):
    from recipe.atesd.glue.lora_checkpoint import base_model_digest, record_base_model

    trained = lora_model()
    state = dict(trained.state_dict())
    meta = {"r": 4, "lora_alpha": 8, "task_type": "CAUSAL_LM"}
    config = trained.base_model.model.config
    write_checkpoint(tmp_path / "full", 2, state, config, tokenizer, mesh, lora=meta)
    adapters = {k: v for k, v in state.items() if "lora_" in k}  # what verl's save_lora_only keeps
    root = tmp_path / "adapters"
    write_checkpoint(root, 2, adapters, config, tokenizer, mesh, lora=meta)
    base_dir = tmp_path / "base"
    fp32_model().save_pretrained(base_dir)  # the model.path the run started from
    record_base_model(str(root / "global_step_2"), str(base_dir))
    (full,) = export_run(tmp_path / "full", tmp_path / "out_full", dtype="float32")
    (result,) = export_run(root, tmp_path / "out", dtype="float32")
    a, b = load(full.out_dir).state_dict(), load(result.out_dir).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    fp32_model(seed=5).save_pretrained(base_dir)  # the base changed after the run saved
    base_model_digest.cache_clear()  # a new process would read the files again
    with pytest.raises(CheckpointError, match="not the base model"):
        export_run(root, tmp_path / "out2")
    (root / "global_step_2" / "base_model_digest.json").unlink()
    with pytest.raises(CheckpointError, match="base_model_digest.json: missing"):
        export_run(root, tmp_path / "out3")


def test_lora_without_its_metadata_is_refused(tmp_path, mesh, tokenizer):
    trained = lora_model()
    root = tmp_path / "ckpt"
    write_checkpoint(root, 2, dict(trained.state_dict()), trained.base_model.model.config, tokenizer, mesh)
    with pytest.raises(CheckpointError, match="lora_train_meta.json: missing"):
        export_run(root, tmp_path / "out")


def test_merge_lora_formula():
    """W + (alpha/r) B @ A on named tensors; names lose PEFT's prefix and base_layer."""
    a, b, w = torch.randn(2, 3), torch.randn(4, 2), torch.randn(4, 3)
    state = {
        "base_model.model.x.q_proj.base_layer.weight": w,
        "base_model.model.x.q_proj.lora_A.default.weight": a,
        "base_model.model.x.q_proj.lora_B.default.weight": b,
        "base_model.model.x.norm.weight": torch.ones(3),
    }
    merged, adapter = export.merge_lora(state, r=2, lora_alpha=6)
    torch.testing.assert_close(merged["x.q_proj.weight"], w + 3.0 * b @ a)
    assert set(merged) == {"x.q_proj.weight", "x.norm.weight"}
    assert set(adapter) == {
        "base_model.model.x.q_proj.lora_A.weight",
        "base_model.model.x.q_proj.lora_B.weight",
    }
    del state["base_model.model.x.q_proj.lora_B.default.weight"]
    with pytest.raises(CheckpointError, match="has lora_A only"):
        export.merge_lora(state, r=2, lora_alpha=6)


# --- half-written / wrong checkpoints: each a CheckpointError naming the file ---


def test_missing_step_names_the_saved_ones(full_ckpt, tmp_path):
    root, _ = full_ckpt
    with pytest.raises(CheckpointError, match=r"global_step_7: no such checkpoint \(saved: \[3\]\)"):
        export_run(root, tmp_path / "out", steps=[7])


def test_no_checkpoints_at_all(tmp_path):
    with pytest.raises(CheckpointError, match="no global_step_N/ folder"):
        export_run(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda a: (a / "model_world_size_2_rank_1.pt").unlink(),
            "model_world_size_2_rank_1.pt: missing shard",
        ),
        (
            lambda a: (a / "model_world_size_2_rank_1.pt").write_bytes(b""),
            "model_world_size_2_rank_1.pt: empty shard",
        ),
        (
            lambda a: (a / "model_world_size_2_rank_0.pt").write_bytes(
                (a / "model_world_size_2_rank_0.pt").read_bytes()[:5000]
            ),
            "model_world_size_2_rank_0.pt: corrupt shard",
        ),
        (lambda a: (a / "fsdp_config.json").unlink(), "fsdp_config.json: missing"),
        (lambda a: (a / "huggingface" / "config.json").unlink(), "huggingface/config.json: missing"),
        (lambda a: (a / "huggingface" / "tokenizer_config.json").unlink(), "tokenizer_config.json: missing"),
    ],
    ids=["missing-shard", "empty-shard", "truncated-shard", "no-fsdp-config", "no-hf-config", "no-tokenizer"],
)
def test_half_written_checkpoint_is_refused(full_ckpt, tmp_path, damage, message):
    root, _ = full_ckpt
    damage(root / "global_step_3" / "actor")
    with pytest.raises(CheckpointError, match=message):
        export_run(root, tmp_path / "out")
    assert not (tmp_path / "out" / "step_3").exists()


def test_a_pickle_payload_in_a_shard_is_refused(full_ckpt, tmp_path):
    """Shards are read with ``torch.load(weights_only=True)``: a shard whose unpickling runs code is refused
    naming the file, and the code never runs (the DTensor shards above load the same way)."""
    from test_trainer_glue import RunsCode

    root, _ = full_ckpt
    marker = tmp_path / "marker"
    shard = root / "global_step_3" / "actor" / "model_world_size_2_rank_1.pt"
    torch.save({"model.embed_tokens.weight": RunsCode(marker)}, shard)
    with pytest.raises(
        CheckpointError,
        match=rf"{re.escape(str(shard))}: refused: .*pickled .*arbitrary code.*checkpoints you trust",
    ):
        export_run(root, tmp_path / "out")
    assert not marker.exists()


def test_tokenizer_of_another_model_is_refused(tmp_path, mesh, tokenizer):
    model = fp32_model(vocab=64)  # embedding rows < the tokenizer's 111 tokens
    write_checkpoint(tmp_path / "ckpt", 1, dict(model.state_dict()), model.config, tokenizer, mesh)
    with pytest.raises(
        CheckpointError, match="tokenizer has 111 tokens but the model's embedding has 64 rows"
    ):
        export_run(tmp_path / "ckpt", tmp_path / "out")


def test_shards_of_another_architecture_are_refused(tmp_path, mesh, tokenizer):
    model = fp32_model()
    state = dict(model.state_dict())
    del state["model.layers.1.mlp.up_proj.weight"]
    write_checkpoint(tmp_path / "ckpt", 1, state, model.config, tokenizer, mesh)
    with pytest.raises(CheckpointError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\]"):
        export_run(tmp_path / "ckpt", tmp_path / "out")


@pytest.mark.parametrize("world", [1, 2])
def test_the_e2e_helper_rebuilds_the_actor_from_a_checkpoint(tmp_path, mesh, tokenizer, world):
    """tests/export_check.py (the e2e tests' reference actor) on checkpoints built here: it gives back the
    module that was saved, full fine-tuning, LoRA and adapters-only LoRA, bit for bit, from 1 or 2 rank shards
    (the ATESD e2e test's LoRA run has 2 ranks)."""
    from export_check import actor_from_checkpoint, token_log_probs

    from recipe.atesd.glue.lora_checkpoint import record_base_model

    model = fp32_model()
    write_checkpoint(
        tmp_path / "full", 1, dict(model.state_dict()), model.config, tokenizer, mesh, world=world
    )
    actor = actor_from_checkpoint(tmp_path / "full" / "global_step_1" / "actor")
    assert torch.equal(token_log_probs(actor, TOKENS), log_probs(model))
    trained = lora_model()
    meta = {"r": 4, "lora_alpha": 8, "task_type": "CAUSAL_LM"}
    config = trained.base_model.model.config
    write_checkpoint(
        tmp_path / "lora", 1, dict(trained.state_dict()), config, tokenizer, mesh, world=world, lora=meta
    )
    actor = actor_from_checkpoint(tmp_path / "lora" / "global_step_1" / "actor")
    assert torch.equal(token_log_probs(actor, TOKENS), log_probs(trained))
    adapters = {k: v for k, v in trained.state_dict().items() if "lora_" in k}  # save_lora_only
    write_checkpoint(tmp_path / "adapters", 1, adapters, config, tokenizer, mesh, world=world, lora=meta)
    fp32_model().save_pretrained(tmp_path / "base")
    record_base_model(str(tmp_path / "adapters" / "global_step_1"), str(tmp_path / "base"))
    actor = actor_from_checkpoint(tmp_path / "adapters" / "global_step_1" / "actor")
    assert torch.equal(token_log_probs(actor, TOKENS), log_probs(trained))


def test_all_leaves_out_a_step_after_the_tracker(full_ckpt, tmp_path, mesh, tokenizer):
    """verl writes the tracker once a checkpoint is complete: a later global_step_N is still being written."""
    root, model = full_ckpt
    (root / "global_step_6" / "actor").mkdir(parents=True)  # a save in progress: no shards yet
    results = export_run(root, tmp_path / "out", all_steps=True)
    assert [r.step for r in results] == [3]
    (
        root / "latest_checkpointed_iteration.txt"
    ).unlink()  # no tracker: every saved step, and this one is refused
    with pytest.raises(
        CheckpointError, match=r"global_step_6/actor/huggingface: missing \(checkpoint not finished\?\)"
    ):
        export_run(root, tmp_path / "out", all_steps=True)
