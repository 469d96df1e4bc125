"""The sweep plans: the tables of arms recipe/atesd/tools/repro_sweep.py runs (``--plan``) and the reports read.

- ``repro`` (:data:`METHODS`, :data:`GROUPS`; issue 13, docs/toy-reproduction.md): fixed α ∈ {0, 0.25, 0.5, 0.75,
  1}, ``random``, ``adaptive``, ``adaptive_per_difficulty`` with the demo's controller settings (:data:`CONTROLLER`),
  and ``grpo``; seeds 0-2.
- ``study`` (:data:`STUDY_METHODS`, :data:`STUDY_GROUPS`; issue 30, docs/toy-study.md): the 16 ATESD arms with the
  recipe's controller defaults, every teacher option of docs/method.md §2.5-2.7, GRPO and its lr grid; seeds 0-4.

A :class:`Method` is an arm: its exposure mode (``grpo`` for verl's GRPO), α for ``fixed``, and its overrides.
"""

from __future__ import annotations

from dataclasses import dataclass

# the demo's controller overrides (Makefile DEMO_OVERRIDES): several decisions and updates in 40 steps
CONTROLLER = ("controller.hold_window=2", "controller.lookahead=3", "controller.batch_decisions=2")


@dataclass(frozen=True)
class Method:
    """One arm of the sweep: its exposure mode (``grpo`` for verl's GRPO), α (``fixed`` only), the controller
    overrides every ATESD arm of its plan shares (the reproduction's: :data:`CONTROLLER`) and its own ``extra``."""

    mode: str
    alpha: float | None = None
    extra: tuple[str, ...] = ()
    controller: tuple[str, ...] = CONTROLLER

    @property
    def entry(self) -> str:
        return "recipe.atesd.main_grpo" if self.mode == "grpo" else "recipe.atesd.main_atesd"

    def overrides(self) -> list[str]:
        if self.mode == "grpo":
            return list(self.extra)
        alpha = [f"controller.alpha={self.alpha}"] if self.mode == "fixed" else []
        return [f"controller.exposure_mode={self.mode}", *alpha, *self.controller, *self.extra]


FIXED_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
# issue 14: one α per difficulty bucket (docs/method.md §2.4), K = 3 quantile buckets of the toy world's level
PER_DIFFICULTY = ("controller.granularity=per_difficulty", "controller.num_buckets=3")
METHODS = {
    **{f"fixed-{a:g}": Method("fixed", a) for a in FIXED_ALPHAS},
    "random": Method("random"),
    "adaptive": Method("adaptive"),
    "adaptive_per_difficulty": Method("adaptive", extra=PER_DIFFICULTY),
    "grpo": Method("grpo"),
}
GROUPS = {"all": list(METHODS), "fixed": [m for m in METHODS if m.startswith("fixed-")]}

# The toy-world study (issue 30; its design and the reasons: docs/toy-study.md): the recipe's controller defaults
# (no shared controller overrides), every teacher option of docs/method.md §2.5-2.7 beside fixed and adaptive
# exposure, and GRPO's lr grid (run on its own seed; the chosen lr becomes the study's `grpo` arm).
PAPER_CONTROLLER = (  # the paper's learning values (docs/config.md, "Evidence for the [chosen] learning keys")
    "controller.lr=0.001",
    "controller.reward_norm=none",
    "controller.entropy_target=-1.0",
    "controller.entropy_coef=0.1",
    "controller.entropy_floor=-10.0",
)
ANCHOR_RESIDUAL = (
    "distill.target=anchor_residual",
    "distill.residual_lambda=0.8",
    "distill.residual_clip=5.0",
)
GRPO_LRS = (2e-5, 1e-4, 5e-4)


def _context(name: str) -> tuple[str, ...]:
    return (f"teacher_prompt.teacher_context={name}",)


STUDY_METHODS = {
    **{f"fixed-{a:g}": Method("fixed", a, controller=()) for a in (0.25, 0.5, 0.75, 1.0)},
    **{
        c: Method("fixed", 1.0, _context(c), ()) for c in ("answer_only", "reference_free", "other_reference")
    },
    "random": Method("random", controller=()),
    "schedule-down": Method(
        "schedule", None, ("controller.schedule_start=1.0", "controller.schedule_end=0.25"), ()
    ),
    "schedule-up": Method(
        "schedule", None, ("controller.schedule_start=0.25", "controller.schedule_end=1.0"), ()
    ),
    "adaptive": Method("adaptive", controller=()),
    "adaptive-paper": Method("adaptive", None, PAPER_CONTROLLER, ()),
    "adaptive_per_difficulty": Method("adaptive", None, PER_DIFFICULTY, ()),
    "anchor_residual-0.5": Method("fixed", 0.5, ANCHOR_RESIDUAL, ()),
    "anchor_residual-adaptive": Method("adaptive", None, ANCHOR_RESIDUAL, ()),
    "pw-opsd": Method("fixed", 1.0, ("distill.token_weighting=position",), ()),
    **{
        f"grpo-lr{lr:.0e}": Method("grpo", None, (f"actor_rollout_ref.actor.optim.lr={lr:g}",))
        for lr in GRPO_LRS
    },
    # the grid's choice (seed 100, 2026-12-08; docs/toy-study.md, amendment 1): lr 1e-4
    "grpo": Method("grpo", None, ("actor_rollout_ref.actor.optim.lr=0.0001",)),
}
STUDY_GROUPS = {
    "all": [m for m in STUDY_METHODS if not m.startswith("grpo-lr")],
    "arms": [m for m in STUDY_METHODS if STUDY_METHODS[m].mode != "grpo"],
    "grpo-grid": [m for m in STUDY_METHODS if m.startswith("grpo-lr")],
}


@dataclass(frozen=True)
class Plan:
    """A table of methods, named groups of them and the seeds of its design: what ``--plan`` selects (``--seeds``
    runs a part of the seeds)."""

    methods: dict[str, Method]
    groups: dict[str, list[str]]
    seeds: tuple[int, ...]


# the seeds of each design: the reproduction's three (issue 13), the study's five (docs/toy-study.md, "Seeds")
PLANS = {
    "repro": Plan(METHODS, GROUPS, (0, 1, 2)),
    "study": Plan(STUDY_METHODS, STUDY_GROUPS, (0, 1, 2, 3, 4)),
}
REPRO = PLANS["repro"]


def select_methods(names: list[str], plan: Plan = REPRO) -> list[str]:
    """Method names from names and groups of ``plan`` (the reproduction's: ``all``, ``fixed``), in its table's
    order, each once."""
    chosen = set()
    for name in names:
        if name in plan.groups:
            chosen.update(plan.groups[name])
        elif name in plan.methods:
            chosen.add(name)
        else:
            raise ValueError(f"unknown method {name!r}: one of {', '.join([*plan.groups, *plan.methods])}")
    return [m for m in plan.methods if m in chosen]
