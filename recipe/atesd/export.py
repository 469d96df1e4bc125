"""verl checkpoints → Hugging Face model directories (docs/evaluation.md, "From a run to the table").

``python -m recipe.atesd.export RUN_DIR [--step N | --all] --out DIR [--dtype bfloat16|float32] [--adapter]``

``RUN_DIR`` is a run's ``trainer.default_local_dir`` (it holds ``global_step_N/``) or a folder with a
``checkpoints/`` subfolder (``make demo``'s ``outputs/demo``). Default step: the one named by verl's tracker
``latest_checkpointed_iteration.txt``. Each step becomes ``DIR/step_N/``: ``model.safetensors`` +
``config.json``, the tokenizer files and ``generation_config.json`` of the checkpoint's ``actor/huggingface/``,
and ``export.json`` (source, dtype, LoRA merge), written last; with ``--adapter`` a LoRA run also gets
``DIR/step_N/lora_adapter/`` (PEFT ``adapter_config.json`` + ``adapter_model.safetensors``). ``--all``: every
saved step up to the tracker's (a later ``global_step_N`` is still being written).

What verl 0.9.1 writes (``verl/utils/checkpoint/fsdp_checkpoint_manager.py::save_checkpoint``), per step, in
``global_step_N/actor/``: ``model_world_size_W_rank_r.pt`` for r < W (the rank's FSDP sharded state dict:
DTensors ``Shard(dim)`` / ``Replicate``, or plain replicated tensors), ``fsdp_config.json``
``{"FSDP_version", "world_size"}``, ``huggingface/`` (config + tokenizer + generation config) and, for LoRA,
``lora_train_meta.json`` ``{"r", "lora_alpha", "task_type"}``. LoRA runs keep PEFT's names:
``base_model.model.<name>.base_layer.weight``, ``...lora_A.default.weight`` (r × in) and
``...lora_B.default.weight`` (out × r).

Merging: shards are concatenated along their ``Shard`` dim (verl's ``FSDPModelMerger._merge_by_placement``);
plain tensors must be identical on every rank (verl's ``merge_non_dtensor_shards``). A LoRA layer becomes

    W = W_base + (lora_alpha / r) · B @ A        (PEFT's ``LoraLayer.get_delta_weight``, use_rslora=False,
                                                  as verl's ``_build_lora_module`` builds it)

computed in float64, then cast to ``--dtype``. verl's own ``model_merger`` is not called as a whole: it casts
every tensor to bf16, saves a LoRA run's *base* weights with the adapter beside them (never merged), and
reports a bad checkpoint as an ``assert``. Its helpers are reused where they fit (tied-weight handling).

Idempotent: a step whose ``export.json`` exists is skipped; an export is built in ``DIR/.step_N.partial`` and
renamed into place, so a killed export leaves no ``step_N``. A half-written or altered checkpoint is refused
with a :class:`CheckpointError` naming the file: missing/empty/unreadable shard, a shard holding pickled objects
besides tensors (shards are read with ``torch.load(weights_only=True)``), missing ``fsdp_config.json`` or
``huggingface/`` config or tokenizer, ranks that disagree, a tokenizer larger than the model's vocabulary,
keys that do not match the architecture, LoRA weights without ``lora_train_meta.json``.

Adapter-only LoRA steps (``actor.checkpoint.save_lora_only=true``) hold no base weights: the base comes from
the model folder named in the step's ``base_model_digest.json``, refused unless its files still have the digest
recorded at save time (:func:`with_base_weights`).
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from recipe.atesd.glue.platform import configure_process_env
from recipe.atesd.tools.summarize import TRACKER

STEP_DIR = re.compile(r"^global_step_(\d+)$")
MARKER = "export.json"
DTYPES = ("bfloat16", "float32")
# Files of huggingface/ that are not copied: the config is rewritten with the export's dtype, weights (present
# when checkpoint.save_contents has hf_model) are replaced by the merged shards.
NOT_COPIED = re.compile(r"^(config\.json|model.*\.safetensors(\.index\.json)?|pytorch_model.*\.bin)$")
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])\.default\.weight$")
PEFT_PREFIX = "base_model.model."


class CheckpointError(ValueError):
    """A checkpoint that cannot be exported; the message names the file."""


@dataclass(frozen=True)
class ExportResult:
    step: int
    out_dir: Path
    skipped: bool  # True: a finished export was already there


def checkpoint_root(run_dir: str | Path) -> Path:
    """The folder holding ``global_step_N/``: ``run_dir`` itself or ``run_dir/checkpoints``."""
    run_dir = Path(run_dir)
    for root in (run_dir, run_dir / "checkpoints"):
        if root.is_dir() and any(STEP_DIR.match(p.name) for p in root.iterdir()):
            return root
    raise CheckpointError(f"{run_dir}: no global_step_N/ folder in it nor in {run_dir / 'checkpoints'}")


def saved_steps(root: Path) -> list[int]:
    """Steps of the ``global_step_N/`` folders under ``root``, ascending."""
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())


def finished_steps(root: Path) -> list[int]:
    """Saved steps up to the tracker's (verl updates ``latest_checkpointed_iteration.txt`` after a checkpoint is
    complete, so a later ``global_step_N`` is still being written); every saved step when there is no tracker."""
    steps = saved_steps(root)
    if not (root / TRACKER).is_file():
        return steps
    latest = latest_step(root)
    later = [s for s in steps if s > latest]
    if later:
        print(
            f"[export] {root}: steps {later} are after the tracker's {latest} (still being written?): left out"
        )
    return [s for s in steps if s <= latest]


def latest_step(root: Path) -> int:
    """The step verl's tracker file names (the last checkpoint verl finished)."""
    tracker = root / TRACKER
    if not tracker.is_file():
        raise CheckpointError(f"{tracker}: missing; pass --step N or --all")
    text = tracker.read_text().strip()
    if not text.isdigit():
        raise CheckpointError(f"{tracker}: not a step number: {text!r}")
    return int(text)


