"""How the next token is chosen: greedy by default, or sampled reproducibly for a given seed.

Evaluation is always greedy. Sampling exists for API clients that send `temperature`, `top_p` and
`seed`; each request draws from its own `torch.Generator`, so a seeded answer depends on the seed
alone, never on which other requests share the decode step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """`temperature` 0 means greedy (then `top_p` and `seed` change nothing)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def generator(self) -> torch.Generator | None:
        """A generator for one request: seeded when a seed is given, else from fresh entropy."""
        if self.greedy:
            return None
        g = torch.Generator(device="cpu")
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed)
        return g


GREEDY = Sampling()


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token of one row from its last-position logits (shape [vocab])."""
    if sampling.greedy:
        return int(logits.argmax())
    # Sampling runs in fp32 on the CPU: the same seed gives the same token whatever the device or
    # the batch the row was decoded in.
    probs = torch.softmax(logits.float().cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < sampling.top_p  # the first always stays
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
