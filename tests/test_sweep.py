"""Sweep mode's bookkeeping (recipe/atesd/glue/sweep.py) and the canonical row order of an update
(recipe/atesd/glue/sync_trainer.py::canonical_order), without a stack. The sweep itself runs in
tests/test_pairing_cpu_e2e.py (an arm in a sweep equals the same arm run alone)."""

import json
import uuid

import pytest
from test_config_check import atesd_config

from recipe.atesd.glue import sweep
from recipe.atesd.glue.sync_trainer import canonical_order
from recipe.atesd.tools.run_dirs import CHECKPOINTS, DONE, GENERATIONS, METRICS, move_aside, write_json

ARMS = "++sweep.arms={fixed-0.25: {controller: {exposure_mode: fixed, alpha: 0.25}}, opsd: {controller: {alpha: 1.0}}}"


def arms_of(tmp_path, *overrides):
    cfg = atesd_config(f"sweep.root={tmp_path}", *overrides)
    return cfg, sweep.prepare(cfg)


def test_arms_merge_their_keys_onto_the_stack_config_and_get_their_own_folders(tmp_path):
    cfg, arms = arms_of(tmp_path, "controller.exposure_mode=fixed", ARMS, "sweep.subdir=seed3")
    assert [a.name for a in arms] == ["fixed-0.25", "opsd"]
    low, opsd = arms
    assert low.config.controller.alpha == 0.25 and opsd.config.controller.alpha == 1.0
    assert opsd.config.controller.exposure_mode == "fixed"  # the stack's value where the arm sets none
    assert low.directory == tmp_path / "fixed-0.25" / "seed3"
    assert low.config.trainer.default_local_dir == str(low.directory / CHECKPOINTS)
    assert low.config.trainer.validation_data_dir == str(low.directory / GENERATIONS)
    assert low.sha256 != opsd.sha256
    # the stack itself starts from a root of its own, never from an arm's checkpoints
    assert cfg.trainer.default_local_dir == str(tmp_path / sweep.INITIAL_STATE / "seed3")


def test_the_config_hash_ignores_where_outputs_go_but_not_what_is_trained(tmp_path):
    _, arms = arms_of(tmp_path, ARMS)
    _, moved = arms_of(tmp_path / "elsewhere", ARMS, "sweep.subdir=s1", "trainer.experiment_name=other")
    assert [a.sha256 for a in arms] == [a.sha256 for a in moved]
    _, longer = arms_of(tmp_path, ARMS, "trainer.total_training_steps=7")
    assert all(a.sha256 != b.sha256 for a, b in zip(arms, longer, strict=True))


def test_no_arms_is_a_single_run(tmp_path):
    cfg = atesd_config()
    assert sweep.prepare(cfg) == []
    assert cfg.trainer.default_local_dir != str(tmp_path / sweep.INITIAL_STATE)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            ["+sweep.arms.a.actor_rollout_ref.actor.optim.lr=0.1"],
            "sweep.arms.a.actor_rollout_ref.actor.optim.lr",
        ),
        (["+sweep.arms.a.data.seed=3"], "sweep.arms.a.data.seed"),
        (["+sweep.arms.a.teacher.kind=live"], "sweep.arms.a.teacher.kind"),
        (["+sweep.arms.a.controller.alhpa=0.5"], "sweep.arms.a.controller.alhpa"),
        (["++sweep.arms={a b: {controller: {alpha: 0.5}}}"], "sweep.arms.a b"),
        (["++sweep.arms={a: {}}"], "sweep.arms.a"),
        (["teacher.kind=ema", "+sweep.arms.a.controller.alpha=0.5"], "teacher.kind=ema"),
        (["trainer.resume_mode=resume_path", "+sweep.arms.a.controller.alpha=0.5"], "resume_path"),
    ],
)
def test_bad_arms_fail_naming_the_arm_and_key(tmp_path, overrides, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        arms_of(tmp_path, *overrides)


def test_arms_without_a_root_fail():
    cfg = atesd_config("+sweep.arms.a.controller.alpha=0.5")
    with pytest.raises(ValueError, match="sweep.root"):
        sweep.prepare(cfg)


def test_arm_states_new_incomplete_done_and_changed(tmp_path):
    _, (arm, _) = arms_of(tmp_path, ARMS)
    assert sweep.arm_state(arm) == "new"
    arm.directory.mkdir(parents=True)
    (arm.directory / "run.json").write_text("{}")  # a driver's own record is not an attempt
    assert sweep.arm_state(arm) == "new"
    (arm.directory / METRICS).write_text("")
    assert sweep.arm_state(arm) == "incomplete"
    aside = move_aside(arm.directory)
    assert aside.name.startswith("fixed-0.25.incomplete-") and not arm.directory.exists()
    arm.directory.mkdir(parents=True)
    write_json(arm.directory / DONE, {"config_sha256": arm.sha256})
    assert sweep.arm_state(arm) == "done"
    write_json(arm.directory / DONE, {"config_sha256": "0" * 64})
    with pytest.raises(ValueError, match="fixed-0.25.*trained with config 0000"):
        sweep.arm_state(arm)


def test_records_carry_hash_model_code_and_cpu(tmp_path):
    _, (arm, _) = arms_of(tmp_path, ARMS)
    record = sweep.arm_record(arm, {"sha256": "m"})
    assert record["config_sha256"] == arm.sha256 and record["model"] == {"sha256": "m"}
    assert len(record["commit"]) == 40 and isinstance(
        record["dirty"], bool
    )  # the test runs in a git checkout
    assert record["cpu"]
    json.dumps(record)  # plain JSON


def test_canonical_order_sorts_by_prompt_position_then_sample():
    uids = [str(uuid.uuid4()) for _ in range(3)]
    position = {uid: n for n, uid in enumerate(uids)}
    wanted = [f"{uid}_{s}_0" for uid in uids for s in range(2)]
    arrived = [wanted[j] for j in (3, 0, 5, 1, 4, 2)]  # the order rollouts finished in
    order = canonical_order(arrived, position)
    assert [arrived[j] for j in order] == wanted
    with pytest.raises(KeyError, match="not submitted"):
        canonical_order([f"{uuid.uuid4()}_0_0"], position)
