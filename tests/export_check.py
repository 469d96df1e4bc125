"""Test helper: is an exported model (recipe/atesd/export.py) the trained actor? Used by the CPU e2e tests
(tests/test_atesd_cpu_e2e.py, tests/test_toy_cpu_e2e.py) on the checkpoints their stacks saved.

The *actor* here is the module verl trains, rebuilt from the checkpoint without the exporter's code: the
architecture of ``actor/huggingface/config.json`` (wrapped by PEFT with the ``lora_train_meta.json`` rank and
alpha and ``target_modules=all-linear`` for a LoRA run, as ``verl/workers/engine/fsdp/transformer_impl.py::
_build_lora_module`` wraps it) holding the rank-0 shard's tensors (world size 1 in these tests: the local
tensor is the whole parameter; an adapters-only step gets its base weights as the exporter's
``with_base_weights`` reads them). Its fp32 forward is the actor's log-probability function at that step.
"""

import json
from pathlib import Path

import torch


def actor_from_checkpoint(actor: Path):
    """The fp32 actor module of ``global_step_N/actor`` (module docstring)."""
    from peft import LoraConfig, get_peft_model
    from torch.distributed.tensor import DTensor
    from transformers import AutoConfig, AutoModelForCausalLM

    if json.loads((actor / "fsdp_config.json").read_text())["world_size"] != 1:
        raise ValueError(f"{actor}: this helper reads single-rank checkpoints")
    shard = torch.load(actor / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    state = {k: (v._local_tensor if isinstance(v, DTensor) else v).float() for k, v in shard.items()}
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


def token_log_probs(model, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[t] | tokens[<t]) for t >= 1, float64."""
    with torch.no_grad():
        logits = model(input_ids=tokens).logits.double()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def fixed_tokens(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
