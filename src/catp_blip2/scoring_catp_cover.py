"""catp_cover: CATP's voters, counted as a coverage problem (each voter is served by its best kept query).

Registers `pruning_method="catp_cover"`; its defaults come from `catp-blip2 calibrate` on the embedded calibration
split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .scoring import Setting, number_in, one_of, register_pruning_method
from .scoring_catp import (
    IMAGE_TOKEN_WEIGHTING,
    borda_points,
    check_vote_layers,
    layer_candidates,
    layer_positions,
    soft_votes,
)

COVER_VOTERS = ("all", "patches", "decisive", "decisive_patches")
COVER_SELECTIONS = ("cover", "independent")


def voter_weights(probs: torch.Tensor, voters: str, image_token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """How much each voter's ballot counts, for `catp_cover`.

    Args:
        probs: (B, H, Q, N) cross-attention probabilities; voter (b, h, i) is image token i seen by head h.
        voters: "all" (every voter 1, the paper); "patches" (the CLS token, position 0, does not vote: it is no
            part of the image); "decisive" (weight 1 - entropy / log Q of the voter's attention over the queries: a
            background token that spreads its attention evenly has little to say); "decisive_patches" (both).
        image_token_weights: (B, N) or None, multiplied in.
    Returns:
        (B, H, N) non-negative weights.
    """
    batch, heads, queries, tokens = probs.shape
    weights = torch.ones(batch, heads, tokens, device=probs.device, dtype=torch.float32)
    if voters.startswith("decisive"):
        share = soft_votes(probs.float())
        entropy = -(share * share.clamp_min(1e-12).log()).sum(dim=2)
        weights = (1 - entropy / math.log(queries)).clamp_min(0)
    if voters.endswith("patches"):
        weights[..., 0] = 0
    if image_token_weights is not None:
        weights = weights * image_token_weights.float()[:, None, :]
    return weights


def _greedy_order(
    base: torch.Tensor,
    tokens: torch.Tensor,
    redundancy: float = 0.0,
    utility: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores (B, Q) that rank queries in the order a greedy selection picks them: Q for the first, 1 for the last.

    The gain of adding a query is its `base` score (B, Q), or with `utility` (B, Q, V) and voter `weight` (B, V)
    what it adds to every voter's best utility among the queries already picked, sum_v w_v max(0, u[q, v] -
    best_v). `redundancy` charges a query its highest cosine similarity to a picked one (`tokens` (B, Q, D)),
    against gains scaled to a largest of 1. Ties go to the better `base`. A greedy order is the same whatever k,
    so the first k picks are the k kept and one scoring serves every k.
    """
    batch, queries = base.shape
    rows = torch.arange(batch, device=base.device)
    chosen = torch.zeros(batch, queries, dtype=torch.bool, device=base.device)
    scores = torch.zeros(batch, queries, device=base.device)
    by_base = base.argsort(dim=-1, descending=True, stable=True)
    unit = torch.nn.functional.normalize(tokens.float(), dim=-1)
    similarity = unit @ unit.transpose(1, 2)  # (B, Q, Q)
    closest = torch.zeros(batch, queries, device=base.device)
    best = None if utility is None else torch.zeros_like(weight)
    for step in range(queries):
        if utility is None:
            gain = base.clone()
        else:
            gain = torch.einsum("bqv,bv->bq", (utility - best[:, None]).clamp_min(0), weight)
        if redundancy:
            top = gain.masked_fill(chosen, float("-inf")).amax(dim=-1, keepdim=True).clamp_min(1e-12)
            gain = gain / top - redundancy * closest
        gain = gain.masked_fill(chosen, float("-inf"))
        pick = by_base[rows, gain.gather(1, by_base).argmax(dim=-1)]
        scores[rows, pick] = float(queries - step)
        chosen[rows, pick] = True
        closest = torch.maximum(closest, similarity[rows, pick].clamp_min(0))
        if utility is not None:
            best = torch.maximum(best, utility[rows, pick])
    return scores


