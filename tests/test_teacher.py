"""Which weights play the teacher, its config mirror, and the EMA update (recipe/atesd/method/teacher.py)."""

import dataclasses

import pytest
import torch
import yaml
from conftest import REPO_ROOT

from recipe.atesd.method.teacher import TeacherConfig, ema_update_, teacher_weights


def test_yaml_mirrors_teacher_config():
    values = yaml.safe_load((REPO_ROOT / "recipe/atesd/config/teacher/default.yaml").read_text())
    assert values == dataclasses.asdict(TeacherConfig())
    assert TeacherConfig(**values).validate() == TeacherConfig()


@pytest.mark.parametrize(
    ("kind", "lora", "where"),
    [
        ("frozen", False, "reference"),
        ("frozen", True, "adapters_off"),
        ("live", False, "actor"),
        ("live", True, "actor"),
        ("ema", False, "reference"),
    ],
)
def test_teacher_weights_placement(kind, lora, where):
    assert teacher_weights(kind, lora) == where


def test_bad_teacher_settings_name_the_key():
    with pytest.raises(ValueError, match="teacher.kind=ema needs full fine-tuning"):
        teacher_weights("ema", True)
    with pytest.raises(ValueError, match="teacher.kind"):
        teacher_weights("oracle", False)
    with pytest.raises(ValueError, match="teacher.kind"):
        TeacherConfig(kind="oracle").validate()
    with pytest.raises(ValueError, match="teacher.ema_rate"):
        TeacherConfig(ema_rate=0.0).validate()


def test_ema_update_moves_teacher_slowly_toward_student():
    teacher = [torch.full((3,), 10.0), torch.zeros(2, 2, dtype=torch.float64)]
    student = [torch.zeros(3), torch.ones(2, 2, dtype=torch.float64)]
    ema_update_(teacher, student, 0.01)
    torch.testing.assert_close(teacher[0], torch.full((3,), 9.9))  # (1 − r)·10 + r·0, not r·10
    torch.testing.assert_close(teacher[1], torch.full((2, 2), 0.01, dtype=torch.float64))
    ema_update_(teacher, student, 1.0)
    assert torch.equal(teacher[0], student[0]) and torch.equal(teacher[1], student[1])
    before = [p.clone() for p in teacher]
    with pytest.raises(ValueError, match="ema_rate"):
        ema_update_(teacher, student, 1.5)
    with pytest.raises(ValueError, match="student_params"):
        ema_update_(teacher, student[:1], 0.1)
    with pytest.raises(ValueError, match="shape"):
        ema_update_(teacher, [student[0], torch.ones(3, dtype=torch.float64)], 0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher, strict=True))
