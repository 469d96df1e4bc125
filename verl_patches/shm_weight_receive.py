"""Copy received weights out of the shared-memory bucket before vLLM loads them (CPU only).

verl 0.9.1 ``verl/workers/rollout/vllm_rollout/bucketed_weight_transfer.py::
BucketedWeightReceiver.receive_weights`` slices each weight as a view of the shared-memory bucket and
calls ``tensor.to(self.device)``. On CUDA that copies; on CPU it returns the same view, so the loaded
model (and vLLM internals) may keep references into the bucket, and ``_cleanup`` then fails with
``BufferError: cannot close exported pointers exist`` — inside vLLM's ``collective_rpc`` that error
hangs the trainer. We wrap the per-bucket callback so that, when the receiver uses shared memory on
a CPU device, every tensor handed on is a ``clone()`` owning its memory.
"""

import functools

from verl_patches._guard import Target, already_patched, mark_patched, verify
from verl_patches.import_hook import when_imported

TARGET = Target(
    dist="verl",
    version="0.9.1",
    module="verl.workers.rollout.vllm_rollout.bucketed_weight_transfer",
    attr="BucketedWeightReceiver.receive_weights",
    source_sha="33f3010c15fef317",
)


def owning_copies(weights):
    """``[(name, view)] -> [(name, view.clone())]``: detach the tensors from the shm bucket."""
    return [(name, tensor.clone()) for name, tensor in weights]


def patch_module(module) -> None:
    BucketedWeightReceiver = module.BucketedWeightReceiver
    if already_patched(BucketedWeightReceiver.receive_weights):
        return
    original = verify(TARGET)

    @functools.wraps(original)
    def receive_weights(self, on_bucket_received):
        if not (self.use_shm and self.device.type == "cpu"):
            return original(self, on_bucket_received)

        def on_bucket_copied(weights, is_last):
            return on_bucket_received(owning_copies(weights), is_last)

        return original(self, on_bucket_copied)

    BucketedWeightReceiver.receive_weights = mark_patched(receive_weights)


def apply() -> None:
    when_imported(TARGET.module, patch_module)
