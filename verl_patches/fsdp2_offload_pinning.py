"""FSDP2 CPU-offload without pinned memory on the CPU platform.

verl 0.9.1 ``verl/workers/engine/fsdp/transformer_impl.py::FSDPEngine._build_fsdp_module`` gives every
forward-only FSDP2 engine (the reference model, which ATESD uses as its frozen teacher) an
``offload_policy = CPUOffloadPolicy(pin_memory=True)``. Pinning host memory needs an accelerator, so
on a CPU-only machine ``fully_shard`` fails with "Cannot access accelerator device when none is
available". We rebind the module-level name ``CPUOffloadPolicy`` in that module to a factory that
builds the same policy with ``pin_memory=False`` (the parameters already live on the CPU; nothing is
lost). The factory returns real ``CPUOffloadPolicy`` instances, so isinstance checks downstream hold.
"""

from verl_patches._guard import Target, already_patched, mark_patched, verify
from verl_patches.import_hook import when_imported

TARGET = Target(
    dist="verl",
    version="0.9.1",
    module="verl.workers.engine.fsdp.transformer_impl",
    attr="FSDPEngine._build_fsdp_module",
    source_sha="980b7d8b72c18b36",
)


def patch_module(module) -> None:
    original = module.CPUOffloadPolicy
    if already_patched(original):
        return
    verify(TARGET)

    def unpinned_cpu_offload_policy(*args, pin_memory: bool = False, **kwargs):
        return original(*args, pin_memory=False, **kwargs)

    module.CPUOffloadPolicy = mark_patched(unpinned_cpu_offload_policy)


def apply() -> None:
    when_imported(TARGET.module, patch_module)