def actor_dir(root: Path, step: int) -> Path:
    path = root / f"global_step_{step}" / "actor"
    if not (root / f"global_step_{step}").is_dir():
        raise CheckpointError(
            f"{root / f'global_step_{step}'}: no such checkpoint (saved: {saved_steps(root)})"
        )
    if not path.is_dir():
        raise CheckpointError(f"{path}: missing (not an FSDP actor checkpoint)")
    return path


def world_size(actor: Path) -> int:
    path = actor / "fsdp_config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (checkpoint not finished?)")
    try:
        size = json.loads(path.read_text())["world_size"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable world_size ({err})") from err
    if not isinstance(size, int) or size < 1:
        raise CheckpointError(f"{path}: world_size must be a positive integer, got {size!r}")
    return size


def _load_shard(path: Path) -> dict:
    """One rank's model shard, read with ``torch.load(weights_only=True)``: tensors, DTensors (allowed once
    ``torch.distributed.tensor`` is imported) and plain containers; any other pickled object, which could run
    code while it is unpickled, is refused naming the file (docs/launching.md, "Trust boundary")."""
    import torch
    import torch.distributed.tensor  # noqa: F401  (registers DTensor and its placements as safe globals)

    if not path.is_file():
        raise CheckpointError(f"{path}: missing shard")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty shard")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused: it holds pickled Python objects besides tensors and plain containers, and "
            "unpickling them could run arbitrary code (torch.load(weights_only=True) refused it, see the cause). "
            "verl writes model shards of tensors only: the file is untrusted or was altered; export only "
            "checkpoints you trust"
        ) from err
    except Exception as err:  # torch raises RuntimeError/EOFError for a cut file
        raise CheckpointError(f"{path}: corrupt shard ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: not a state dict")
    return state


def gather_state_dict(actor: Path) -> dict:
    """Full fp32/stored-dtype tensors from every rank's shard (module docstring, "Merging")."""
    import torch
    from torch.distributed.tensor import DTensor
    from verl.model_merger.fsdp_model_merger import merge_non_dtensor_shards

    size = world_size(actor)
    paths = [actor / f"model_world_size_{size}_rank_{r}.pt" for r in range(size)]
    shards = [_load_shard(p) for p in paths]
    keys = list(shards[0])
    for path, shard in zip(paths[1:], shards[1:], strict=True):
        if set(shard) != set(keys):
            raise CheckpointError(
                f"{path}: keys differ from {paths[0].name} ({sorted(set(shard) ^ set(keys))[:3]})"
            )
    full = {}
    for key in keys:
        parts = [s.pop(key) for s in shards]
        if isinstance(parts[0], DTensor):
            placements = [tuple(p.placements) for p in parts]
            if len(set(placements)) != 1 or len(placements[0]) != 1:
                raise CheckpointError(
                    f"{actor}: '{key}' has placements {placements[0]} (only 1-D FSDP is supported)"
                )
            placement = placements[0][0]
            local = [p._local_tensor for p in parts]
            if placement.is_shard():
                full[key] = torch.cat(local, dim=placement.dim)
            elif placement.is_replicate():
                full[key] = local[0]
            else:
                raise CheckpointError(f"{actor}: '{key}' has unsupported placement {placement}")
            if tuple(full[key].shape) != tuple(parts[0].shape):
                raise CheckpointError(
                    f"{actor}: '{key}' merged to {tuple(full[key].shape)}, expected {tuple(parts[0].shape)}"
                )
        else:
            try:
                full[key] = merge_non_dtensor_shards(key, parts)
            except ValueError as err:
                raise CheckpointError(f"{actor}: {err}") from err
    return full


