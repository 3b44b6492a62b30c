"""Query-token scoring for pruning: one pure function per method over plain tensors, a registry, one selection step.

Shapes: B batch, Q query tokens, N image tokens, H heads, D hidden size, L voting layers.
Every score function returns a float tensor of shape (B, Q); higher means "keep".
Adding a method = one score function + one `register_pruning_method` call (here, or at run time from any module);
its settings are declared in that call, and `CatpConfig`, the model and `catp-blip2 eval` accept it at once.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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


def layer_positions(layers: str | Sequence[int], num_layers: int) -> list[int]:
    """"first", "last", "all" or explicit positions -> positions among `num_layers` cross-attention layers."""
    if layers == "first":
        return [0]
    if layers == "last":
        return [num_layers - 1]
    if layers == "all":
        return list(range(num_layers))
    return [int(i) for i in layers]


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


def no_pruning_scores(batch_size: int, num_queries: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Equal scores: with ties to the lower index, any k keeps the first k; the model keeps all for "none"."""
    return torch.zeros(batch_size, num_queries, device=device)


# ---- settings: what a method can be told, each declared once with its default and its check -------------------


def as_int(value: Any) -> int | None:
    """`value` as a Python int when it is an integral number (int, numpy integer, 0-dim integer tensor), else None."""
    if isinstance(value, bool) or (torch.is_tensor(value) and value.dtype == torch.bool):
        return None
    if torch.is_tensor(value):
        return int(value.item()) if value.dim() == 0 and not value.is_floating_point() and not value.is_complex() else None
    return int(value) if isinstance(value, numbers.Integral) else None


# Scores are float32: a setting beyond this would be infinite there.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Setting:
    """A pruning setting that a method takes, stored on `CatpConfig` under `name`.

    `check(value, config)` returns the value as it is stored (normalised: a tuple becomes a list) or raises a
    ValueError whose message says what is allowed; `config` is the `CatpConfig` being checked, for limits that
    depend on the model's shape or on settings checked before (settings are checked in registration order).
    """

    name: str
    default: Any
    check: Callable[[Any, Any], Any]
    help: str = ""
    # The values `catp-blip2 calibrate` tries when told nothing else, given the config (None: it does not search it).
    candidates: Callable[[Any], Sequence[Any]] | None = None


VOTE_LAYER_NAMES = ("first", "last", "all")
IMAGE_TOKEN_WEIGHTINGS = ("none", "vit_attention")


def _check_vote_layers(value: Any, config: Any) -> Any:
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
        and all(_is_real(w) and 0 <= w <= FLOAT32_MAX for w in value)
        and any(w > 0 for w in value)
    ):
        return [float(w) if not isinstance(w, int) else w for w in value]
    raise ValueError(
        f"None or {expected} non-negative finite numbers (at most {FLOAT32_MAX:.3g}), not all zero (one per voting "
        f"layer of vote_layers={config.vote_layers!r})"
    )


def _one_of(choices: Callable[[], Sequence[str]]) -> Callable[[Any, Any], Any]:
    """A check accepting the names `choices()` gives at check time (a registry may grow)."""

    def check(value: Any, config: Any) -> Any:
        allowed = tuple(choices())
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"one of {allowed}")
        return value

    return check


# What torch.Generator.manual_seed takes.
SEED_RANGE = (0, 2**64 - 1)


def _check_seed(value: Any, config: Any) -> Any:
    seed = as_int(value)
    if seed is None or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"an integer in {SEED_RANGE[0]}..2**64-1")
    return seed


def _number_in(low: float, high: float, low_open: bool = False) -> Callable[[Any, Any], Any]:
    def check(value: Any, config: Any) -> Any:
        if _is_real(value) and (low < value if low_open else low <= value) and value <= high:
            return value
        raise ValueError(f"a finite number in {'(' if low_open else '['}{low}, {high}]")

    return check


