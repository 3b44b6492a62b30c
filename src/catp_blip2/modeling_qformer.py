"""The Q-Former side of CATP: where a model family keeps the attention modules CATP listens to, and how their
probabilities are recorded during the forward pass without changing its outputs.

A family is one small `QFormerFamily` description (BLIP-2's is `modeling_catp.BLIP2`); the shared pruning seams
live in `modeling_pruning`. This module ships as Hub remote code: it imports only torch and transformers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .modeling_vision import merged_vision_forward
from .vision_merge import size_bias


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores.softmax(dim=-1)


def qformer_attention_probs(
    module: nn.Module,
    hidden_states: torch.Tensor,
    source: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Probabilities of a Q-Former multi-head attention (BLIP-2, InstructBLIP), recomputed from its own projections.

    hidden_states (B, Lq, D): the attending rows; source (B, S, E): what they attend to (the image tokens for
    cross-attention, the whole sequence for self-attention); attention_mask broadcastable to (B, H, Lq, S).
    Returns (B, H, Lq, S).
    """
    head = module.attention_head_size
    query = module.query(hidden_states).unflatten(-1, (-1, head)).transpose(1, 2)
    key = module.key(source).unflatten(-1, (-1, head)).transpose(1, 2)
    return _masked_softmax(query @ key.transpose(-1, -2) * module.scaling, attention_mask)


