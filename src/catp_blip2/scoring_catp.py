"""CATP, the paper's method: each image token ranks the queries by its cross-attention, and Borda points sum up.

Registers `pruning_method="catp"` with its settings (which layers vote, their weights, image-token weighting,
rank or soft votes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .scoring import (
    FLOAT32_MAX,
    Setting,
    as_int,
    is_real,
    one_of,
    register_pruning_method,
)


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


def layer_positions(layers: str | Sequence[int], num_layers: int) -> list[int]:
    """"first", "last", "all" or explicit positions -> positions among `num_layers` cross-attention layers."""
    if layers == "first":
        return [0]
    if layers == "last":
        return [num_layers - 1]
    if layers == "all":
        return list(range(num_layers))
    return [int(i) for i in layers]


VOTE_LAYER_NAMES = ("first", "last", "all")
IMAGE_TOKEN_WEIGHTINGS = ("none", "vit_attention")


def check_vote_layers(value: Any, config: Any) -> Any:
    n = config.num_cross_attention_layers
    if isinstance(value, str) and value in VOTE_LAYER_NAMES:
        return value
    if isinstance(value, (list, tuple)):
        positions = [as_int(i) for i in value]
        if positions and all(i is not None and 0 <= i < n for i in positions) and len(set(positions)) == len(positions):
            return positions
        raise ValueError(f"a non-empty list of distinct positions among the {n} cross-attention layers (0..{n - 1})")
    raise ValueError(f"one of {VOTE_LAYER_NAMES} or a list of positions in 0..{n - 1}")


def _check_vote_layer_weights(value: Any, config: Any) -> Any:
    if value is None:
        return None
    expected = len(config.voting_layer_positions())
    if (
        isinstance(value, (list, tuple))
        and len(value) == expected
        and all(is_real(w) and 0 <= w <= FLOAT32_MAX for w in value)
        and any(w > 0 for w in value)
    ):
        return [float(w) if not isinstance(w, int) else w for w in value]
    raise ValueError(
        f"None or {expected} non-negative finite numbers (at most {FLOAT32_MAX:.3g}), not all zero (one per voting "
        f"layer of vote_layers={config.vote_layers!r})"
    )


def layer_candidates(config: Any) -> list[Any]:
    """The paper's layer study, automated: every cross-attention layer alone, and all of them."""
    return ["all", *[[i] for i in range(config.num_cross_attention_layers)]]


VOTE_LAYERS = Setting(
    "vote_layers", "first", check_vote_layers,
    "which Q-Former cross-attention layers vote: 'first', 'last', 'all' or positions among them (0-based)",
    layer_candidates,
)
VOTE_LAYER_WEIGHTS = Setting(
    "vote_layer_weights", None, _check_vote_layer_weights, "one non-negative weight per voting layer (None: all 1)"
)
IMAGE_TOKEN_WEIGHTING = Setting(
    "image_token_weighting", "none", one_of(lambda: IMAGE_TOKEN_WEIGHTINGS),
    "'vit_attention' weights each image token's votes by the attention it receives in the ViT's last layer",
)
VOTE_AGGREGATION = Setting(
    "vote_aggregation", "rank", one_of(lambda: VOTE_AGGREGATIONS),
    "'rank': Borda points (the paper); 'soft': each voter's attention normalised over the queries",
)

register_pruning_method(
    "catp",
    catp_scores,
    ("cross_attentions", "layer_weights", "image_token_weights", "aggregation"),
    (VOTE_LAYERS, VOTE_LAYER_WEIGHTS, IMAGE_TOKEN_WEIGHTING, VOTE_AGGREGATION),
)
