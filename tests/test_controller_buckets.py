"""Per-difficulty exposure controller (docs/method.md §2.4, recipe/atesd/method/controller/core.py):
K = 1 is the batch-level controller bit for bit; K > 1 holds one α per bucket; joint log-prob; resume."""

import dataclasses
import io
import math

import pytest
import torch
from test_controller import drive, stats

from recipe.atesd.method.controller import ControllerConfig, ExposureController
from recipe.atesd.method.controller.exposure import policy_inputs
from recipe.atesd.method.controller.policy import BetaPolicy, beta_entropy, beta_log_prob


def controller(mode: str = "adaptive", seed: int = 5, **kw) -> ExposureController:
    cfg = ControllerConfig(exposure_mode=mode, hold_window=3, lookahead=7, batch_decisions=2, lr=0.05, **kw)
    ctrl = ExposureController(cfg, total_steps=200, seed=seed)
    ctrl.observe_baseline(3.0)
    return ctrl


@pytest.mark.parametrize("mode", ["adaptive", "random", "fixed", "schedule"])
def test_one_bucket_is_the_batch_controller_bit_for_bit(mode):
    batch, per = controller(mode), controller(mode, granularity="per_difficulty", num_buckets=1)
    ref_alphas, ref_metrics, _ = drive(batch, range(90), 3.0)
    alphas, metrics, _ = drive(per, range(90), 3.0)
    assert alphas == ref_alphas and metrics == ref_metrics  # exact ==, floats included
    ref_state, state = batch.state_dict(), per.state_dict()
    assert all(torch.equal(ref_state["policy"][k], state["policy"][k]) for k in ref_state["policy"])
    assert state["features"] == ref_state["features"] and state["pending"] == ref_state["pending"]
    if mode == "adaptive":
        assert sum("controller/loss" in m for m in metrics) >= 10  # several REINFORCE updates compared
        d = per.decide(89)
        assert d.bucket_alphas == (d.alpha,) and (d.bucket_beta_a, d.bucket_beta_b) == (
            (d.beta_a,),
            (d.beta_b,),
        )


def test_policy_inputs_are_dummy_coded():
    assert policy_inputs([0.5, -1.0], 1) == [[0.5, -1.0]]
    assert policy_inputs([0.5], 3) == [[0.5, 0.0, 0.0], [0.5, 1.0, 0.0], [0.5, 0.0, 1.0]]


def test_buckets_hold_their_own_alpha_for_the_window():
    ctrl = controller(granularity="per_difficulty", num_buckets=3)
    first = ctrl.decide(0)
    assert len(first.bucket_alphas) == 3 and len(set(first.bucket_alphas)) == 3  # three independent draws
    assert first.alpha == sum(first.bucket_alphas) / 3 and math.isnan(first.beta_a)
    # the output layer starts at zero: every bucket starts at the same symmetric Beta(1 + ln 2, 1 + ln 2)
    assert first.bucket_beta_a == first.bucket_beta_b == (1.0 + math.log(2.0),) * 3
    ctrl.observe(0, stats(2.9))
    for t in (1, 2):
        assert ctrl.decide(t).bucket_alphas == first.bucket_alphas
        ctrl.observe(t, stats(2.9 - 0.1 * t))
    assert ctrl.decide(3).bucket_alphas != first.bucket_alphas
    fixed = controller("fixed", granularity="per_difficulty", num_buckets=4, alpha=0.3).decide(0)
    assert fixed.bucket_alphas == (0.3,) * 4


