"""Test-only hook: every rollout request's token ids, saved for the paired-rollout e2e test.

Loaded into every process of a test stack the way ``verl_patches`` are (tests/atesd_capture.py does the same):
the test sets ``VERL_USE_EXTERNAL_MODULES=rollout_capture`` (``verl/__init__.py`` imports it) and puts ``tests/``
on ``PYTHONPATH``. With ``$ATESD_ROLLOUT_CAPTURE_DIR`` set, verl's ``SingleTurnAgentLoop.run`` is wrapped when
its module is imported (in the agent-loop worker); each finished request appends one JSON line to
``$ATESD_ROLLOUT_CAPTURE_DIR/<pid>.jsonl``: the trainer step, the prompt's dataset index, its sample number
(``session_id``), the ``seed`` of its sampling parameters (``None`` unseeded), its temperature, the prompt
and response token ids, and the engine's log-probability of each response token when the stack asks vLLM for them
(``actor_rollout_ref.rollout.calculate_log_probs=true``; None otherwise). The seeded loop (recipe/atesd/glue/seeded_rollout.py) calls this ``run`` through
``super()``, so both verl's loop and ours are recorded. The production stack carries no hook.
"""

import functools
import json
import os

from verl_patches.import_hook import when_imported

CAPTURE_DIR_VAR = "ATESD_ROLLOUT_CAPTURE_DIR"
TARGET_MODULE = "verl.experimental.agent_loop.single_turn_agent_loop"


def _patch(module) -> None:
    run = module.SingleTurnAgentLoop.run

    @functools.wraps(run)
    async def recording(self, sampling_params, **kwargs):
        output = await run(self, sampling_params, **kwargs)
        record = {
            "step": int(kwargs["global_steps"]),
            "index": int(kwargs["index"]),
            "session": int(kwargs.get("session_id", -1)),
            "seed": sampling_params.get("seed"),
            "temperature": float(sampling_params["temperature"]),
            "prompt_ids": [int(t) for t in output.prompt_ids],
            "response_ids": [int(t) for t in output.response_ids],
            # the engine's log-prob of each response token (rollout.calculate_log_probs=true), else None
            "response_logprobs": None
            if output.response_logprobs is None
            else [float(x) for x in output.response_logprobs],
        }
        folder = os.environ[CAPTURE_DIR_VAR]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return output

    module.SingleTurnAgentLoop.run = recording


if os.environ.get(CAPTURE_DIR_VAR):
    when_imported(TARGET_MODULE, _patch)
