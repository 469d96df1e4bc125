"""Pick the platform (cpu/gpu) and prepare the process environment before Ray starts.

Every entry point (``recipe.atesd.main_grpo``, the ATESD trainer) calls :func:`configure_process_env`
**before importing verl**, then :func:`with_platform_override` on its hydra overrides:

- no CUDA device (``torch.cuda.is_available()`` false) -> ``"cpu"``: exports
  ``VERL_USE_EXTERNAL_MODULES=verl_patches.activate`` and ``VERL_PLATFORM=cpu`` and puts the repository root on
  ``PYTHONPATH``. Ray's raylet, its workers and vLLM's subprocesses inherit the environment of the
  process that calls ``ray.init``, and ``import verl`` imports the named modules in each of them, so
  the patches reach every process. The hydra group ``platform=cpu`` carries the CPU overrides.
- a CUDA device -> ``"gpu"``: nothing is exported and verl runs unpatched (``platform=gpu``).

On both platforms ``RAY_enable_open_telemetry`` defaults to ``0`` (:data:`RAY_ENV`): ray 2.60's OpenTelemetry
metrics path crashed a Ray worker with SIGSEGV in its metrics thread (``TemporalMetricStorage::buildMetrics``,
opentelemetry-cpp) about once in 50 stack starts here; with it off, Ray records its metrics through its
OpenCensus path instead (metrics still exported). A value the user exported wins.

``ATESD_PLATFORM=cpu|gpu`` forces the choice (e.g. to test the CPU path on a GPU host).
This module must not import verl: the variables only take effect if set before ``import verl``.
"""

import os

from recipe.atesd import REPO_ROOT

PLATFORMS = ("cpu", "gpu")
PATCH_MODULE = "verl_patches.activate"
RAY_ENV = {"RAY_enable_open_telemetry": "0"}  # module docstring; also exported by launch/slurm/atesd.sbatch


def detect_platform() -> str:
    """``ATESD_PLATFORM`` if set, else ``"gpu"`` when torch sees a CUDA device, else ``"cpu"``."""
    forced = os.environ.get("ATESD_PLATFORM", "").strip().lower()
    if forced:
        if forced not in PLATFORMS:
            raise ValueError(f"ATESD_PLATFORM={forced!r}: expected one of {PLATFORMS}")
        return forced
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _prepend_path(var: str, entry: str) -> None:
    parts = [p for p in os.environ.get(var, "").split(os.pathsep) if p]
    if entry not in parts:
        os.environ[var] = os.pathsep.join([entry, *parts])


def configure_process_env(platform: str | None = None) -> str:
    """Export the variables the chosen platform needs; return ``"cpu"`` or ``"gpu"``.

    Idempotent. Both: :data:`RAY_ENV` unless set. On ``"cpu"``: ``VERL_USE_EXTERNAL_MODULES`` gains
    ``verl_patches.activate``, ``VERL_PLATFORM=cpu``, ``PYTHONPATH`` gains the repository root,
    ``VLLM_TARGET_DEVICE=cpu``, ``TOKENIZERS_PARALLELISM=false``.
    """
    platform = platform or detect_platform()
    if platform not in PLATFORMS:
        raise ValueError(f"platform={platform!r}: expected one of {PLATFORMS}")
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if platform == "cpu":
        modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
        if PATCH_MODULE not in modules:
            os.environ["VERL_USE_EXTERNAL_MODULES"] = ",".join([PATCH_MODULE, *modules])
        os.environ["VERL_PLATFORM"] = "cpu"
        os.environ["VLLM_TARGET_DEVICE"] = "cpu"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _prepend_path("PYTHONPATH", str(REPO_ROOT))
    return platform


def with_platform_override(overrides: list[str], platform: str) -> list[str]:
    """Append ``platform=<platform>`` to hydra overrides unless the caller already chose one."""
    if any(o.split("=", 1)[0].lstrip("+~") == "platform" for o in overrides):
        return list(overrides)
    return [*overrides, f"platform={platform}"]
