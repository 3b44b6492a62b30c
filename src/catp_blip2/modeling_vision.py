"""The vision encoder with ToMe token merging (`vision_merge_per_layer` = r > 0), for the ViTs of BLIP-2,
InstructBLIP and InstructBLIP-Video (the same layers: `qkv`, `projection`, `layer_norm1`, `mlp`, `layer_norm2`).

Each layer runs as stock, except that its self-attention adds log(size) to the logits over merged tokens
(proportional attention), and that between the attention and the MLP the r most similar tokens merge
(`vision_merge`). With r = 0 nothing here runs: the model calls its stock vision encoder. The Q-Former's
cross-attention gets the same log(size) bias (`modeling_qformer.proportional_cross_attention`).

This module ships as Hub remote code: it imports only torch, transformers and its sibling core modules.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .vision_merge import bipartite_soft_matching, merge_count, merge_sum, merge_tokens, received_attention, size_bias

# Attention implementations that take an additive bias, as proportional attention needs.
MERGE_ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


class VisionPass(NamedTuple):
    """outputs: the vision encoder's `BaseModelOutputWithPooling` (last_hidden_state (B, T', D)); sizes (B, T'):
    how many input tokens each output token stands for (None: unmerged, all 1); received (B, T') or None: the
    attention each output token received in the last layer (see `vision_merge.received_attention`), when asked."""

    outputs: BaseModelOutputWithPooling
    sizes: torch.Tensor | None
    received: torch.Tensor | None


def _attention(module: nn.Module, hidden: torch.Tensor, bias: torch.Tensor | None, implementation: str):
    """A ViT self-attention (`Blip2Attention` and its copies) with an additive bias (B, 1, 1, T) or None.

    hidden (B, T, D) -> output (B, T, D), keys (B, H, T, D / H), probabilities (B, H, T, T) or None (sdpa)."""
    batch, tokens, dim = hidden.shape
    qkv = module.qkv(hidden).reshape(batch, tokens, 3, module.num_heads, dim // module.num_heads).permute(2, 0, 3, 1, 4)
    query, key, value = qkv[0], qkv[1], qkv[2]
    dropout = module.attention_dropout if module.training else 0.0
    probs = None
    if implementation == "eager":
        logits = query @ key.transpose(-1, -2) * module.scale
        probs = (logits if bias is None else logits + bias).softmax(dim=-1)
        out = nn.functional.dropout(probs, p=dropout, training=module.training) @ value
    else:
        out = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout, scale=module.scale)
    out = module.projection(out.transpose(1, 2).reshape(batch, tokens, dim))
    return out, key, probs


def _probabilities(module: nn.Module, hidden: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The attention probabilities of `_attention`, recomputed without dropout (for the votes' image weights)."""
    batch, tokens, dim = hidden.shape
    qkv = module.qkv(hidden).reshape(batch, tokens, 3, module.num_heads, dim // module.num_heads).permute(2, 0, 3, 1, 4)
    logits = qkv[0] @ qkv[1].transpose(-1, -2) * module.scale
    return (logits if bias is None else logits + bias).softmax(dim=-1)


def merged_vision_forward(
    vision_model: nn.Module,
    pixel_values: torch.Tensor,
    r: int,
    interpolate_pos_encoding: bool = False,
    record_received: bool = False,
) -> VisionPass:
    """The vision encoder (`Blip2VisionModel` or a copy) on pixel_values (B, C, H, W), merging r tokens per layer.

    record_received: also return the attention each output token received in the last layer (attending tokens
    counted by their size, merged tokens summing their parts), for `image_token_weighting="vit_attention"`.
    Hidden states and attentions of the layers are not returned.
    """
    implementation = vision_model.config._attn_implementation
    if implementation not in MERGE_ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"`vision_merge_per_layer` > 0 needs the vision encoder's attention implementation to be one of "
            f"{MERGE_ATTENTION_IMPLEMENTATIONS} (proportional attention adds a bias); got {implementation!r}."
        )
    hidden = vision_model.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
    sizes = None
    received = None
    layers = vision_model.encoder.layers
    for position, layer in enumerate(layers):
        bias = None if sizes is None else size_bias(sizes, hidden.dtype)
        normed = layer.layer_norm1(hidden)
        out, key, probs = _attention(layer.self_attn, normed, bias, implementation)
        hidden = out + hidden
        if record_received and position == len(layers) - 1:
            if probs is None or layer.self_attn.training:
                probs = _probabilities(layer.self_attn, normed, bias)
            received = received_attention(probs, sizes)
        count = merge_count(hidden.shape[1], r)
        if count:
            matching = bipartite_soft_matching(key.mean(dim=1), count)
            if sizes is None:
                sizes = torch.ones(hidden.shape[:2], dtype=torch.float32, device=hidden.device)
            hidden, sizes = merge_tokens(hidden, sizes, matching)
            if received is not None:
                received = merge_sum(received[..., None], matching)[..., 0]
        hidden = layer.mlp(layer.layer_norm2(hidden)) + hidden
    last_hidden_state = vision_model.post_layernorm(hidden)
    pooled = vision_model.post_layernorm(last_hidden_state[:, 0, :])  # as stock: the CLS token, normed again
    outputs = BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooled)
    return VisionPass(outputs, sizes, received)


__all__ = ["MERGE_ATTENTION_IMPLEMENTATIONS", "VisionPass", "merged_vision_forward"]
