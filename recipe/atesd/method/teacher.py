"""Which weights play the privileged teacher (docs/method.md §1, "Teacher weights").

``teacher.kind``: ``frozen`` (the initial policy, the papers' default), ``live`` (the current student) or
``ema`` (a copy moved slowly toward the student): entries of the :data:`TEACHER_KINDS` registry (bottom of this
file), each declaring where its weights live, whether they move, and what runs after each student update.
:func:`teacher_weights` is the one place that turns (kind, LoRA or not) into where those weights live; the
trainer, the worker, the entry point and the config check all ask it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TeacherKind:
    """A registered teacher kind: ``place(lora) -> where`` says where its weights live — ``"actor"`` (the actor
    module itself), ``"adapters_off"`` (the actor with its LoRA adapters disabled: the initial weights at no extra
    memory) or ``"reference"`` (a separate copy of the initial weights, verl's fused reference model) — or raises
    ValueError for a combination it refuses; ``moves``: its weights change during training (so nothing computed
    from them may be cached); ``after_update(teacher_params, student_params, cfg)``: called by the worker after
    every student update (None: nothing), e.g. the EMA step; ``keys``: the ``teacher.*`` keys it reads."""

    place: Callable[[bool], str]
    moves: bool
    after_update: Callable[[Iterable[torch.Tensor], Iterable[torch.Tensor], TeacherConfig], None] | None
    keys: tuple[str, ...]


PLACES = ("actor", "adapters_off", "reference")

TEACHER_KINDS: dict[str, TeacherKind] = {}
"""Registered teacher kinds by name (``teacher.kind``). Adding one is one :func:`register_teacher_kind` call here
plus its keys in :class:`TeacherConfig` / ``config/teacher/default.yaml`` and its line in docs/config.md."""


def register_teacher_kind(
    name: str, *, place, moves: bool, after_update=None, keys: tuple[str, ...] = ()
) -> None:
    """Register teacher kind ``name`` (see :class:`TeacherKind`)."""
    if name in TEACHER_KINDS:
        raise ValueError(f"teacher kind {name!r} is already registered")
    TEACHER_KINDS[name] = TeacherKind(place, moves, after_update, tuple(keys))


@dataclass
class TeacherConfig:
    """The teacher's weights. Mirrored by ``config/teacher/default.yaml``.

    kind: a registered kind (:data:`TEACHER_KINDS`): frozen | live | ema.
    ema_rate: r in teacher ← (1 − r)·teacher + r·student (small r = slow teacher), see :func:`ema_update_`.
    """

    kind: str = "frozen"
    ema_rate: float = 0.01

    def validate(self) -> TeacherConfig:
        """Raise ValueError naming the offending key; return self."""
        teacher_kind(self.kind)
        if not 0.0 < self.ema_rate <= 1.0:
            raise ValueError(f"teacher.ema_rate must be in (0, 1], got {self.ema_rate!r}")
        return self


def teacher_kind(name: str) -> TeacherKind:
    """The registered kind ``name``; ValueError naming ``teacher.kind`` and the known kinds otherwise."""
    if name not in TEACHER_KINDS:
        raise ValueError(f"teacher.kind must be one of {sorted(TEACHER_KINDS)}, got {name!r}")
    return TEACHER_KINDS[name]


def teacher_weights(kind: str, lora: bool) -> str:
    """Where the weights of teacher kind ``kind`` live (one of :data:`PLACES`), with or without LoRA: the one
    place the trainer, the worker, the entry point and the config check ask."""
    where = teacher_kind(kind).place(lora)
    if where not in PLACES:
        raise ValueError(f"teacher.kind={kind!r} places its weights at {where!r}, not one of {PLACES}")
    return where


def _initial_weights(lora: bool) -> str:
    return "adapters_off" if lora else "reference"


def _ema_place(lora: bool) -> str:
    """``ema`` moves a copy of the initial weights: with LoRA the adapters-off module cannot hold an average."""
    if lora:
        raise ValueError("teacher.kind=ema needs full fine-tuning (a reference copy); with LoRA use frozen")
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


def _ema_after_update(teacher_params, student_params, cfg: TeacherConfig) -> None:
    ema_update_(teacher_params, student_params, cfg.ema_rate)


# ---------------------------------------------------------------------- the kinds (docs/method.md §1)

register_teacher_kind(
    "frozen", place=_initial_weights, moves=False
)  # the initial policy: the papers' default
register_teacher_kind("live", place=lambda lora: "actor", moves=True)  # the current student
register_teacher_kind("ema", place=_ema_place, moves=True, after_update=_ema_after_update, keys=("ema_rate",))