def lora_meta(actor: Path) -> dict:
    path = actor / "lora_train_meta.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; LoRA weights cannot be merged without rank and lora_alpha")
    try:
        meta = json.loads(path.read_text())
        r, alpha = int(meta["r"]), float(meta["lora_alpha"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable r / lora_alpha ({err})") from err
    if r < 1 or alpha <= 0:
        raise CheckpointError(f"{path}: r={r}, lora_alpha={alpha} must be positive")
    return {"r": r, "lora_alpha": alpha, "task_type": meta.get("task_type")}


def merge_lora(state: dict, r: int, lora_alpha: float) -> tuple[dict, dict]:
    """``(merged, adapter)``: PEFT-named ``state`` → plain names with ``W = W_base + (α/r)·B@A`` (float64),
    and the adapter tensors under PEFT's saved names (``...lora_A.weight``). Raises on a LoRA key without its
    base weight or partner, and on LoRA kinds this merge does not know (embedding, bias, DoRA)."""

    scale = lora_alpha / r
    merged, adapter, pairs = {}, {}, {}
    for key, value in state.items():
        m = LORA_KEY.match(key)
        if m:
            pairs.setdefault(m.group("module"), {})[m.group("side")] = value
            adapter[key.replace(".default.weight", ".weight")] = value
        elif "lora_" in key or "lora_magnitude" in key:
            raise CheckpointError(
                f"LoRA entry '{key}' is not a lora_A/lora_B weight; this export cannot merge it"
            )
        else:
            name = key.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
            merged[name] = value
    for module, sides in pairs.items():
        name = module.removeprefix(PEFT_PREFIX) + ".weight"
        if set(sides) != {"A", "B"}:
            raise CheckpointError(f"LoRA module '{module}' has lora_{''.join(sides)} only")
        if name not in merged:
            raise CheckpointError(f"LoRA module '{module}' has no base weight '{module}.base_layer.weight'")
        a, b = sides["A"].double(), sides["B"].double()
        if a.shape[0] != r or b.shape[1] != r:
            raise CheckpointError(
                f"LoRA module '{module}': A {tuple(a.shape)}, B {tuple(b.shape)} do not have rank {r}"
            )
        base = merged[name]
        merged[name] = (base.double() + scale * (b @ a)).to(base.dtype)
    return merged, adapter


def with_base_weights(step_dir: Path, adapters: dict) -> dict:
    """An adapter-only step (``checkpoint.save_lora_only=true``) plus its base weights under PEFT's names, read
    from the model folder its ``base_model_digest.json`` records, after checking that folder's digest
    (recipe/atesd/glue/lora_checkpoint.py): ``<module>.weight`` of an adapted module becomes
    ``base_model.model.<module>.base_layer.weight``, every other ``<key>`` becomes ``base_model.model.<key>``;
    floats are upcast to fp32, as verl's fp32 actor holds the base."""
    import torch
    from safetensors.torch import load_file

    from recipe.atesd.glue.lora_checkpoint import DIGEST_FILE, check_base_model, local_model_dir

    record = step_dir / DIGEST_FILE
    if not record.is_file():
        raise CheckpointError(
            f"{record}: missing; adapters only and no record of the base model to merge into"
        )
    model_path = json.loads(record.read_text())["model_path"]
    try:
        model_dir = Path(local_model_dir(model_path))
        check_base_model(str(step_dir), model_path)
    except (ValueError, FileNotFoundError) as err:
        raise CheckpointError(f"{record}: {err}") from err
    base = {}
    for f in sorted(model_dir.iterdir()):
        if f.suffix == ".safetensors":
            base.update(load_file(str(f)))
        elif f.suffix == ".bin":
            base.update(torch.load(f, map_location="cpu", weights_only=True))
    adapted = {m.group("module").removeprefix(PEFT_PREFIX) for k in adapters if (m := LORA_KEY.match(k))}
    state = {}
    for key, value in base.items():
        module = key.removesuffix(".weight")
        peft_key = f"{module}.base_layer.weight" if module in adapted else key
        state[PEFT_PREFIX + peft_key] = value.float() if value.is_floating_point() else value  # fp32 actor
    return {**state, **adapters}


def check_tokenizer(hf_dir: Path, vocab_rows: int) -> None:
    """The tokenizer must load and fit the model's embedding rows (ids ≥ rows would index past them)."""
    from transformers import AutoTokenizer

    config = hf_dir / "tokenizer_config.json"
    if not config.is_file():
        raise CheckpointError(f"{config}: missing (no tokenizer saved with the checkpoint)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    except Exception as err:
        raise CheckpointError(f"{hf_dir}: tokenizer does not load ({type(err).__name__}: {err})") from err
    if len(tokenizer) > vocab_rows:
        raise CheckpointError(
            f"{config}: tokenizer has {len(tokenizer)} tokens but the model's embedding has {vocab_rows} rows "
            "(tokenizer of another model?)"
        )


def build_model(hf_dir: Path, state: dict, dtype: str):
    """The architecture of ``hf_dir/config.json`` holding ``state`` (strict: every key, every shape)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from verl.utils.transformers_compat import drop_tied_target_keys

    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing (huggingface/ not written?)")
    config = AutoConfig.from_pretrained(hf_dir)
    torch_dtype = getattr(torch, dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    drop_tied_target_keys(state, model, config)
    expected = dict(model.state_dict())
    drop_tied_target_keys(expected, model, config)  # lm_head.weight is the embedding when tied
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{hf_dir.parent}: shards do not match {config_path} ({config.architectures}): "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{hf_dir.parent}: '{key}' has shape {tuple(value.shape)}, {config_path} wants {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v.to(torch_dtype) for k, v in state.items()}, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.config.dtype = torch_dtype
    return model


def export_step(
    root: Path, step: int, out: Path, dtype: str = "bfloat16", adapter: bool = False
) -> ExportResult:
    """Export ``root/global_step_<step>`` to ``out/step_<step>`` (module docstring)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    # as the entry points do before verl is first imported: on CPU, verl then loads verl_patches (a process
    # that imported verl without them cannot start verl's vLLM rollout later, e.g. a test session)
    configure_process_env()
    target = Path(out) / f"step_{step}"
    if (target / MARKER).is_file():
        return ExportResult(step, target, skipped=True)
    if target.exists():
        raise CheckpointError(
            f"{target}: exists without {MARKER} (not written by this tool?); remove it first"
        )
    actor = actor_dir(root, step)
    hf_dir = actor / "huggingface"
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir}: missing (checkpoint not finished?)")
    state = gather_state_dict(actor)
    lora = None
    adapter_tensors = {}
    if any(LORA_KEY.match(k) for k in state):
        lora = lora_meta(actor)
        if all("lora_" in k for k in state):
            state = with_base_weights(actor.parent, state)
        state, adapter_tensors = merge_lora(state, lora["r"], lora["lora_alpha"])
    model = build_model(hf_dir, state, dtype)
    check_tokenizer(hf_dir, model.get_input_embeddings().weight.shape[0])

    partial = Path(out) / f".step_{step}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    model.save_pretrained(partial, safe_serialization=True)
    for f in sorted(hf_dir.iterdir()):
        if f.is_file() and not NOT_COPIED.match(f.name):  # tokenizer files, generation_config.json
            shutil.copy2(f, partial / f.name)
    if lora and adapter:
        save_adapter(partial / "lora_adapter", adapter_tensors, lora)
    marker = {
        "source": str(actor.parent.resolve()),
        "step": step,
        "dtype": dtype,
        "world_size": world_size(actor),
        "lora": lora,
        "adapter_saved": bool(lora and adapter),
    }
    (partial / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    partial.rename(target)
    return ExportResult(step, target, skipped=False)


def save_adapter(path: Path, tensors: dict, lora: dict) -> None:
    """PEFT adapter folder, as verl's ``BaseModelMerger.save_lora_adapter`` writes it."""
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    modules = sorted({k.split(".")[-3] for k in tensors})
    config = {
        "peft_type": "LORA",
        "task_type": lora.get("task_type") or "CAUSAL_LM",
        "r": lora["r"],
        "lora_alpha": lora["lora_alpha"],
        "target_modules": modules,
        "bias": "none",
        "use_rslora": False,
    }
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "adapter_model.safetensors"))


def export_run(
    run_dir: str | Path,
    out: str | Path,
    steps: list[int] | None = None,
    all_steps: bool = False,
    dtype: str = "bfloat16",
    adapter: bool = False,
) -> list[ExportResult]:
    """Export the chosen steps of a run (default: the tracker's latest); prints one line per step."""
    root = checkpoint_root(run_dir)
    if all_steps:
        chosen = finished_steps(root)
    elif steps:
        chosen = steps
    else:
        chosen = [latest_step(root)]
    results = []
    for step in chosen:
        result = export_step(root, step, Path(out), dtype, adapter)
        print(
            f"[export] step {step}: {'already exported' if result.skipped else 'exported'} -> {result.out_dir}"
        )
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> list[ExportResult]:
    parser = argparse.ArgumentParser(prog="python -m recipe.atesd.export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, action="append", help="a step to export (repeatable)")
    which.add_argument("--all", action="store_true", help="every saved step")
    parser.add_argument("--out", required=True, help="exports go to OUT/step_N/")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument(
        "--adapter", action="store_true", help="LoRA runs: also write OUT/step_N/lora_adapter/"
    )
    args = parser.parse_args(argv)
    return export_run(args.run_dir, args.out, args.step, args.all, args.dtype, args.adapter)


if __name__ == "__main__":
    main()
