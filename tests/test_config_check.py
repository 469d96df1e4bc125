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
        ("distill.temperature=1.0", "distill.temperature"),
        ("probe.batch_size=0", "probe.batch_size"),
        ("controller.granularity=per_difficulty", "controller.granularity"),  # not wired into the trainer
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