def _layer_candidates(config: Any) -> list[Any]:
    """The paper's layer study, automated: every cross-attention layer alone, and all of them."""
    return ["all", *[[i] for i in range(config.num_cross_attention_layers)]]


VOTE_LAYERS = Setting(
    "vote_layers", "first", _check_vote_layers,
    "which Q-Former cross-attention layers vote: 'first', 'last', 'all' or positions among them (0-based)",
    _layer_candidates,
)
VOTE_LAYER_WEIGHTS = Setting(
    "vote_layer_weights", None, _check_vote_layer_weights, "one non-negative weight per voting layer (None: all 1)"
)
IMAGE_TOKEN_WEIGHTING = Setting(
    "image_token_weighting", "none", _one_of(lambda: IMAGE_TOKEN_WEIGHTINGS),
    "'vit_attention' weights each image token's votes by the attention it receives in the ViT's last layer",
)
VOTE_AGGREGATION = Setting(
    "vote_aggregation", "rank", _one_of(lambda: VOTE_AGGREGATIONS),
    "'rank': Borda points (the paper); 'soft': each voter's attention normalised over the queries",
)
PRUNING_SEED = Setting("pruning_seed", 0, _check_seed, "seed of the random selection")
# catp_cover's defaults are the winner of `catp-blip2 calibrate` on the embedded task's calibration split (README,
# benchmarks/embedded-calibration/): the last cross-attention layer ([1] of the embedded model's 2), decisive patch
# voters, coverage selection, power 1, redundancy 0.5. Calibrate again for another model.
COVER_LAYERS = Setting(
    "cover_layers", "last", _check_vote_layers,
    "catp_cover: the cross-attention layers whose image tokens vote ('first', 'last', 'all' or positions)",
    _layer_candidates,
)
COVER_VOTERS_SETTING = Setting(
    "cover_voters", "decisive_patches", _one_of(lambda: COVER_VOTERS),
    "catp_cover: who votes: 'all' image tokens, 'patches' (not CLS), 'decisive' (weighted by 1 - normalised "
    "entropy of their attention over the queries) or 'decisive_patches'",
    lambda config: COVER_VOTERS,
)
COVER_SELECTION = Setting(
    "cover_selection", "cover", _one_of(lambda: COVER_SELECTIONS),
    "catp_cover: 'cover' picks queries greedily by what they add to every voter's best kept query; "
    "'independent' keeps the k best sums",
    lambda config: COVER_SELECTIONS,
)
COVER_POWER = Setting(
    "cover_power", 1.0, _number_in(0.0, 64.0, low_open=True),
    "catp_cover: a voter's utility is (Borda points / (Q - 1)) ** this; larger values count only its favourites",
    lambda config: (1.0, 4.0),
)
COVER_REDUNDANCY = Setting(
    "cover_redundancy", 0.5, _number_in(0.0, 10.0),
    "catp_cover: penalty on a query's cosine similarity to the closest kept Q-Former output (0: none)",
    lambda config: (0.0, 0.5),
)


# ---- the registry ------------------------------------------------------------------------------------------------

# What the model computes and hands to a score function, by name. A method may also take its own settings by name.
MODEL_INPUTS = (
    "cross_attentions",  # L x (B, H, Q, N): the voting layers' cross-attention probabilities
    "all_cross_attentions",  # every cross-attention layer's (B, H, Q, N), for a method that picks its own layers
    "layer_weights",  # L floats, from vote_layers / vote_layer_weights
    "image_token_weights",  # (B, N) or None, from image_token_weighting
    "aggregation",  # vote_aggregation
    "self_attentions",  # one (B, H, Q, Q) per Q-Former layer
    "query_output",  # (B, Q, D) Q-Former output
    "batch_size",
    "num_queries",
    "seed",  # pruning_seed
    "device",
)


@dataclass(frozen=True)
class PruningMethod:
    """A score function, the inputs the model must pass it (by keyword), and the settings it takes.

    `inputs` name entries of `MODEL_INPUTS` or of this method's own `settings`.
    """

    score: Callable[..., torch.Tensor]
    inputs: tuple[str, ...]
    settings: tuple[Setting, ...] = ()


