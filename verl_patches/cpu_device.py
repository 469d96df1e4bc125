"""A ``torch.cuda``-shaped device module for CPU (what ``get_torch_device()`` returns on our platform).

verl 0.9.1 calls CUDA-style functions on ``get_platform().device_module``: ``empty_cache``,
``mem_get_info``, ``memory_allocated``/``reserved`` (+ ``max_``), ``ipc_collect``, ``get_rng_state``/
``set_rng_state``, ``set_per_process_memory_fraction``, ``get_device_name``, ``manual_seed``.
``torch.cpu`` lacks most of them. This shim forwards everything ``torch.cpu`` has (``synchronize``,
``Stream``, ``current_stream``, ``device_count``, ``set_device``, ...) and supplies the rest:
memory figures come from the process RSS / ``/proc/meminfo``; cache and IPC calls are no-ops; the
RNG calls use torch's CPU generator.
"""

import os
import sys
import types

import torch


def _meminfo_bytes(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(f"{key} not in /proc/meminfo")


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _CpuDeviceModule(types.ModuleType):
    def __getattr__(self, name):
        return getattr(torch.cpu, name)

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device=None) -> None:
        return None

    @staticmethod
    def mem_get_info(device=None) -> tuple[int, int]:
        return _meminfo_bytes("MemAvailable"), _meminfo_bytes("MemTotal")

    @staticmethod
    def memory_allocated(device=None) -> int:
        return _rss_bytes()

    memory_reserved = memory_allocated
    max_memory_allocated = memory_allocated
    max_memory_reserved = memory_allocated

    @staticmethod
    def reset_peak_memory_stats(device=None) -> None:
        return None

    @staticmethod
    def get_device_name(device=None) -> str:
        return "cpu"

    @staticmethod
    def get_rng_state(device=None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device=None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed


device_module = _CpuDeviceModule("verl_patches.cpu_device_module")
sys.modules.setdefault(device_module.__name__, device_module)
