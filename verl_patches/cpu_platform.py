"""Register a ``cpu`` platform with verl's platform registry (selected by ``VERL_PLATFORM=cpu``).

verl 0.9.1 ships platforms for CUDA, NPU and ROCm only (``verl/plugin/platform``); on a machine
without an accelerator it falls back to ``nvidia`` and every ``torch.cuda`` call fails. This class
implements :class:`verl.plugin.platform.PlatformBase` for CPU:

- device name ``cpu``, collective backend ``gloo``, device module = the shim in ``cpu_device``;
- ``current_device()`` returns ``"cpu"`` so ``tensor.to(get_device_id())`` stays on CPU (an integer
  index would mean ``cuda:<i>``);
- ``is_ipc_supported() = False``: verl then moves weights to vLLM through POSIX shared memory;
- Ray accelerator: the stack declares one *fake* Ray ``GPU`` (``ray_kwargs.ray_init.num_gpus`` in
  ``recipe/atesd/config/platform/cpu.yaml``) and this platform reports ``ray_resource_name() = "GPU"``.
  We chose the fake count over a custom resource name because verl's vLLM launcher indexes
  ``ray.get_runtime_context().get_accelerator_ids()["GPU"]`` directly; a custom name would need
  more patches. Ray only sets ``CUDA_VISIBLE_DEVICES`` in the actors, which CPU torch ignores.
"""

from contextlib import contextmanager

import torch

from verl_patches._guard import Target, verify
from verl_patches.cpu_device import device_module

TARGET = Target(
    dist="verl",
    version="0.9.1",
    module="verl.plugin.platform.platform_base",
    attr="PlatformBase",
    source_sha="509afde7ce222670",
)
PLATFORM_NAME = "cpu"


def _platform_cls():
    from verl.plugin.platform.platform_base import PlatformBase

    class PlatformCPU(PlatformBase):
        """verl platform for CPU-only hosts (torch CPU, gloo, shared-memory weight sync)."""

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def vendor_name(self) -> str:
            return "cpu"

        @property
        def device_module(self):
            return device_module

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check=False) -> bool:
            return not torch.cuda.is_available()

        def current_device(self):
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index) -> None:
            return None

        def synchronize(self, device_index=None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0):
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self):
            return None

    return PlatformCPU


def apply() -> None:
    """Register ``PlatformCPU`` under ``cpu`` (idempotent)."""
    verify(TARGET)
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(platform=PLATFORM_NAME)(_platform_cls())