PRUNING_METHODS: dict[str, PruningMethod] = {}
# Settings every config has whatever the method: not for a method to declare.
CORE_SETTINGS = ("pruning_method", "num_kept_query_tokens")


def method_settings() -> dict[str, Setting]:
    """Every setting of every registered method, by name, in registration order (read live)."""
    found: dict[str, Setting] = {}
    for method in PRUNING_METHODS.values():
        for setting in method.settings:
            found.setdefault(setting.name, setting)
    return found


def register_pruning_method(
    name: str,
    score: Callable[..., torch.Tensor],
    inputs: Sequence[str],
    settings: Sequence[Setting] = (),
    overwrite: bool = False,
) -> PruningMethod:
    """Add a method to `PRUNING_METHODS`; `CatpConfig`, the model and `catp-blip2 eval --methods` accept it at once.

    Args:
        name: the `pruning_method` value that selects it.
        score: returns (B, Q) float scores, higher kept first; called with the keyword arguments named in `inputs`.
        inputs: names from `MODEL_INPUTS` or of `settings`.
        settings: the method's own `Setting`s (a name another method declares must be that same `Setting`).
        overwrite: replace a method registered under `name`.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"`name` must be a Python identifier (a `pruning_method` value); got {name!r}.")
    if name in PRUNING_METHODS and not overwrite:
        raise ValueError(f"`name` {name!r} is already a pruning method; pass overwrite=True to replace it.")
    known = method_settings()
    for setting in settings:
        if setting.name in CORE_SETTINGS or setting.name in MODEL_INPUTS:
            raise ValueError(f"`settings`: {setting.name!r} is reserved; pick another setting name.")
        if setting.name in known and known[setting.name] is not setting:
            raise ValueError(
                f"`settings`: {setting.name!r} is already declared by another method; reuse that `Setting` or rename."
            )
    allowed = set(MODEL_INPUTS) | {s.name for s in settings}
    unknown = [i for i in inputs if i not in allowed]
    if unknown:
        raise ValueError(f"`inputs` {unknown} are neither model inputs {list(MODEL_INPUTS)} nor the method's settings.")
    method = PruningMethod(score, tuple(inputs), tuple(settings))
    PRUNING_METHODS[name] = method
    return method


register_pruning_method(
    "catp",
    catp_scores,
    ("cross_attentions", "layer_weights", "image_token_weights", "aggregation"),
    (VOTE_LAYERS, VOTE_LAYER_WEIGHTS, IMAGE_TOKEN_WEIGHTING, VOTE_AGGREGATION),
)
register_pruning_method(
    "catp_cover",
    catp_cover_scores,
    ("all_cross_attentions", "query_output", "image_token_weights",
     "cover_layers", "cover_voters", "cover_selection", "cover_power", "cover_redundancy"),
    (IMAGE_TOKEN_WEIGHTING, COVER_LAYERS, COVER_VOTERS_SETTING, COVER_SELECTION, COVER_POWER, COVER_REDUNDANCY),
)
register_pruning_method("l2", l2_scores, ("query_output",))
register_pruning_method("self_attention", self_attention_scores, ("self_attentions",))
register_pruning_method("position", position_scores, ("batch_size", "num_queries", "device"))
register_pruning_method("random", random_scores, ("batch_size", "num_queries", "seed", "device"), (PRUNING_SEED,))
register_pruning_method("none", no_pruning_scores, ("batch_size", "num_queries", "device"))


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
    "CORE_SETTINGS",
    "MODEL_INPUTS",
    "PRUNING_METHODS",
    "PruningMethod",
    "Setting",
    "method_settings",
    "register_pruning_method",
    "borda_points",
    "catp_cover_scores",
    "catp_scores",
    "layer_positions",
    "voter_weights",
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
