"""Beta policy π_φ(α | s) of the exposure controller (docs/method.md §2.2, "Policy").

(a, b) = 1 + softplus(f_φ(s)), α ~ Beta(a, b). Everything runs in float64 on CPU and draws randomness
only from a caller-owned ``torch.Generator`` (never the global RNG), so a controller restored from its
state dict continues bit-identically.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DTYPE = torch.float64

SAMPLE_EPS = 1e-6
"""Numerical guard: a raw Beta sample is kept inside [SAMPLE_EPS, 1 − SAMPLE_EPS] so log π stays finite."""


def beta_log_prob(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log Beta(x; a, b) = (a−1)·log x + (b−1)·log(1−x) − [lnΓ(a) + lnΓ(b) − lnΓ(a+b)]   (§2.2)."""
    log_norm = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return (a - 1.0) * torch.log(x) + (b - 1.0) * torch.log1p(-x) - log_norm


def beta_entropy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """H[Beta(a, b)] = ln B(a,b) − (a−1)ψ(a) − (b−1)ψ(b) + (a+b−2)ψ(a+b)   (§2.2, entropy penalty)."""
    log_norm = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return (
        log_norm
        - (a - 1.0) * torch.digamma(a)
        - (b - 1.0) * torch.digamma(b)
        + (a + b - 2.0) * torch.digamma(a + b)
    )


def sample_gamma(shape: float, generator: torch.Generator) -> float:
    """One Gamma(shape, 1) draw for shape ≥ 1 (Marsaglia & Tsang 2000), randomness from ``generator``.

    d = shape − 1/3, c = 1/√(9d); repeat z ~ N(0,1), v = (1 + c·z)³, u ~ U(0,1) until
    v > 0 and log u < z²/2 + d − d·v + d·log v; return d·v.
    """
    if not shape >= 1.0:
        raise ValueError(f"sample_gamma: shape = {shape!r} must be >= 1")
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = torch.randn((), generator=generator, dtype=DTYPE).item()
        v = (1.0 + c * z) ** 3
        if v <= 0.0:
            continue
        u = torch.rand((), generator=generator, dtype=DTYPE).item()
        if u > 0.0 and math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v


def sample_beta(a: float, b: float, generator: torch.Generator) -> float:
    """α ~ Beta(a, b) as X/(X+Y), X ~ Gamma(a), Y ~ Gamma(b) (a, b > 1 here), kept in [ε, 1−ε]."""
    x = sample_gamma(a, generator)
    y = sample_gamma(b, generator)
    return min(max(x / (x + y), SAMPLE_EPS), 1.0 - SAMPLE_EPS)


class BetaPolicy(nn.Module):
    """f_φ: ``layers`` linear layers with tanh between, n_in → hidden → … → 2; (a, b) = 1 + softplus(f_φ(s)).

    Hidden layers get a uniform(±1/√fan_in) init from ``generator``; the output layer starts at zero, so
    the initial policy is the symmetric Beta(1+ln2, 1+ln2) in every state (mean 0.5) [chosen].
    """

    def __init__(self, n_in: int, hidden: int, layers: int, generator: torch.Generator):
        super().__init__()
        widths = [n_in] + [hidden] * (layers - 1) + [2]
        self.linears = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, w_in, w_out, dtype=DTYPE)
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        with torch.no_grad():
            for linear in self.linears[:-1]:
                bound = 1.0 / math.sqrt(linear.in_features)
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.uniform_(-bound, bound, generator=generator)
            self.linears[-1].weight.zero_()
            self.linears[-1].bias.zero_()

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states [N, n_in] → (a [N], b [N]), both > 1."""
        h = states
        for linear in self.linears[:-1]:
            h = torch.tanh(linear(h))
        ab = 1.0 + nn.functional.softplus(self.linears[-1](h))
        return ab[:, 0], ab[:, 1]
