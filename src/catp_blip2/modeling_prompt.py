"""The language-model side of CATP: the prompt the language model sees, shortened by the pruned placeholders,
while lengths and returned sequences still follow the caller's own prompt. Plain tensor functions, shared by every
family through `modeling_pruning.CatpQFormerMixin`. This module ships as Hub remote code.
"""

from __future__ import annotations

from typing import Any

import torch


def gather_positions(tensor: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """tensor (B, L, ...), positions (B, L') -> (B, L', ...): the entries at `positions` of each row."""
    index = positions.to(tensor.device).view(*positions.shape, *([1] * (tensor.dim() - 2)))
    return tensor.gather(1, index.expand(*positions.shape, *tensor.shape[2:]))


def drop_pruned_placeholders(
    placeholder_mask: torch.Tensor,
    kept: torch.Tensor,
    num_queries: int,
    tensors: dict[str, torch.Tensor | None],
    placeholder: str = "image_token_id",
    counts: torch.Tensor | None = None,
    pad_values: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor | None]:
    """Remove, row by row, the placeholders whose query token was pruned.

    placeholder_mask (B, L) bool; kept (B, k), ascending, -1 in empty slots where rows keep `counts` (B,) < k
    tokens; each tensor (B, L, ...). Rows may carry all `num_queries` placeholders (as the processor makes them; the
    j-th stands for query token j) or exactly their own count (already compact). Returns the tensors as
    (B, L - (num_queries - k), ...), or unchanged. A row that kept fewer than k is left-padded to that length (as
    a decoder-only model's batch must be) with `pad_values[name]` (default 0: masked out, zero embeddings, no
    placeholder). `placeholder` names the token in errors.
    """
    k = kept.shape[1]
    if placeholder_mask.shape[0] != kept.shape[0]:
        raise ValueError(
            f"The text inputs have {placeholder_mask.shape[0]} rows but `pixel_values` has {kept.shape[0]} images;"
            " give one image per row."
        )
    if counts is None:
        counts = torch.full((kept.shape[0],), k, dtype=torch.long, device=kept.device)
    counts = counts.to(placeholder_mask.device)
    found = placeholder_mask.sum(dim=1)
    # The only host sync of this step: which of the two allowed layouts the rows have, and whether any row is short.
    compact, full, even = torch.stack([(found == counts).all(), (found == num_queries).all(), (counts == k).all()]).tolist()
    if compact:
        return tensors
    if not full:
        wanted = f"exactly num_kept_query_tokens={k}" if even else f"exactly their kept count ({counts.tolist()})"
        raise ValueError(
            f"Each row of `input_ids` must carry {num_queries} placeholder tokens ({placeholder}, as the model's "
            f"processor with num_query_tokens set makes them) or {wanted}; got {found.tolist()} per row."
        )
    # Empty slots scatter into a spare column that is dropped.
    kept_flags = torch.zeros(kept.shape[0], num_queries + 1, dtype=torch.bool, device=kept.device)
    kept_flags.scatter_(1, kept.masked_fill(kept < 0, num_queries), True)
    kept_flags = kept_flags[:, :num_queries].to(placeholder_mask.device)
    ordinal = (placeholder_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    keep = ~placeholder_mask | kept_flags.gather(1, ordinal)
    new_length = placeholder_mask.shape[1] - (num_queries - k)
    # Every row keeps at most new_length positions; a stable sort lists them first, in order. Gathering them avoids
    # boolean indexing, which waits for the device to learn its output size (once per tensor).
    positions = keep.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :new_length]
    if even:
        return {name: None if t is None else gather_positions(t, positions) for name, t in tensors.items()}
    # A short row's kept positions move right by what it lacks; the slots before them are padding.
    shift = (k - counts)[:, None]
    slots = torch.arange(new_length, device=positions.device)[None]
    positions = positions.gather(1, (slots - shift) % new_length)
    padding = slots < shift
    compacted: dict[str, torch.Tensor | None] = {}
    for name, tensor in tensors.items():
        if tensor is None:
            compacted[name] = None
            continue
        gathered = gather_positions(tensor, positions)
        where = padding.view(*padding.shape, *([1] * (tensor.dim() - 2))).to(gathered.device)
        value = (pad_values or {}).get(name, 0)
        compacted[name] = gathered.masked_fill(where, value)
    return compacted


def lengths_for_compact_prompt(
    generate_kwargs: dict[str, Any], model_generation_config: Any, prompt_length: int, removed: int
) -> dict[str, int]:
    """`max_length` / `min_length` as the language model must see them.

    They count the caller's prompt of `prompt_length` tokens (as in stock BLIP-2), wherever they are set: as
    keywords, in a `generation_config` argument or in the language model's own (`model_generation_config`). The language
    model sees `removed` fewer prompt tokens, so each set value drops by that much. Unset values stay unset
    (transformers then generates its default number of new tokens, as for stock BLIP-2).
    """
    given = generate_kwargs.get("generation_config")

    def setting(name: str) -> Any:
        value = generate_kwargs.get(name)
        for config in (given, model_generation_config):
            if value is None and config is not None:
                value = getattr(config, name, None)
        return value

    adjusted: dict[str, int] = {}
    for name in ("max_length", "min_length"):
        value = setting(name)
        # transformers lets max_new_tokens / min_new_tokens win over these, counting new tokens only.
        if value is None or setting(name.replace("_length", "_new_tokens")) is not None:
            continue
        if name == "min_length" and value <= 0:
            continue
        if name == "max_length" and value <= prompt_length:
            raise ValueError(
                f"`max_length` ({value}) counts the prompt, which has {prompt_length} tokens here (image "
                f"placeholders included); give a `max_length` above {prompt_length}, or `max_new_tokens`."
            )
        adjusted[name] = max(0, value - removed)
    return adjusted


def with_caller_prefix(outputs: Any, input_ids: torch.Tensor, compact_length: int) -> Any:
    """Sequences (B * n, compact_length + new) -> (B * n, L + new): the caller's prompt, then the new tokens."""
    sequences = outputs if isinstance(outputs, torch.Tensor) else outputs.sequences
    per_input = sequences.shape[0] // input_ids.shape[0]
    prefix = input_ids.to(sequences.device).repeat_interleave(per_input, dim=0)
    sequences = torch.cat([prefix, sequences[:, compact_length:]], dim=1)
    if isinstance(outputs, torch.Tensor):
        return sequences
    outputs.sequences = sequences
    return outputs


__all__ = ["drop_pruned_placeholders", "gather_positions", "lengths_for_compact_prompt", "with_caller_prefix"]
