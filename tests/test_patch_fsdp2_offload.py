"""verl_patches.fsdp2_offload_pinning: verl's forward-only FSDP2 engines (the frozen teacher) build
without pinned memory on a CPU-only machine, and the patch refuses a changed target."""

import os
import subprocess
import sys
import types

import pytest

from recipe.atesd.glue.platform import REPO_ROOT, configure_process_env
from verl_patches import fsdp2_offload_pinning
from verl_patches._guard import PatchTargetError

PROBE = r"""
import torch, verl  # verl imports verl_patches through VERL_USE_EXTERNAL_MODULES
import verl.workers.engine.fsdp.transformer_impl as impl
from torch.distributed.fsdp import CPUOffloadPolicy
policy = impl.CPUOffloadPolicy(pin_memory=True)  # the call verl makes for forward-only engines
assert isinstance(policy, CPUOffloadPolicy), type(policy)
print("PIN", policy.pin_memory)
"""


def test_forward_only_offload_policy_is_unpinned_on_cpu():
    env = dict(os.environ)
    saved = dict(os.environ)
    try:
        configure_process_env("cpu")
        env.update(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PIN False" in out.stdout


def test_refuses_a_changed_build_function(monkeypatch):
    module = types.SimpleNamespace(CPUOffloadPolicy=lambda **kw: kw)
    monkeypatch.setattr(
        fsdp2_offload_pinning,
        "TARGET",
        fsdp2_offload_pinning.TARGET.__class__(
            **{**fsdp2_offload_pinning.TARGET.__dict__, "source_sha": "0" * 16}
        ),
    )
    with pytest.raises(PatchTargetError, match="verl==0.9.1"):
        fsdp2_offload_pinning.patch_module(module)
