"""Query-token scoring for pruning: one pure function per method over plain tensors, a registry, one selection step.

Shapes: B batch, Q query tokens, N image tokens, H heads, D hidden size, L voting layers.
Every score function returns a float tensor of shape (B, Q); higher means "keep".
Adding a method = one function here + one `PRUNING_METHODS` entry; the config accepts every registered name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch


def borda_points(probs: torch.Tensor) -> torch.Tensor:
    """Borda points of each query from each voter.

    Args:
        probs: (B, H, Q, N) attention probabilities; every (b, h, i) column is one voter ranking the Q queries.
    Returns:
        (B, H, Q, N) float points: the query a voter attends most gets Q-1, the least 0. Among equal
        probabilities the lower query index ranks higher.
    """
    # Stable descending sort puts equal values in index order, so the lower index gets the better rank.
    order = probs.argsort(dim=2, descending=True, stable=True)
    # The query at sorted position j earns Q-1-j points: one scatter instead of a second argsort (the inverse
    # permutation), on the device, with no host round trip.
    num_queries = probs.shape[2]
    dtype = probs.dtype if probs.is_floating_point() else torch.float32
    points = torch.arange(num_queries - 1, -1, -1, device=probs.device, dtype=dtype).view(1, 1, num_queries, 1)
    return torch.empty(order.shape, device=probs.device, dtype=dtype).scatter_(2, order, points.expand(order.shape))


def soft_votes(probs: torch.Tensor) -> torch.Tensor:
    """Each voter's one vote split over the queries in proportion to its attention.

    Args:
        probs: (B, H, Q, N) attention probabilities.
    Returns:
        (B, H, Q, N), summing to 1 over the query axis (dim 2).
    """
    # Raw probabilities sum to 1 over image tokens for every query, so their plain sums tie all queries:
    # normalising over the query axis is what makes them a vote.
    return probs / probs.sum(dim=2, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


VOTE_AGGREGATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"rank": borda_points, "soft": soft_votes}


def catp_scores(
    cross_attentions: Sequence[torch.Tensor],
    layer_weights: Sequence[float] | torch.Tensor | None = None,
    image_token_weights: torch.Tensor | None = None,
    aggregation: str = "rank",
) -> torch.Tensor:
    """CATP: score[b, q] = sum_l w_l * sum_{h, i} v[b, i] * votes_l[b, h, q, i].

    Args:
        cross_attentions: L tensors (B, H, Q, N), the Q-Former cross-attention probabilities of the voting layers.
        layer_weights: L weights w_l; `None` weighs every layer 1.
        image_token_weights: (B, N) weights v of each image token's votes; `None` weighs every token 1.
        aggregation: `"rank"` (Borda points, the paper) or `"soft"` (see `soft_votes`).
    Returns:
        (B, Q) float32 scores.
    """
    if aggregation not in VOTE_AGGREGATIONS:
        raise ValueError(f"`aggregation` must be one of {tuple(VOTE_AGGREGATIONS)}; got {aggregation!r}.")
    if len(cross_attentions) == 0:
        raise ValueError("`cross_attentions` must hold at least one layer's probabilities; got none.")
    if layer_weights is not None and len(layer_weights) != len(cross_attentions):
        raise ValueError(
            f"`layer_weights` must have one weight per voting layer ({len(cross_attentions)}); got {len(layer_weights)}."
        )
    votes_of = VOTE_AGGREGATIONS[aggregation]
    total = None
    for index, probs in enumerate(cross_attentions):
        votes = votes_of(probs.float())
        if image_token_weights is not None:
            layer_score = torch.einsum("bhqn,bn->bq", votes, image_token_weights.to(votes))
        else:
            layer_score = votes.sum(dim=(1, 3))
        if layer_weights is not None:
            weight = layer_weights[index]
            # A tensor weight stays a tensor: float() of a device tensor would wait for the device.
            layer_score = layer_score * (weight.to(layer_score) if torch.is_tensor(weight) else float(weight))
        total = layer_score if total is None else total + layer_score
    return total


def vit_attention_image_weights(vit_attention: torch.Tensor) -> torch.Tensor:
    """Image-token weights from the vision encoder's last self-attention.

    Args:
        vit_attention: (B, H, N, N) probabilities, [b, h, attending, attended].
    Returns:
        (B, N): the attention each token receives, summed over heads and attending tokens, normalised to sum 1.
    """
    received = vit_attention.float().sum(dim=(1, 2))
    return received / received.sum(dim=-1, keepdim=True)


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


@dataclass(frozen=True)
class PruningMethod:
    """A score function and the names of the inputs the model must supply to it as keyword arguments.

    Input names the model knows: `cross_attentions`, `layer_weights`, `image_token_weights`, `aggregation`,
    `self_attentions`, `query_output`, `batch_size`, `num_queries`, `seed`, `device`.
    """

    score: Callable[..., torch.Tensor]
    inputs: tuple[str, ...]


PRUNING_METHODS: dict[str, PruningMethod] = {
    "catp": PruningMethod(
        catp_scores, ("cross_attentions", "layer_weights", "image_token_weights", "aggregation")
    ),
    "l2": PruningMethod(l2_scores, ("query_output",)),
    "self_attention": PruningMethod(self_attention_scores, ("self_attentions",)),
    "position": PruningMethod(position_scores, ("batch_size", "num_queries", "device")),
    "random": PruningMethod(random_scores, ("batch_size", "num_queries", "seed", "device")),
    "none": PruningMethod(no_pruning_scores, ("batch_size", "num_queries", "device")),
}


def select_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores per row, ties to the lower index, in ascending (original) order.

    scores: (B, Q) -> (B, k) int64.
    """
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"`k` must be in 1..{scores.shape[-1]}; got {k!r}.")
    # torch.topk does not promise which of equal values it returns; a stable sort does.
    best = scores.argsort(dim=-1, descending=True, stable=True)[:, :k]
    return best.sort(dim=-1).values


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tokens (B, Q, D), indices (B, k) -> (B, k, D)."""
    return tokens.gather(1, indices.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


__all__ = [
    "PRUNING_METHODS",
    "PruningMethod",
    "borda_points",
    "catp_scores",
    "gather_tokens",
    "l2_scores",
    "no_pruning_scores",
    "position_scores",
    "random_scores",
    "select_top_k",
    "self_attention_scores",
    "soft_votes",
    "vit_attention_image_weights",
]
