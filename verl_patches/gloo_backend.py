"""De-duplicate the process-group backend string on CPU.

verl 0.9.1 ``verl/utils/distributed.py::initialize_global_process_group_ray`` builds the backend
``f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"``; on the CPU platform that is
``"cpu:gloo,cpu:gloo"`` and torch rejects it ("Duplicate device type cpu in backend string"). We wrap
the function so the default backend drops repeated ``device:backend`` entries (``"cpu:gloo"``).
Callers bind the name with ``from ... import``, so this runs from ``import verl`` (via
``VERL_USE_EXTERNAL_MODULES``) before ``verl.workers.engine_workers`` / ``verl.checkpoint_engine``
are imported.
"""

import functools
import sys

from verl_patches._guard import Target, already_patched, mark_patched, verify
from verl_patches.import_hook import when_imported

TARGET = Target(
    dist="verl",
    version="0.9.1",
    module="verl.utils.distributed",
    attr="initialize_global_process_group_ray",
    source_sha="e9ec517a0089c3c5",
)
# Modules that bind the function by name (``from verl.utils.distributed import ...``).
IMPORTERS = ("verl.workers.engine_workers", "verl.checkpoint_engine.base")


def dedup_backend(backend: str) -> str:
    """``"cpu:gloo,cpu:gloo"`` -> ``"cpu:gloo"``; order kept; ``ValueError`` on conflicting devices."""
    entries: dict[str, str] = {}
    for part in backend.split(","):
        device, _, name = part.partition(":")
        if device in entries and entries[device] != name:
            raise ValueError(f"backend string {backend!r} maps device {device!r} to two backends")
        entries.setdefault(device, name)
    return ",".join(f"{d}:{n}" for d, n in entries.items())


def patch_module(dist_mod) -> None:
    if already_patched(dist_mod.initialize_global_process_group_ray):
        return
    original = verify(TARGET)

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        from verl.utils.device import get_device_name, get_nccl_backend

        backend = dedup_backend(backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}")
        return original(timeout_second=timeout_second, backend=backend)

    dist_mod.initialize_global_process_group_ray = mark_patched(initialize_global_process_group_ray)
    for importer in IMPORTERS:
        module = sys.modules.get(importer)
        if module is not None and getattr(module, "initialize_global_process_group_ray", None) is original:
            module.initialize_global_process_group_ray = dist_mod.initialize_global_process_group_ray


def apply() -> None:
    when_imported(TARGET.module, patch_module)
