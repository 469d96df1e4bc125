"""Test helper: is an exported model (recipe/atesd/export.py) the trained actor? Used by the CPU e2e tests
(tests/test_atesd_cpu_e2e.py, tests/test_toy_cpu_e2e.py) on the checkpoints their stacks saved.

The *actor* here is the module verl trains, rebuilt from the checkpoint without the exporter's code: the
architecture of ``actor/huggingface/config.json`` (wrapped by PEFT with the ``lora_train_meta.json`` rank and
alpha and ``target_modules=all-linear`` for a LoRA run, as ``verl/workers/engine/fsdp/transformer_impl.py::
_build_lora_module`` wraps it) holding the checkpoint's tensors: each FSDP2 DTensor is its ranks' local
shards concatenated along its ``Shard`` dim (``torch.chunk`` order, as ``fully_shard`` splits dim 0), a plain or
``Replicate`` tensor is rank 0's and must be the same on every rank (the ATESD e2e test's LoRA run has 2
ranks, the others 1); an adapters-only step gets its base weights as the exporter's ``with_base_weights``
reads them. Its fp32 forward is the actor's log-probability function at that step.
"""

import json
from pathlib import Path

import torch


def actor_from_checkpoint(actor: Path):
    """The fp32 actor module of ``global_step_N/actor`` (module docstring)."""
    from peft import LoraConfig, get_peft_model
    from torch.distributed.tensor import DTensor
    from transformers import AutoConfig, AutoModelForCausalLM

    world = json.loads((actor / "fsdp_config.json").read_text())["world_size"]
    shards = [
        torch.load(actor / f"model_world_size_{world}_rank_{r}.pt", map_location="cpu", weights_only=False)
        for r in range(world)
    ]
    state = {k: _whole(k, [shard[k] for shard in shards], DTensor).float() for k in shards[0]}
    if all(
        "lora_" in k for k in state
    ):  # adapters only (save_lora_only): the base from the recorded model.path
        from recipe.atesd.export import with_base_weights

        state = with_base_weights(actor.parent, state)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(actor / "huggingface"), dtype=torch.float32
    )
    meta = actor / "lora_train_meta.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        lora = LoraConfig(
            task_type="CAUSAL_LM", r=m["r"], lora_alpha=m["lora_alpha"], target_modules="all-linear"
        )
        model = get_peft_model(model, lora)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}  # the embedding, when tied
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{actor}: checkpoint keys differ from the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.eval()


def _whole(key: str, parts: list, dtensor_type) -> torch.Tensor:
    """One parameter from its per-rank values (module docstring)."""
    if isinstance(parts[0], dtensor_type):
        (placement,) = parts[0].placements
        if placement.is_shard():
            return torch.cat([p._local_tensor for p in parts], dim=placement.dim)
        parts = [p._local_tensor for p in parts]
    if any(not torch.equal(p, parts[0]) for p in parts[1:]):
        raise ValueError(f"{key}: a replicated tensor differs between ranks")
    return parts[0]


def token_log_probs(model, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[t] | tokens[<t]) for t >= 1, float64."""
    with torch.no_grad():
        logits = model(input_ids=tokens).logits.double()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def fixed_tokens(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
