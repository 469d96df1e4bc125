"""Per-token loss weights (recipe/atesd/method/token_weights.py, docs/method.md §2.6): PW-OPSD's position schedule
against the formula written per token in fp64, the registry and its config errors. The worker's weighted loss
against a dense reference is in tests/test_worker_loss.py."""

import math
from types import SimpleNamespace

import pytest
import torch

from recipe.atesd.method.losses import DistillLossConfig
from recipe.atesd.method.token_weights import (
    TOKEN_WEIGHTINGS,
    position_weights,
    token_weighting,
    valid_positions,
)

PW_OPSD = SimpleNamespace(position_w_min=0.25, position_tau=0.30, position_s=0.10)  # the authors' "Moderate"


def formula(i: int, length: int, cfg) -> float:
    """w_i = w_min + (1 − w_min)·σ((frac − τ)/s), frac = (i − 0.5)/L, one token at a time."""
    frac = (i - 0.5) / length
    return cfg.position_w_min + (1 - cfg.position_w_min) / (
        1 + math.exp(-(frac - cfg.position_tau) / cfg.position_s)
    )


def packed(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([v for r in rows for v in r], dtype=torch.bool), torch.tensor([len(r) for r in rows])


# rows of a packed micro-batch: a valid token is 1; 0s are masked ones (e.g. padding inside a row)
ROWS = [[1, 1, 1, 1, 1], [1, 1, 0, 1], [0, 0], [1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]]


def test_position_weights_follow_the_formula_per_row():
    """Each valid token's weight is the formula at its index among its own row's valid tokens (i − 0.5 over that
    row's count, not the packed position nor the batch's longest row), ≤ 1e-12 in fp64; 0 on masked tokens."""
    mask, lengths = packed(ROWS)
    got = position_weights(mask, lengths, PW_OPSD)
    assert got.dtype == torch.float64
    want = []
    for r in ROWS:
        valid, i = sum(r), 0
        for v in r:
            i += v
            want.append(formula(i, valid, PW_OPSD) if v else 0.0)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)
    # the schedule rises along a response: its first token near w_min, its last near 1
    long_row = got[-14:-2]
    assert long_row[0] < 0.35 and long_row[-1] > 0.99 and bool((long_row.diff() > 0).all())


def test_a_wrong_schedule_is_seen():
    """Control: frac = i/L (no − 0.5) or the packed position in place of the row's own index would pass unseen if the
    test above compared loosely; both move some weight by far more than its bound."""
    mask, lengths = packed(ROWS)
    got = position_weights(mask, lengths, PW_OPSD)
    shifted = []
    for r in ROWS:
        valid, i = sum(r), 0
        for v in r:
            i += v
            shifted.append(formula(i + 0.5, valid, PW_OPSD) if v else 0.0)
    assert (got - torch.tensor(shifted, dtype=torch.float64)).abs().max() > 1e-3
    index, count = valid_positions(mask, lengths)
    assert index.tolist()[5:9] == [1, 2, 0, 3] and count.tolist()[5:9] == [3, 3, 3, 3]


def test_none_is_the_mask_and_lengths_must_cover_it():
    mask, lengths = packed(ROWS)
    assert torch.equal(token_weighting("none").weights(mask, lengths, PW_OPSD), mask.to(torch.float64))
    with pytest.raises(ValueError, match="sum to 24, the mask has 25"):
        valid_positions(torch.ones(25, dtype=torch.bool), torch.tensor([20, 4]))


def test_registry_and_config_errors_name_the_key():
    assert {"none", "position"} <= set(TOKEN_WEIGHTINGS)
    assert TOKEN_WEIGHTINGS["position"].keys == ("position_w_min", "position_tau", "position_s")
    DistillLossConfig(token_weighting="position").validate()
    for kwargs, key in [
        ({"token_weighting": "late"}, "distill.token_weighting"),
        ({"position_w_min": 1.5}, "distill.position_w_min"),
        ({"position_tau": -0.1}, "distill.position_tau"),
        ({"position_s": 0.0}, "distill.position_s"),
    ]:
        with pytest.raises(ValueError, match=key):
            DistillLossConfig(**kwargs).validate()
