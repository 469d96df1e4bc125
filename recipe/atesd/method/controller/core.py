"""Exposure controller: picks the reveal ratio α for each student update (docs/method.md §2.2).

α has one home: this object. It decides α and the hold-window id; the trainer broadcasts them once per
window to the teacher workers (``recipe/atesd/glue/trainer.py::_expose``) and logs them (``exposure/*``).

Call protocol (steps are 0-based consecutive update indices t = 0, 1, …):

    ctrl.observe_baseline(ℓ_0)           # probe before the first update (before observe(0))
    for t in range(T):
        d = ctrl.decide(t)                # α for update t (same answer if asked again for t)
        … student update with d.alpha, then probe …
        metrics = ctrl.observe(t, StepStats(…))   # supplies ℓ_{t+1}, g_{t+1}

Windows: steps t0 = k·H start window k; the α chosen at t0 is held for updates t0 … t0+H−1. A decision
(s_{t0}, α_raw, log π) is pending until ``observe(t0 + L − 1)`` has supplied ℓ_{t0+L}; its returns G_lp,
G_gt (:mod:`recipe.atesd.method.controller.reward`, which also fixes the ℓ/g indexing) give the reward

    R = Σ_k w_k·G_k                                 (reward_norm = none; the paper: G_lp + λ_gt·G_gt)
    R = Σ_k w_k·z_k(G_k)                            (reward_norm = running)

over the return terms k of ``controller.reward_weights`` (registered in ``reward.py::RETURN_TERMS``; the
defaults are ``lp`` with w = 1 and ``gt`` with w = λ_gt), where z(x) = (x − μ)/σ against the running mean/std
of that return over all decisions completed so far
(this one included; :class:`recipe.atesd.method.controller.state.RunningNorm`), clipped to ±norm_clip. With L > H several
decisions are pending at once, each credited with exactly its own ℓ_{t0} … ℓ_{t0+L}. Decisions still
pending when training stops are never completed.

Modes (``cfg.exposure_mode``, registered in ``exposure.py::EXPOSURE_MODES``): ``fixed`` α = alpha; ``random``
α ~ U[alpha_min, alpha_max] per window; ``schedule`` α = curriculum from schedule_start to schedule_end
(linear|cosine) at progress p = t0/(T−1), held for the window; ``adaptive`` α_raw ~ Beta(a, b) from the policy,
α = clip(α_raw, alpha_min, alpha_max). Every mode uses the same windows and computes rewards (for logging); only
a mode registered with ``learns`` (``adaptive``) learns. Once B decisions have completed, one REINFORCE step (Adam):

    A_j = (R_j − mean R)/(std R + ε)                (std over the B rewards, population form)
    L_ctrl = −(1/B) Σ_j A_j log π_φ(α_raw_j | s_j) + c·[max(0, H̄ − H_target)² + max(0, H_floor − H̄)²],
    H̄ = mean_j H[π_φ(·|s_j)]

log π is recomputed with the current φ at update time (the decisions were sampled with an older φ;
no importance weights: on-policy-ish REINFORCE), then those B decisions are consumed.

Granularity (``cfg.granularity``, docs/method.md §2.4): with K = ``cfg.buckets`` difficulty buckets a window
holds K α's, one per bucket, drawn in bucket order: ``adaptive`` feeds the policy [s_{t0} ; o_k] with o_k the
dummy coding of bucket k (o_0 = 0 ∈ R^{K−1}, o_k = e_{k−1}) and draws α_k ~ Beta(a_k, b_k); ``random`` draws K
uniforms; ``fixed`` and ``schedule`` give every bucket the same α. REINFORCE uses the joint log-prob
Σ_k log π_φ(α_raw_{j,k} | s_j, k) in place of log π_φ(α_raw_j | s_j), and H̄ is the mean over j and k. For
K = 1 (``granularity: batch``) o_k is empty and every operation is the batch-level one above, bit for bit.
The state's ``alpha_ema`` follows :attr:`AlphaDecision.alpha`, the mean of the K α's.

All randomness (policy init, Beta / uniform draws) comes from a private ``torch.Generator`` seeded by
``seed``; the global RNG is never touched. ``state_dict()`` captures everything, so a restored
controller continues bit-identically.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from recipe.atesd.method.controller.config import ControllerConfig
from recipe.atesd.method.controller.exposure import EXPOSURE_MODES, Window, policy_inputs
from recipe.atesd.method.controller.policy import DTYPE, BetaPolicy, beta_entropy, beta_log_prob
from recipe.atesd.method.controller.reward import RETURN_TERMS, PendingDecision
from recipe.atesd.method.controller.state import RunningNorm, StateFeaturiser

STATE_VERSION = 5
"""4: per-bucket decisions (issue 14): ``alpha_raw`` of a pending/completed decision is a list of K values.
5: registered return terms: a decision keeps its signals and returns by name (``reward.py::RETURN_TERMS``)."""

__all__ = ["AlphaDecision", "ControllerConfig", "ExposureController", "StepStats"]


@dataclass(frozen=True)
class AlphaDecision:
    """α for one update. ``window_start`` is True on the window's first step (where it was drawn);
    beta_a / beta_b are the policy's Beta parameters for the window (NaN outside ``adaptive``, and NaN when
    K > 1: see the per-bucket ones). ``bucket_alphas``, ``bucket_beta_a``, ``bucket_beta_b``: one entry per
    difficulty bucket k = 0 … K−1; ``alpha`` is their mean (for K = 1: the one α, the batch-level decision)."""

    alpha: float
    window_id: int
    window_start: bool
    beta_a: float
    beta_b: float
    bucket_alphas: tuple[float, ...]
    bucket_beta_a: tuple[float, ...]
    bucket_beta_b: tuple[float, ...]


@dataclass(frozen=True)
class StepStats:
    """Statistics of update t: distill loss and student–teacher mismatch of the batch, the probe after
    the update (ℓ_{t+1} = probe_nll, g_{t+1} = teacher_ground) and batch-mean student self-confidence."""

    distill_loss: float
    mismatch: float
    probe_nll: float
    teacher_ground: float
    self_confidence: float


class ExposureController:
    """See the module docstring for the protocol, the modes and the update rule."""

    def __init__(self, controller_cfg: ControllerConfig, total_steps: int, seed: int):
        controller_cfg.validate()
        if not (isinstance(total_steps, int) and total_steps >= 1):
            raise ValueError(f"total_steps = {total_steps!r} is invalid: must be an int >= 1")
        self.cfg = copy.deepcopy(controller_cfg)
        self.total_steps = total_steps
        self._generator = torch.Generator().manual_seed(seed)
        self._policy = BetaPolicy(
            len(self.cfg.state_features) + self.cfg.buckets - 1,
            self.cfg.hidden,
            self.cfg.layers,
            self._generator,
        )
        self._optimizer = torch.optim.Adam(self._policy.parameters(), lr=self.cfg.lr)
        self._features = StateFeaturiser(
            self.cfg.state_features, self.cfg.ema_decay, self.cfg.norm_clip, total_steps
        )
        self._pending: list[PendingDecision] = []
        self._mode = EXPOSURE_MODES[self.cfg.exposure_mode]
        self._terms = list(self.cfg.reward_weights)  # the return terms, in the config's order
        self._signals = sorted({s for name in self._terms for s in RETURN_TERMS[name].signals})
        self._completed: list[
            tuple[list[float], list[float], dict[str, float]]
        ] = []  # (s, [α_raw per bucket], {term: G}) to learn from
        self._return_norms = {name: RunningNorm() for name in self._terms}  # reward_norm = running
        self._window: AlphaDecision | None = None  # the current hold window's decision (window_start=True)
        self._decided = 0  # steps decided so far
        self._observed = 0  # steps observed so far
        self._nll: float | None = None  # latest ℓ (ℓ_0 after the baseline, then ℓ_{t+1} after observe(t))
        self._updates = 0

    # ------------------------------------------------------------------ decisions
    def decide(self, step: int) -> AlphaDecision:
        """α for update ``step``; a new draw at window starts (step % H == 0), else the window's α.

        Asking again for the last decided step returns the same decision. Any other step than the next
        one, or deciding step t+1 before ``observe(t)``, raises ValueError.
        """
        if self._window is not None and step == self._decided - 1:
            return replace(self._window, window_start=step % self.cfg.hold_window == 0)
        if step != self._decided:
            raise ValueError(f"decide(step={step}): out of order, the next step to decide is {self._decided}")
        if self._observed != step:
            raise ValueError(f"decide(step={step}): observe(step={step - 1}) must come first")
        window_start = step % self.cfg.hold_window == 0
        if window_start:
            self._open_window(step)
        self._decided += 1
        return replace(self._window, window_start=window_start)

    def _open_window(self, t0: int) -> None:
        """Draw the window's α per bucket with the configured mode (``exposure.py::EXPOSURE_MODES``)."""
        state = self._features.features(t0)
        k_count = self.cfg.buckets
        mode = self.cfg.exposure_mode
        draw = self._mode.draw(
            Window(self.cfg, t0, self.total_steps, k_count, state, self._generator, self._policy)
        )
        if not len(draw.alpha) == len(draw.alpha_raw) == len(draw.beta_a) == len(draw.beta_b) == k_count:
            raise ValueError(f"exposure mode {mode!r} drew {len(draw.alpha)} α's for {k_count} bucket(s)")
        bad = [
            a
            for a in draw.alpha
            if isinstance(a, bool) or not (isinstance(a, int | float) and 0.0 <= a <= 1.0)
        ]
        if bad:
            raise ValueError(f"exposure mode {mode!r} drew α's outside [0, 1]: {bad}")
        single = k_count == 1
        self._window = AlphaDecision(
            alpha=draw.alpha[0] if single else sum(draw.alpha) / k_count,
            window_id=t0 // self.cfg.hold_window,
            window_start=True,
            beta_a=draw.beta_a[0] if single else math.nan,
            beta_b=draw.beta_b[0] if single else math.nan,
            bucket_alphas=tuple(draw.alpha),
            bucket_beta_a=tuple(draw.beta_a),
            bucket_beta_b=tuple(draw.beta_b),
        )
        self._pending.append(PendingDecision(state, list(draw.alpha_raw)))

    # ------------------------------------------------------------------ observations
    def observe_baseline(self, probe_nll: float) -> None:
        """ℓ_0 from the probe before the first update; once, before ``observe(0)``. (No g_0: G_gt starts
        at g_{t0+1}, so the baseline needs no teacher pass and no α.)"""
        _require_finite({"probe_nll": probe_nll}, "observe_baseline")
        if self._nll is not None:
            raise ValueError("observe_baseline: already called (ℓ_0 is set)")
        self._nll = float(probe_nll)
        self._features.observe_baseline(self._nll)

    def observe(self, step: int, stats: StepStats) -> dict[str, float]:
        """Statistics after update ``step``; completes due decisions and maybe updates the policy.

        Returns float metrics: controller/pending always; controller/reward (mean R of the decisions
        completed now) only if some completed; controller/loss, controller/entropy, controller/updates only
        when a REINFORCE update happened (α and the window are the trainer's ``exposure/*``). NaN/inf → ValueError.
        """
        _require_finite({f.name: getattr(stats, f.name) for f in fields(StepStats)}, f"observe(step={step})")
        if self._nll is None:
            raise ValueError(f"observe(step={step}): observe_baseline(probe_nll) must come first")
        if step != self._observed or self._decided != step + 1:
            raise ValueError(
                f"observe(step={step}): out of order, expected observe({self._observed}) after decide({self._observed})"
            )
        self._features.observe(
            self._window.alpha, stats.distill_loss, stats.mismatch, stats.probe_nll, stats.self_confidence
        )
        before = {"probe_nll": self._nll}  # reward.py::START_SIGNALS
        after = {name: getattr(stats, name) for name in self._signals}
        for decision in self._pending:
            decision.add(before, after)
        self._nll = float(stats.probe_nll)
        self._observed += 1

        metrics = {}
        done = [d for d in self._pending if d.complete(self.cfg.lookahead)]
        self._pending = [d for d in self._pending if not d.complete(self.cfg.lookahead)]
        returns = [d.returns(self._terms, self.cfg.gamma) for d in done]
        if returns:
            n = len(returns)
            for name in self._terms:
                metrics[f"controller/return_{name}"] = sum(r[name] for r in returns) / n
            metrics["controller/reward"] = sum(
                w * metrics[f"controller/return_{name}"] for name, w in self.cfg.reward_weights.items()
            )
        if self._mode.learns:
            for d, r in zip(done, returns, strict=True):
                for name, norm in self._return_norms.items():
                    norm.update(r[name])
                self._completed.append((d.state, d.alpha_raw, r))
            while len(self._completed) >= self.cfg.batch_decisions:
                batch = self._completed[: self.cfg.batch_decisions]
                self._completed = self._completed[self.cfg.batch_decisions :]
                metrics.update(self._reinforce(batch))
        metrics["controller/pending"] = float(len(self._pending))
        return metrics

    def _reward(self, returns: dict[str, float]) -> float:
        """R = Σ_k w_k·G_k, or Σ_k w_k·z_k(G_k) under ``reward_norm: running`` (module docstring)."""
        if self.cfg.reward_norm == "none":
            return sum(w * returns[name] for name, w in self.cfg.reward_weights.items())
        clip = self.cfg.norm_clip
        return sum(
            w * self._return_norms[name].normalise(returns[name], clip)
            for name, w in self.cfg.reward_weights.items()
        )

    def _reinforce(self, batch: list[tuple[list[float], list[float], dict[str, float]]]) -> dict[str, float]:
        """One REINFORCE + entropy-band step on B completed decisions (module docstring, §2.2, §2.4):
        log π of decision j is Σ_k log Beta(α_raw_{j,k}; a_k(s_j), b_k(s_j))."""
        cfg = self.cfg
        k_count = cfg.buckets
        states = torch.tensor([row for s, _, _ in batch for row in policy_inputs(s, k_count)], dtype=DTYPE)
        alpha_raw = torch.tensor([x for _, xs, _ in batch for x in xs], dtype=DTYPE)
        rewards = torch.tensor([self._reward(r) for _, _, r in batch], dtype=DTYPE)
        adv = (rewards - rewards.mean()) / (rewards.std(correction=0) + cfg.adv_eps)
        a, b = self._policy(states)
        entropy = beta_entropy(a, b).mean()
        penalty = cfg.entropy_coef * (
            torch.clamp(entropy - cfg.entropy_target, min=0.0) ** 2
            + torch.clamp(cfg.entropy_floor - entropy, min=0.0) ** 2
        )
        joint_log_prob = beta_log_prob(alpha_raw, a, b).view(len(batch), k_count).sum(dim=1)
        loss = -(adv * joint_log_prob).mean() + penalty
        self._optimizer.zero_grad()
        loss.backward()
        self._optimizer.step()
        self._updates += 1
        return {
            "controller/loss": loss.item(),
            "controller/entropy": entropy.item(),
            "controller/updates": float(self._updates),
        }

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically; plain containers + tensors (torch.save-able,
        loadable with ``torch.load(weights_only=True)``)."""
        return copy.deepcopy(
            {
                "version": STATE_VERSION,
                "config": self.cfg.to_dict(),
                "total_steps": self.total_steps,
                "policy": self._policy.state_dict(),
                "optimizer": self._optimizer.state_dict(),
                "generator": self._generator.get_state(),
                "features": self._features.state_dict(),
                "pending": [d.to_dict() for d in self._pending],
                "completed": [[list(s), list(x), dict(r)] for s, x, r in self._completed],
                "return_norms": {key: norm.state_dict() for key, norm in self._return_norms.items()},
                "window": None if self._window is None else asdict(self._window),
                "decided": self._decided,
                "observed": self._observed,
                "nll": self._nll,
                "updates": self._updates,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; config and total_steps must match (ValueError)."""
        state = copy.deepcopy(state)
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"controller state: version = {state.get('version')!r}, expected {STATE_VERSION} (version 5 keeps "
                "each decision's signals and returns by term name; a checkpoint from an older version cannot resume "
                "this controller: start the controller fresh or resume with the code that wrote it)"
            )
        for name, value in self.cfg.to_dict().items():
            if state["config"].get(name) != value:
                raise ValueError(
                    f"controller state: controller.{name} = {state['config'].get(name)!r} differs from this run's {value!r}"
                )
        if state["total_steps"] != self.total_steps:
            raise ValueError(
                f"controller state: total_steps = {state['total_steps']} differs from {self.total_steps}"
            )
        self._policy.load_state_dict(state["policy"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._generator.set_state(state["generator"])
        self._features.load_state_dict(state["features"])
        self._pending = [PendingDecision(**d) for d in state["pending"]]
        self._completed = [(list(s), list(x), dict(r)) for s, x, r in state["completed"]]
        for key, norm in self._return_norms.items():
            norm.load_state_dict(state["return_norms"][key])
        window = state["window"]
        self._window = (
            None
            if window is None
            else AlphaDecision(**{k: tuple(v) if k.startswith("bucket_") else v for k, v in window.items()})
        )
        self._decided, self._observed = state["decided"], state["observed"]
        self._nll, self._updates = state["nll"], state["updates"]


def _require_finite(values: dict[str, float], where: str) -> None:
    for name, value in values.items():
        try:
            finite = math.isfinite(float(value))
        except (TypeError, ValueError):
            finite = False
        if not finite:
            raise ValueError(f"{where}: {name} = {value!r} is not a finite number")
