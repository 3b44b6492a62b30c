"""Token merging inside a ViT (ToMe: Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023), on plain tensors.

After a layer's self-attention, `bipartite_soft_matching` pairs each of the r tokens most similar to another token
(cosine similarity of the attention keys, averaged over heads) with that token; `merge_tokens` replaces each pair
by its size-weighted mean, whose size is the sum of both. A token's size is how many input tokens (patches, CLS)
it stands for, so the sizes of a row always sum to the input token count. `size_bias` is what proportional
attention adds to the logits over merged tokens (log size), so a token standing for s patches draws the attention
s identical patches would.

Shapes: B batch, T tokens before the merge, C channels, r tokens merged (T - r after). Token 0 (CLS) is never
merged and stays first. Nothing here knows about models: `modeling_vision` runs it inside the vision encoders.
This module ships as Hub remote code: it imports only torch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Matching(NamedTuple):
    """Which tokens merge where, for one layer (see `bipartite_soft_matching`).

    kept (B, T_a - r): the tokens of set A (even positions, CLS among them) that stay, as positions in A, ascending.
    merged (B, r): the tokens of A that merge, as positions in A. into (B, r): the token of set B (odd positions,
    as positions in B) that each of `merged` joins.
    """

    kept: torch.Tensor
    merged: torch.Tensor
    into: torch.Tensor


def merge_count(tokens: int, r: int) -> int:
    """How many tokens one layer merges when asked for r with `tokens` tokens (CLS included): at most every
    mergeable token of set A, (tokens - 1) // 2."""
    return max(0, min(r, (tokens - 1) // 2))


def tokens_left(tokens: int, r: int, layers: int) -> int:
    """The token count after `layers` layers each merging r (`merge_count` per layer), CLS included."""
    for _ in range(layers):
        tokens -= merge_count(tokens, r)
    return tokens


def bipartite_soft_matching(metric: torch.Tensor, r: int) -> Matching:
    """ToMe's bipartite soft matching.

    metric (B, T, C): what similarity is measured on (the attention keys, mean over heads). Tokens alternate into
    set A (positions 0, 2, 4, ...) and set B (1, 3, ...); each A token's best match is the B token of highest
    cosine similarity, and the r A tokens with the best matches merge into them (CLS, position 0, never does).
    Ties keep the lower position. r must be at most `merge_count(T, r)`.
    """
    metric = metric.float()
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    a, b = metric[:, ::2], metric[:, 1::2]
    similarity = a @ b.transpose(-1, -2)  # (B, T_a, T_b)
    similarity[:, 0] = float("-inf")  # CLS never merges
    best, best_b = similarity.max(dim=-1)  # (B, T_a)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    merged = order[:, :r]
    kept = order[:, r:].sort(dim=-1).values  # original order, so CLS stays first
    return Matching(kept=kept, merged=merged, into=best_b.gather(-1, merged))


def _pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, C), index (B, n) -> (B, n, C)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def merge_sum(x: torch.Tensor, matching: Matching) -> torch.Tensor:
    """x (B, T, C) -> (B, T - r, C): each merged A token added into its B token; kept A tokens first (their order),
    then every B token."""
    a, b = x[:, ::2], x[:, 1::2]
    index = matching.into[..., None].expand(-1, -1, x.shape[-1])
    b = b.scatter_add(1, index, _pick(a, matching.merged))
    return torch.cat([_pick(a, matching.kept), b], dim=1)


def merge_tokens(x: torch.Tensor, sizes: torch.Tensor, matching: Matching) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted mean merge. x (B, T, C), sizes (B, T) -> x (B, T - r, C) in x's dtype, sizes (B, T - r) float32.

    A merged token is the mean of the tokens it absorbs weighted by their sizes, and its size is their sum (the
    sum over a row is unchanged). Computed in float32."""
    weights = sizes.float()[..., None]
    total = merge_sum(weights, matching)
    merged = merge_sum(x.float() * weights, matching) / total
    return merged.to(x.dtype), total[..., 0]


def size_bias(sizes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """sizes (B, T) -> (B, 1, 1, T) additive attention bias log(size): proportional attention over merged tokens,
    broadcast over heads and attending rows. All sizes 1 gives zeros (the unmerged attention)."""
    return sizes.float().log().to(dtype)[:, None, None, :]


def received_attention(probs: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    """probs (B, H, T, T) [b, h, attending, attended], sizes (B, T) or None -> (B, T): the attention each token
    receives, summed over heads and attending tokens, an attending token counted by its size."""
    probs = probs.float()
    if sizes is None:
        return probs.sum(dim=(1, 2))
    return torch.einsum("bhjt,bj->bt", probs, sizes.float())


__all__ = [
    "Matching",
    "bipartite_soft_matching",
    "merge_count",
    "merge_sum",
    "merge_tokens",
    "received_attention",
    "size_bias",
    "tokens_left",
]
