"""Pre-flight validation of the ATESD config and data (recipe/atesd/glue/config_check.py): fails before Ray,
naming the key or the row id."""

import os

import pandas as pd
import pytest
from conftest import REPO_ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from recipe.atesd.glue.config_check import check_atesd_config, check_reference_rows
from recipe.atesd.glue.platform import configure_process_env
from recipe.atesd.main_atesd import resource_plan

CONFIG_DIR = REPO_ROOT / "recipe" / "atesd" / "config"


def atesd_config(*overrides: str):
    # as the entry point does, before hydra imports verl for the config search path
    configure_process_env()
    os.environ.setdefault("ATESD_REPO", str(REPO_ROOT))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="atesd_trainer", overrides=["platform=cpu", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def test_embedded_default_passes_and_plans_one_colocated_pool():
    cfg = atesd_config()
    check_atesd_config(cfg)
    plan = resource_plan(cfg)
    assert plan["total_gpus"] == 1 and list(plan["pools"]) == ["global_pool"]
    assert any("teacher" in x and "fused" in x for x in plan["colocated_on_global_pool"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("controller.exposure_mode=sometimes", "controller.exposure_mode"),
        ("controller.alpha=1.5", "controller.alpha"),
        ("teacher_prompt.segmenter=words", "segmenter"),
        ("teacher_prompt.max_length=0", "teacher_prompt.max_length"),
        ("controller.hold_window=0", "hold_window"),
        ("controller.gamma=1.5", "gamma"),
        ("controller.batch_decisions=1", "batch_decisions"),
        ("distill.mode=l2", "distill.mode"),
        ("teacher.kind=oracle", "teacher.kind"),
        ("teacher.ema_rate=2.0", "teacher.ema_rate"),
        ("probe.batch_size=0", "probe.batch_size"),
        # data/tiny has no extra_info.difficulty: the quantile edges cannot be computed, naming the key to set
        ("controller.granularity=per_difficulty", "controller.difficulty_level_key"),
        ("controller.granularity=per_bucket", "controller.granularity"),
        ("controller.num_buckets=0", "controller.num_buckets"),
        ("controller.difficulty_signal=nll", "controller.difficulty_signal"),
        ("controller.bucket_edges=[2,1]", "controller.bucket_edges"),
        ("probe.path=/nonexistent/probe.parquet", "probe.path"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_atesd_config(atesd_config(override))


@pytest.mark.parametrize("context", ["answer_only", "reference_free", "student"])
def test_a_context_without_alpha_needs_a_fixed_alpha(context):
    """A teacher context that ignores α (``uses_alpha`` false) with a mode that chooses α is refused naming both
    keys; with ``exposure_mode=fixed`` the config passes (the control)."""
    with pytest.raises(ValueError, match=rf"teacher_context={context} .*controller\.exposure_mode=adaptive"):
        check_atesd_config(atesd_config(f"teacher_prompt.teacher_context={context}"))
    check_atesd_config(
        atesd_config(f"teacher_prompt.teacher_context={context}", "controller.exposure_mode=fixed")
    )


def test_answer_only_needs_the_answer_kept():
    with pytest.raises(ValueError, match=r"answer_only .*teacher_prompt\.keep_final_answer=true"):
        check_atesd_config(
            atesd_config(
                "teacher_prompt.teacher_context=answer_only",
                "teacher_prompt.keep_final_answer=false",
                "controller.exposure_mode=fixed",
            )
        )


def test_distill_temperature_is_refused_naming_the_rollout_temperature():
    """The sampling temperature's one home is actor_rollout_ref.rollout.temperature: the old key
    ``distill.temperature`` (a config layer or ``+distill.temperature=...``) fails naming both keys."""
    with pytest.raises(ValueError, match=r"distill\.temperature.*actor_rollout_ref\.rollout\.temperature"):
        check_atesd_config(atesd_config("+distill.temperature=1.1"))
    # a plain override of the removed key already fails in hydra, naming it
    with pytest.raises(Exception, match=r"distill\.temperature"):
        atesd_config("distill.temperature=1.1")
    with pytest.raises(ValueError, match=r"distill: unknown key\(s\) \['temprature'\]"):
        check_atesd_config(atesd_config("+distill.temprature=1.1"))


def test_alpha_min_above_alpha_max_fails():
    with pytest.raises(ValueError, match="alpha_min"):
        check_atesd_config(atesd_config("controller.alpha_min=0.9", "controller.alpha_max=0.2"))


def test_ema_teacher_with_lora_fails():
    cfg = atesd_config("teacher.kind=ema", "actor_rollout_ref.model.lora_rank=8")
    with pytest.raises(ValueError, match="teacher.kind=ema"):
        check_atesd_config(cfg)


def test_misspelled_override_fails_naming_it():
    with pytest.raises(Exception, match="alpah"):
        atesd_config("controller.alpah=0.3")


def test_row_without_reference_fails_naming_the_row_id(tmp_path):
    frame = pd.read_parquet(REPO_ROOT / "data/tiny/train.parquet").head(5)
    infos = [dict(x) for x in frame["extra_info"]]
    infos[3]["reference_solution"] = "   "
    frame["extra_info"] = infos
    path = tmp_path / "train.parquet"
    frame.to_parquet(path)
    with pytest.raises(ValueError, match=f"row id '{infos[3]['id']}'.*reference_solution"):
        check_reference_rows(str(path))
    with pytest.raises(ValueError, match=infos[3]["id"]):
        check_atesd_config(atesd_config(f"data.train_files={path}"))


def with_levels(tmp_path, name, source, levels):
    """A copy of ``source`` whose rows carry extra_info.difficulty = ``levels`` (cycled)."""
    frame = pd.read_parquet(source)
    infos = [dict(x) for x in frame["extra_info"]]
    for i, info in enumerate(infos):
        info["difficulty"] = levels[i % len(levels)]
    frame["extra_info"] = infos
    path = tmp_path / name
    frame.to_parquet(path)
    return str(path)


def per_difficulty_config(tmp_path, levels, *overrides):
    train = with_levels(tmp_path, "train.parquet", REPO_ROOT / "data/tiny/train.parquet", levels)
    probe = with_levels(tmp_path, "probe.parquet", REPO_ROOT / "data/tiny/train.parquet", levels)
    return atesd_config(
        "controller.granularity=per_difficulty",
        f"data.train_files={train}",
        f"probe.path={probe}",
        *overrides,
    )


def test_per_difficulty_passes_and_takes_quantile_edges_of_the_training_rows(tmp_path):
    from recipe.atesd.glue.config_check import resolve_bucket_edges
    from recipe.atesd.method.controller import ControllerConfig

    cfg = per_difficulty_config(tmp_path, [2, 3, 4, 5, 6, 7, 8], "controller.num_buckets=3")
    check_atesd_config(cfg)
    controller = ControllerConfig.from_mapping(OmegaConf.to_container(cfg.controller))
    edges = resolve_bucket_edges(controller, cfg.data.train_files)
    frame = pd.read_parquet(cfg.data.train_files)
    levels = sorted(float(x["difficulty"]) for x in frame["extra_info"])
    n = len(levels)  # quantile_edges: e_i = v[ceil(i n / K)]
    assert edges == (levels[-(-n // 3)], levels[-(-2 * n // 3)])
    fixed = ControllerConfig.from_mapping({**controller.__dict__, "bucket_edges": [3.5, 6.5]})
    assert resolve_bucket_edges(fixed, cfg.data.train_files) == (3.5, 6.5)


def test_per_difficulty_refusals_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"controller\.num_buckets = 3.*controller\.bucket_edges"):
        check_atesd_config(per_difficulty_config(tmp_path, [1, 1, 1, 2]))  # one distinct edge only
    cfg = per_difficulty_config(tmp_path, [1, 2, 3], "controller.bucket_edges=[1.5,2.5]")
    probe = pd.read_parquet(cfg.probe.path)
    infos = [dict(x) for x in probe["extra_info"]]
    infos[2]["difficulty"] = None  # a parquet struct stores a missing field as null
    probe["extra_info"] = infos
    probe.to_parquet(cfg.probe.path)
    with pytest.raises(ValueError, match=r"probe\.path .*row 2 extra_info\.difficulty = None"):
        check_atesd_config(cfg)
