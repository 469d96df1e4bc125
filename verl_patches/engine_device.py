"""Let verl's engine registry find the FSDP engine on the CPU platform.

verl 0.9.1 ``verl/workers/engine/base.py::EngineRegistry.get_engine_cls`` looks engines up by
``(device, vendor)``; FSDP/transformers engines are registered for ``cuda``/``npu`` only, so device
``cpu`` raises "No engine registered for device='cpu'". The FSDP engine itself is device-agnostic
(it calls ``get_device_name()``/``get_torch_device()``), so on CPU we return the engine registered
for ``("cuda", "nvidia")`` (or ``"cuda"``) — what ``VERL_ENGINE_DEVICE=cuda`` would select, without an
env var that could leak into GPU runs. An explicit ``VERL_ENGINE_DEVICE`` still wins.
"""

import os

from verl_patches._guard import Target, already_patched, mark_patched, verify
from verl_patches.import_hook import when_imported

TARGET = Target(
    dist="verl",
    version="0.9.1",
    module="verl.workers.engine.base",
    attr="EngineRegistry.get_engine_cls",
    source_sha="802aeb70f04dd67e",
)


def patch_module(module) -> None:
    EngineRegistry = module.EngineRegistry
    if already_patched(EngineRegistry.get_engine_cls):
        return
    original = verify(TARGET).__func__

    def get_engine_cls(cls, model_type: str, backend: str):
        from verl.utils.device import get_device_name

        if get_device_name() == "cpu" and not os.getenv("VERL_ENGINE_DEVICE"):
            registry = cls._engines.get(model_type, {}).get(backend, {})
            for key in (("cuda", "nvidia"), "cuda"):
                if key in registry:
                    return registry[key]
        return original(cls, model_type, backend)

    EngineRegistry.get_engine_cls = classmethod(mark_patched(get_engine_cls))


def apply() -> None:
    when_imported(TARGET.module, patch_module)
