"""Adapter-only LoRA checkpoints (verl's ``checkpoint.save_lora_only``) and the base model they need.

With ``actor_rollout_ref.actor.checkpoint.save_lora_only=true`` verl's
``verl/utils/checkpoint/fsdp_checkpoint_manager.py`` saves only the ``lora_*`` entries of the actor's state
dict; on resume the base weights are whatever the engine loaded from ``actor_rollout_ref.model.path``
(``load_state_dict(strict=False)``). Resume is exact only if those files are the ones the run trained on, so
each saved step records a digest of the base model's weight files and a resume refuses a different one:

    digest = sha256 over the sorted weight files f of sha256(name(f) ‖ bytes(f))

(weight files: ``*.safetensors``, ``*.bin``, ``*.pt`` directly in the model folder, plus ``config.json``).
Tested by tests/test_lora_checkpoint.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

DIGEST_FILE = "base_model_digest.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def local_model_dir(model_path: str) -> str:
    """``model.path`` as a local folder: itself, or for a Hub id (the presets' ``Qwen/Qwen3-8B``) the snapshot
    the engine's ``from_pretrained`` cached (``huggingface_hub.snapshot_download(local_files_only=True)``)."""
    if os.path.isdir(model_path):
        return model_path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_path, local_files_only=True)
    except Exception as err:  # not a folder and not in the Hub cache
        raise FileNotFoundError(
            f"actor_rollout_ref.model.path={model_path}: neither a folder nor a cached Hub model "
            f"({type(err).__name__}: {err})"
        ) from err


@functools.cache
def base_model_digest(model_path: str) -> str:
    """sha256 of the base model's weight files and config.json (read once per process: ~16 GB at 8B)."""
    model_dir = local_model_dir(model_path)
    names = sorted(n for n in os.listdir(model_dir) if n.endswith(WEIGHT_SUFFIXES) or n == "config.json")
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        raise FileNotFoundError(f"{model_dir}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) to fingerprint")
    total = hashlib.sha256()
    for name in names:
        h = hashlib.sha256(name.encode())
        with open(os.path.join(model_dir, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        total.update(h.digest())
    return total.hexdigest()


def record_base_model(step_dir: str, model_dir: str) -> None:
    """Write ``DIGEST_FILE`` into a saved step: the base model an adapter-only checkpoint belongs to."""
    with open(os.path.join(step_dir, DIGEST_FILE), "w") as f:
        json.dump({"model_path": model_dir, "sha256": base_model_digest(model_dir)}, f, indent=2)


def check_base_model(step_dir: str, model_dir: str) -> None:
    """Refuse to resume an adapter-only checkpoint onto a base model other than the one it was saved with."""
    path = os.path.join(step_dir, DIGEST_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"resuming an adapter-only checkpoint from {step_dir}: no {DIGEST_FILE}, the base model it was "
            f"trained on is unknown"
        )
    with open(path) as f:
        saved = json.load(f)
    now = base_model_digest(model_dir)
    if saved["sha256"] != now:
        raise ValueError(
            f"resuming from {step_dir}: actor_rollout_ref.model.path={model_dir} (sha256 {now[:12]}) is not the "
            f"base model this adapter-only checkpoint was saved on ({saved['model_path']}, sha256 "
            f"{saved['sha256'][:12]}); the resumed model would differ from the interrupted run"
        )