def test_reinforce_uses_the_joint_log_prob_of_the_buckets():
    cfg = ControllerConfig(
        exposure_mode="adaptive",
        hold_window=1,
        lookahead=1,
        batch_decisions=2,
        reward_weights={"lp": 1.0, "gt": 0.1},
        reward_norm="none",
        entropy_target=-5.0,
        entropy_floor=-6.0,
        granularity="per_difficulty",
        num_buckets=3,
    )
    ctrl = ExposureController(cfg, total_steps=10, seed=3)
    ctrl.observe_baseline(3.0)
    ctrl.decide(0)
    ctrl.observe(0, stats(2.9, ground=-1.0))  # R_0 = 0.1 + 0.1·(−1) = 0
    ctrl.decide(1)
    before = ctrl.state_dict()
    metrics = ctrl.observe(1, stats(2.5, ground=-2.0))  # R_1 = 0.4 + 0.1·(−2) = 0.2
    net = BetaPolicy(len(cfg.state_features) + 2, cfg.hidden, cfg.layers, torch.Generator())
    net.load_state_dict(before["policy"])
    (s0, x0, _), d1 = before["completed"][0], before["pending"][0]
    adv = torch.tensor([-0.1, 0.1], dtype=torch.float64) / (0.1 + cfg.adv_eps)  # (R − mean)/(std + ε)
    joint, entropies = [], []
    for s, xs in ((s0, x0), (d1["state"], d1["alpha_raw"])):
        a, b = net(torch.tensor(policy_inputs(s, 3), dtype=torch.float64))
        joint.append(beta_log_prob(torch.tensor(xs, dtype=torch.float64), a, b).sum())
        entropies.append(beta_entropy(a, b))
    entropy = torch.cat(entropies).mean()
    expected = -(adv * torch.stack(joint)).mean() + (entropy + 5.0).clamp(min=0.0) ** 2
    # same float64 terms summed in another order: a few ulps of a loss of order 10
    assert metrics["controller/loss"] == pytest.approx(expected.item(), rel=1e-12)
    assert metrics["controller/entropy"] == pytest.approx(entropy.item(), rel=1e-12)


def test_state_dict_round_trip_mid_window_with_buckets():
    ref = controller(seed=7, granularity="per_difficulty", num_buckets=3)
    ref_alphas, ref_metrics, _ = drive(ref, range(120), 3.0)
    ref_buckets = [ref.decide(119).bucket_alphas]

    run = controller(seed=7, granularity="per_difficulty", num_buckets=3)
    _, _, nll = drive(run, range(82), 3.0)  # step 82 is mid-window (window 27 = steps 81..83)
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)
    buffer.seek(0)
    restored = controller(seed=999, granularity="per_difficulty", num_buckets=3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    got, want = restored.decide(81), run.decide(81)  # (beta_a, beta_b are NaN at K > 1: compare the rest)
    assert (got.bucket_alphas, got.bucket_beta_a, got.window_id) == (
        want.bucket_alphas,
        want.bucket_beta_a,
        27,
    )
    alphas, metrics, _ = drive(restored, range(82, 120), nll)
    assert alphas == ref_alphas[82:] and metrics == ref_metrics[82:]
    assert [restored.decide(119).bucket_alphas] == ref_buckets
    assert any("controller/loss" in m for m in metrics)

    other_k = controller(granularity="per_difficulty", num_buckets=2)
    with pytest.raises(ValueError, match="controller.num_buckets = 3 differs"):
        other_k.load_state_dict(run.state_dict())


def test_old_state_version_is_refused_with_the_reason():
    state = controller().state_dict()
    state["version"] = 4
    with pytest.raises(
        ValueError, match=r"version = 4, expected 5 \(version 5 keeps each decision's signals"
    ):
        controller().load_state_dict(state)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"granularity": "per_bucket"}, "controller.granularity"),
        ({"num_buckets": 0}, r"controller.num_buckets \(K\)"),
        ({"num_buckets": 2.0}, r"controller.num_buckets \(K\)"),
        ({"difficulty_signal": "nll"}, "controller.difficulty_signal"),
        ({"difficulty_level_key": ""}, "controller.difficulty_level_key"),
        ({"bucket_edges": [3.0, 2.0]}, "controller.bucket_edges"),
        ({"bucket_edges": [1.0, float("nan")]}, "controller.bucket_edges"),
        ({"bucket_edges": [4.0]}, "controller.bucket_edges"),  # K = 3 needs two edges
    ],
)
def test_bucket_config_validation_names_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        dataclasses.replace(ControllerConfig(), **overrides).validate()
    assert dataclasses.replace(ControllerConfig(), bucket_edges=[3.0, 6.0]).validate().buckets == 1
