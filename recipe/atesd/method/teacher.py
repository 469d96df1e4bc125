"""Which weights play the privileged teacher (docs/method.md §1, "Teacher weights").

``teacher.kind``: ``frozen`` (the initial policy, the papers' default), ``live`` (the current student) or
``ema`` (a copy moved slowly toward the student). :func:`teacher_weights` is the one place that turns
(kind, LoRA or not) into where those weights live; the trainer, the worker, the entry point and the
config check all ask it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

TEACHER_KINDS = ("frozen", "live", "ema")


@dataclass
class TeacherConfig:
    """The teacher's weights. Mirrored by ``config/teacher/default.yaml``.

    kind: frozen | live | ema.
    ema_rate: r in teacher ← (1 − r)·teacher + r·student (small r = slow teacher), see :func:`ema_update_`.
    """

    kind: str = "frozen"
    ema_rate: float = 0.01

    def validate(self) -> TeacherConfig:
        """Raise ValueError naming the offending key; return self."""
        if self.kind not in TEACHER_KINDS:
            raise ValueError(f"teacher.kind must be one of {TEACHER_KINDS}, got {self.kind!r}")
        if not 0.0 < self.ema_rate <= 1.0:
            raise ValueError(f"teacher.ema_rate must be in (0, 1], got {self.ema_rate!r}")
        return self


def teacher_weights(kind: str, lora: bool) -> str:
    """Where the teacher's weights live:

    - ``"actor"``: the actor module itself (``live``);
    - ``"adapters_off"``: the actor with its LoRA adapters disabled — the initial weights at no extra
      memory (``frozen`` with LoRA; the papers' setting);
    - ``"reference"``: a separate copy of the initial weights (``frozen`` full fine-tuning, and ``ema``,
      which moves that copy).
    ``ema`` with LoRA is refused: the adapters-off module cannot hold an average of the student.
    """
    if kind not in TEACHER_KINDS:
        raise ValueError(f"teacher.kind must be one of {TEACHER_KINDS}, got {kind!r}")
    if kind == "live":
        return "actor"
    if lora:
        if kind == "ema":
            raise ValueError(
                "teacher.kind=ema needs full fine-tuning (a reference copy); with LoRA use frozen"
            )
        return "adapters_off"
    return "reference"


@torch.no_grad()
def ema_update_(
    teacher_params: Iterable[torch.Tensor], student_params: Iterable[torch.Tensor], rate: float
) -> None:
    """EMA teacher, in place (docs/method.md §1, "Teacher weights"):

    teacher ← (1 − r)·teacher + r·student,  r = ``teacher.ema_rate`` (small r: the teacher moves slowly;
    r = 1 copies the student, i.e. the ``live`` teacher).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"ema_rate must be in [0, 1], got {rate!r}")
    teachers, students = list(teacher_params), list(student_params)
    if len(teachers) != len(students):
        raise ValueError(f"teacher_params has {len(teachers)} tensors, student_params {len(students)}")
    for i, (t, s) in enumerate(zip(teachers, students, strict=True)):
        if t.shape != s.shape:
            raise ValueError(
                f"parameter {i}: teacher shape {tuple(t.shape)} != student shape {tuple(s.shape)}"
            )
    for t, s in zip(teachers, students, strict=True):
        t.lerp_(s.to(t.dtype), rate)
