"""The baselines of the paper's tables: the L2 norm of the Q-Former outputs, Q-Former self-attention, the first k,
k at random, and no pruning at all. Each registers itself under its `pruning_method` name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .scoring import Setting, check_seed, register_pruning_method


def l2_scores(query_output: torch.Tensor) -> torch.Tensor:
    """L2 norm of each Q-Former output token. query_output: (B, Q, D) -> (B, Q)."""
    return query_output.float().norm(dim=-1)


def self_attention_scores(self_attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention each query receives in the Q-Former self-attention (SpAtten-like).

    Args:
        self_attentions: one (B, H, Q, Q) tensor per Q-Former layer, [b, h, attending, attended].
    Returns:
        (B, Q): summed over layers, heads and attending queries.
    """
    if len(self_attentions) == 0:
        raise ValueError("`self_attentions` must hold at least one layer's probabilities; got none.")
    return sum(p.float().sum(dim=(1, 2)) for p in self_attentions)


def position_scores(batch_size: int, num_queries: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Earlier queries score higher, so the first k are kept. Returns (B, Q)."""
    return -torch.arange(num_queries, device=device, dtype=torch.float32).expand(batch_size, num_queries)


def random_scores(
    batch_size: int, num_queries: int, seed: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """A seeded random score per query, the same for every sample. Returns (B, Q).

    One draw shared by the batch makes the kept set independent of batch size, order and data-parallel
    sharding, so evaluation is reproducible however it is batched.
    """
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(num_queries, generator=generator)
    return scores.to(device).expand(batch_size, num_queries)


def no_pruning_scores(batch_size: int, num_queries: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Equal scores: with ties to the lower index, any k keeps the first k; the model keeps all for "none"."""
    return torch.zeros(batch_size, num_queries, device=device)


PRUNING_SEED = Setting("pruning_seed", 0, check_seed, "seed of the random selection")

register_pruning_method("l2", l2_scores, ("query_output",))
register_pruning_method("self_attention", self_attention_scores, ("self_attentions",))
register_pruning_method("position", position_scores, ("batch_size", "num_queries", "device"))
register_pruning_method("random", random_scores, ("batch_size", "num_queries", "seed", "device"), (PRUNING_SEED,))
register_pruning_method("none", no_pruning_scores, ("batch_size", "num_queries", "device"))
