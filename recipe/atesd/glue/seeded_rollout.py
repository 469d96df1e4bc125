"""Paired rollouts: every rollout request samples from its own seed (docs/cpu.md, "Paired rollouts").

Why rollouts were not reproducible. verl 0.9.1's V1 agent loop builds one sampling-parameter dict per batch
and no seed (``AgentLoopWorkerTQ.generate_sequences`` in ``verl/trainer/ppo/v1/agent_loop_tq.py``), so vLLM
samples each request with its engine-wide torch RNG: at every engine step one ``[batch, vocab]`` block of
exponential noise is drawn and row ``i`` goes to whichever request sits in row ``i``
(``vllm/v1/sample/ops/topk_topp_sampler.py``, ``forward_cpu`` / ``random_sample``). verl's agent-loop worker
sends the requests one coroutine each; when each reaches the engine, and so which requests share an engine
step and in which rows, depends on timing. The same seed, weights and prompts then give other tokens in
every run. (A fresh offline engine fed the same prompts in the same order does repeat itself; fed them in
reverse, 9 of 16 toy prompts got other responses.)

The fix: :class:`SeededSingleTurnAgentLoop` is verl's single-turn agent loop plus one sampling parameter,
``seed`` = :func:`request_seed` of (``actor_rollout_ref.rollout.seed``, the trainer step, the prompt's dataset
index, its sample number in the group, the prompt). vLLM gives a request with a seed its own
``torch.Generator`` (``vllm/v1/worker/gpu_model_runner.py``, which the CPU model runner inherits), so its
noise no longer depends on its neighbours, its arrival time or the batch. It is selected through verl's
agent-loop registry, not a patch: ``actor_rollout_ref.rollout.agent.default_agent_loop`` and
``agent_loop_config_path`` (recipe/atesd/config/agent_loops.yaml) in recipe/atesd/config/atesd_trainer.yaml
and recipe/atesd/config/grpo_trainer.yaml, so it holds on every platform (CPU and GPU).
``actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent`` goes back to verl's unseeded loop.

verl's own ``rollout.full_determinism`` is no substitute: it gives every request the same seed
(``replica_rank + rollout.seed``, ``vllm_async_server.py``), which makes the n samples of one prompt identical
copies. It sets that seed with ``setdefault``, so ours wins when both are on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

AGENT_LOOP_NAME = "seeded_single_turn_agent"  # its name in recipe/atesd/config/agent_loops.yaml
REQUIRED_KWARGS = ("global_steps", "index", "session_id", "raw_prompt")


def _plain(obj: Any) -> Any:
    """JSON form of the numpy / torch values a verl batch row carries; anything else is refused."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    raise TypeError(f"request_seed: cannot hash a prompt field of type {type(obj).__name__}")


def request_seed(rollout_seed: int, step: int, index: int, sample: int, prompt: Any) -> int:
    """A 63-bit sampling seed: SHA-256 of ``[rollout_seed, step, index, sample, prompt]`` as canonical JSON.

    The same inputs give the same seed in every process, run and machine (no Python ``hash``); any other
    input gives, with overwhelming probability, another seed. ``sample`` separates the n samples of one
    prompt (verl's ``session_id``), ``step`` the revisits of a prompt in later epochs, ``prompt`` (the raw chat
    messages) rows that share a dataset ``index``.
    """
    key = json.dumps(
        [int(rollout_seed), int(step), int(index), int(sample), prompt],
        default=_plain,
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


class SeededSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's ``SingleTurnAgentLoop`` whose request carries ``seed`` = :func:`request_seed` (module docstring).

    Needs verl's V1 agent-loop worker (``AgentLoopWorkerTQ``), which passes each of a prompt's n samples its
    ``session_id``; the legacy worker repeats rows instead and passes none, and with equal seeds the copies
    of a prompt would sample the same response, so that case is refused. A seed already in the sampling
    parameters is kept.
    """

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        missing = [k for k in REQUIRED_KWARGS if k not in kwargs]
        if missing:
            raise KeyError(
                f"{AGENT_LOOP_NAME}: the agent loop got no {missing}; it derives each request's sampling seed "
                "from them and needs verl's V1 agent-loop worker (trainer.use_v1), which passes session_id"
            )
        if "seed" not in sampling_params:
            seed = request_seed(
                self.rollout_config.seed,
                kwargs["global_steps"],
                kwargs["index"],
                kwargs["session_id"],
                kwargs["raw_prompt"],
            )
            sampling_params = {**sampling_params, "seed": seed}
        return await super().run(sampling_params, **kwargs)