def vision_attention_probs(module: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """Probabilities of a `Blip2Attention` (vision encoder), recomputed. hidden_states (B, T, D) -> (B, H, T, T)."""
    qkv = module.qkv(hidden_states).unflatten(-1, (3, module.num_heads, -1)).permute(2, 0, 3, 1, 4)
    return (qkv[0] @ qkv[1].transpose(-1, -2) * module.scale).softmax(dim=-1)


class AttentionRecorder:
    """Records attention probabilities of chosen modules during one forward pass.

    Probabilities are recomputed in a forward hook from the module's own query/key projections, so the module's
    outputs stay exactly as the user's attention implementation (sdpa, eager, flex) makes them, and nothing is
    kept for modules that were not chosen. Image tokens in BLIP-2 are never padded, so masks are applied only
    when the module is given one. Dropout is not applied: votes come from the expected probabilities.
    """

    def __init__(self, qformer_probs: Callable[..., torch.Tensor], vision_probs: Callable[..., torch.Tensor]) -> None:
        self.qformer_probs = qformer_probs
        self.vision_probs = vision_probs
        self.cross_attentions: list[torch.Tensor] = []
        self.cross_positions: list[int] = []  # which cross-attention layers `cross_attentions` holds, in order
        self.self_attentions: list[torch.Tensor] = []
        self.vit_attention: torch.Tensor | None = None
        # With merged image tokens (vision_merge_per_layer > 0): their sizes (B, N) and, when asked, the attention
        # they received in the vision encoder's last layer (B, N); the vision hook above does not fire then.
        self.image_token_sizes: torch.Tensor | None = None
        self.vit_received: torch.Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _qformer_hook(self, store: list[torch.Tensor], slot: int, num_queries: int):
        def hook(module, args, kwargs, output):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            encoder = kwargs.get("encoder_hidden_states")
            mask = kwargs.get("encoder_attention_mask") if encoder is not None else kwargs.get("attention_mask")
            # Rows: the query tokens only (InstructBLIP's Q-Former also runs the instruction's tokens). Keys: all
            # that the module attends to, so the softmax is the module's own; self-attention then keeps the columns
            # of the query tokens.
            if mask is not None and mask.dim() == 4 and mask.shape[-2] > num_queries:
                mask = mask[..., :num_queries, :]  # a (B, 1, L, L) mask: the query rows
            with torch.no_grad():
                probs = self.qformer_probs(module, hidden[:, :num_queries], hidden if encoder is None else encoder, mask)
            if encoder is None:
                probs = probs[..., :num_queries]
            store[slot] = probs

        return hook

    def record_qformer(self, modules: list[nn.Module], store: list[torch.Tensor], num_queries: int) -> None:
        store[:] = [None] * len(modules)
        for slot, module in enumerate(modules):
            hook = self._qformer_hook(store, slot, num_queries)
            self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def record_vision(self, module: nn.Module) -> None:
        def hook(module, args, kwargs, output):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            with torch.no_grad():
                self.vit_attention = self.vision_probs(module, hidden)

        self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _with_size_bias(mask: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
    """An encoder attention mask as the attention module gets it (None, bool, or additive) plus bias (B, 1, 1, N)."""
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return torch.where(mask, bias, torch.tensor(float("-inf"), dtype=bias.dtype, device=bias.device))
    return mask + bias.to(mask.dtype)


@contextmanager
def proportional_cross_attention(modules: list[nn.Module], sizes: torch.Tensor | None) -> Iterator[None]:
    """Proportional attention in the Q-Former: while active, the cross-attention `modules` add log(size) to their
    logits over the image tokens, sizes (B, N) (`vision_merge.size_bias`), for any attention implementation that
    takes a mask (eager, sdpa). `None` sizes (unmerged tokens) change nothing.

    The bias rides on the module's `encoder_attention_mask`, so an `AttentionRecorder` hook sees it too and the
    recorded probabilities are the ones the module used."""
    if sizes is None:
        yield
        return

    def hook(module, args, kwargs):
        encoder = kwargs.get("encoder_hidden_states")
        if encoder is None:
            return None
        bias = size_bias(sizes, encoder.dtype)
        return args, {**kwargs, "encoder_attention_mask": _with_size_bias(kwargs.get("encoder_attention_mask"), bias)}

    handles = [module.register_forward_pre_hook(hook, with_kwargs=True) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class QFormerFamily:
    """Everything model-specific that CATP needs from one Q-Former family; all else is `CatpQFormerMixin`'s.

    cross_attentions(model): the Q-Former's cross-attention modules, in layer order (the voters' layers).
    self_attentions(model): the Q-Former's self-attention modules, one per layer.
    vision_attention(model): the vision encoder's last self-attention (for `image_token_weighting`).
    run_qformer(model, query_tokens (B, Q, D), image_embeds (B, N, E), image_mask (B, N), **extra): the Q-Former
        call that makes the query tokens; its `last_hidden_state[:, :Q]` are the query outputs.
    run_merged_vision(vision_model, pixel_values, r, interpolate_pos_encoding, record_received): the vision encoder
        merging r tokens per layer (`modeling_vision.merged_vision_forward`); with r = 0 the stock encoder runs.
    qformer_probs / vision_probs: recompute a module's attention probabilities from its own projections
        (see `qformer_attention_probs`, `vision_attention_probs`).
    extra_inputs: inputs the Q-Former reads besides the images (InstructBLIP: the instruction's tokens), passed
        from `forward` / `generate` to `run_qformer` by name.
    placeholder: the config attribute holding the id of the language-model placeholder token (video: video_token_id).
    features_key: the key of the stock `forward`'s `mm_encoder_outputs` that carries the features ("image", "video").
    """

    cross_attentions: Callable[[nn.Module], list[nn.Module]]
    self_attentions: Callable[[nn.Module], list[nn.Module]]
    vision_attention: Callable[[nn.Module], nn.Module]
    run_qformer: Callable[..., Any]
    qformer_probs: Callable[..., torch.Tensor] = qformer_attention_probs
    vision_probs: Callable[..., torch.Tensor] = vision_attention_probs
    run_merged_vision: Callable[..., Any] = merged_vision_forward
    extra_inputs: tuple[str, ...] = ()
    placeholder: str = "image_token_id"
    features_key: str = "image"


__all__ = ["AttentionRecorder", "QFormerFamily", "proportional_cross_attention", "qformer_attention_probs", "vision_attention_probs"]