def catp_cover_scores(
    all_cross_attentions: Sequence[torch.Tensor],
    query_output: torch.Tensor,
    image_token_weights: torch.Tensor | None = None,
    cover_layers: str | Sequence[int] = "last",
    cover_voters: str = "decisive_patches",
    cover_selection: str = "cover",
    cover_power: float = 1.0,
    cover_redundancy: float = 0.5,
) -> torch.Tensor:
    """CATP refined: Borda ballots of the image tokens, voters weighted, a selection that covers the image.

    Every voter v (a head's view of one image token, in every layer of `cover_layers`) gives query q the utility
    u[q, v] = (Borda points / (Q - 1)) ** cover_power, in [0, 1], weighted by `voter_weights`. With
    `cover_selection="independent"` a query scores sum_v w_v u[q, v], plain CATP with weighted voters. With "cover"
    queries are chosen greedily by how much they add to every voter's best kept utility, sum_v w_v
    max(0, u[q, v] - best_v): once the background's voters have a query they like, more background queries add
    little and the queries the object's tokens favour come in (proportional representation, not a plurality).
    `cover_redundancy` > 0 also charges a query for its cosine similarity to the closest Q-Former output kept.

    Args:
        all_cross_attentions: every cross-attention layer's (B, H, Q, N) probabilities, in layer order.
        query_output: (B, Q, D) Q-Former output tokens (for `cover_redundancy`).
        image_token_weights: (B, N) or None (`image_token_weighting`).
    Returns:
        (B, Q) scores; greedy selections score Q for the first pick down to 1, so the k best are the first k picks.
    """
    queries = query_output.shape[1]
    utilities, weights = [], []
    for position in layer_positions(cover_layers, len(all_cross_attentions)):
        probs = all_cross_attentions[position].float()
        points = borda_points(probs) / max(queries - 1, 1)
        utilities.append((points**cover_power).permute(0, 2, 1, 3).flatten(2))  # (B, Q, H * N)
        weights.append(voter_weights(probs, cover_voters, image_token_weights).flatten(1))  # (B, H * N)
    utility, weight = torch.cat(utilities, dim=2), torch.cat(weights, dim=1)
    base = torch.einsum("bqv,bv->bq", utility, weight)
    if cover_selection == "independent":
        return _greedy_order(base, query_output, cover_redundancy) if cover_redundancy else base
    return _greedy_order(base, query_output, cover_redundancy, utility, weight)


# catp_cover's defaults are the winner of `catp-blip2 calibrate` on the embedded task's calibration split
# (docs/calibration.md, benchmarks/embedded-calibration/): the last cross-attention layer ([1] of the embedded model's 2), decisive patch
# voters, coverage selection, power 1, redundancy 0.5. Calibrate again for another model.
COVER_LAYERS = Setting(
    "cover_layers", "last", check_vote_layers,
    "catp_cover: the cross-attention layers whose image tokens vote ('first', 'last', 'all' or positions)",
    layer_candidates,
)
COVER_VOTERS_SETTING = Setting(
    "cover_voters", "decisive_patches", one_of(lambda: COVER_VOTERS),
    "catp_cover: who votes: 'all' image tokens, 'patches' (not CLS), 'decisive' (weighted by 1 - normalised "
    "entropy of their attention over the queries) or 'decisive_patches'",
    lambda config: COVER_VOTERS,
)
COVER_SELECTION = Setting(
    "cover_selection", "cover", one_of(lambda: COVER_SELECTIONS),
    "catp_cover: 'cover' picks queries greedily by what they add to every voter's best kept query; "
    "'independent' keeps the k best sums",
    lambda config: COVER_SELECTIONS,
)
COVER_POWER = Setting(
    "cover_power", 1.0, number_in(0.0, 64.0, low_open=True),
    "catp_cover: a voter's utility is (Borda points / (Q - 1)) ** this; larger values count only its favourites",
    lambda config: (1.0, 4.0),
)
COVER_REDUNDANCY = Setting(
    "cover_redundancy", 0.5, number_in(0.0, 10.0),
    "catp_cover: penalty on a query's cosine similarity to the closest kept Q-Former output (0: none)",
    lambda config: (0.0, 0.5),
)

register_pruning_method(
    "catp_cover",
    catp_cover_scores,
    ("all_cross_attentions", "query_output", "image_token_weights",
     "cover_layers", "cover_voters", "cover_selection", "cover_power", "cover_redundancy"),
    (IMAGE_TOKEN_WEIGHTING, COVER_LAYERS, COVER_VOTERS_SETTING, COVER_SELECTION, COVER_POWER, COVER_REDUNDANCY),
)
