"""Which query tokens the language model gets, once a method has scored them: fixed top-k, a per-sample budget of
score mass, and the merge that folds every pruned query output into a kept one.

Plain tensor functions that know nothing about models (as ToMe's `merge.py`); `modeling_pruning` calls them for every
method, so a method only ever writes a score. Shapes: B batch, T query tokens (frames x queries for video), k kept,
D hidden size. Where rows keep different numbers of tokens, index tensors are padded on the right with `PAD` and come
with `counts` (B,). This module ships as Hub remote code: it imports only torch.
"""

from __future__ import annotations

import torch

# The index of an empty slot in a padded (B, k_max) tensor of kept indices.
PAD = -1


def select_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores per row, ties to the lower index, in ascending (original) order.

    scores: (B, T) -> (B, k) int64.
    """
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"`k` must be in 1..{scores.shape[-1]}; got {k!r}.")
    # torch.topk does not promise which of equal values it returns; a stable sort does.
    best = scores.argsort(dim=-1, descending=True, stable=True)[:, :k]
    return best.sort(dim=-1).values


def gather_tokens(tokens: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """tokens (B, T, D), indices (B, k) -> (B, k, D). `PAD` slots give zeros."""
    valid = indices != PAD
    picked = tokens.gather(1, indices.clamp(min=0).unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return picked * valid.unsqueeze(-1).to(picked.dtype)  # x * 1 is exact: full rows are unchanged


def counts_for_score_mass(scores: torch.Tensor, mass: float, min_k: int, max_k: int) -> torch.Tensor:
    """(B, T) scores -> (B,) the fewest tokens per row whose share of the row's score mass reaches `mass`.

    Scores of any method may be negative or offset (Borda points start anywhere), so a row's mass is taken above its
    lowest score: the lowest-scored token adds nothing, and a row of equal scores needs only `min_k`. The counts are
    clamped to [min_k, max_k].
    """
    shifted = scores.float() - scores.float().min(dim=1, keepdim=True).values
    ordered = shifted.sort(dim=1, descending=True, stable=True).values
    reached = ordered.cumsum(dim=1) >= mass * shifted.sum(dim=1, keepdim=True)
    # The first position where the running share reaches the budget; rounding may leave it short of 1 at the end.
    needed = torch.where(reached.any(dim=1), reached.to(torch.uint8).argmax(dim=1) + 1, scores.shape[1])
    return needed.clamp(min=min_k, max=max_k)


def select_by_counts(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The `counts[b]` best tokens of every row, ascending, padded with `PAD` to the largest count.

    scores (B, T), counts (B,) -> (B, max(counts)) int64; the same ties as `select_top_k`.
    """
    k_max = int(counts.max())
    best = scores.argsort(dim=-1, descending=True, stable=True)[:, :k_max]
    slots = torch.arange(k_max, device=scores.device)
    empty = slots[None] >= counts[:, None].to(scores.device)
    # Empty slots sort last when they hold an index past every real one.
    kept = best.masked_fill(empty, scores.shape[1]).sort(dim=-1).values
    return kept.masked_fill(kept == scores.shape[1], PAD)


def merge_pruned_tokens(tokens: torch.Tensor, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold every pruned token into the kept token of its row it is most similar to; the kept count stays k.

    tokens (B, T, D) every query output; kept (B, k) ascending, `PAD` for empty slots. Similarity is the cosine of
    the outputs; a kept token becomes the size-weighted mean of itself and what it absorbed (ToMe's rule, each
    token of size 1), so its `size` is 1 + the number absorbed.

    Returns merged (B, k, D) (zeros in empty slots) and sizes (B, k) float (0 in empty slots; each row sums to T).
    """
    batch, total, _ = tokens.shape
    valid = kept != PAD
    kept_tokens = gather_tokens(tokens, kept)
    unit = torch.nn.functional.normalize(tokens.float(), dim=-1)
    similarity = unit @ torch.nn.functional.normalize(kept_tokens.float(), dim=-1).transpose(1, 2)  # (B, T, k)
    similarity = similarity.masked_fill(~valid[:, None, :], float("-inf"))
    target = similarity.argmax(dim=-1)  # (B, T)
    # A kept token stays in its own slot, even where another kept token is identical to it.
    slots = torch.arange(kept.shape[1], device=kept.device).expand_as(kept)
    own = torch.where(valid, kept, total)  # empty slots scatter into a spare column that is dropped
    slot_of = torch.full((batch, total + 1), -1, dtype=torch.long, device=kept.device).scatter(1, own, slots)[:, :total]
    target = torch.where(slot_of >= 0, slot_of, target)
    sums = torch.zeros_like(kept_tokens, dtype=tokens.dtype).scatter_add(
        1, target.unsqueeze(-1).expand_as(tokens), tokens
    )
    sizes = torch.zeros(kept.shape, dtype=tokens.dtype, device=tokens.device).scatter_add(
        1, target, torch.ones(target.shape, dtype=tokens.dtype, device=tokens.device)
    )
    return sums / sizes.clamp(min=1).unsqueeze(-1), sizes


__all__ = [
    "PAD",
    "counts_for_score_mass",
    "gather_tokens",
    "merge_pruned_tokens",
    "select_by_counts",
    "select_top_k",
]
