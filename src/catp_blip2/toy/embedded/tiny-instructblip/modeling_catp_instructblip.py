"""CATP-pruned InstructBLIP: stock `InstructBlipForConditionalGeneration` plus the shared CATP seams.

InstructBLIP's Q-Former is BLIP-2's with the instruction's tokens beside the 32 queries: self-attention runs over
both, cross-attention over the query rows. Its modules sit where BLIP-2's do, so the family description is BLIP-2's
with another Q-Former call, which also takes `qformer_input_ids` / `qformer_attention_mask`. The recorded
cross-attention is the one computed with the instruction present, so the votes, and the kept tokens, depend on the
question. This module ships as Hub remote code.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers import InstructBlipForConditionalGeneration

from .configuration_catp_instructblip import CatpInstructBlipConfig
from .modeling_catp import BLIP2
from .modeling_pruning import CatpQFormerMixin


def _instructblip_qformer(
    model: nn.Module,
    query_tokens: torch.Tensor,
    image_embeds: torch.Tensor,
    image_mask: torch.Tensor,
    qformer_input_ids: torch.LongTensor | None = None,
    qformer_attention_mask: torch.LongTensor | None = None,
):
    """The Q-Former over the queries (B, Q, D) followed by the instruction's tokens (B, T), as stock InstructBLIP."""
    if qformer_input_ids is None:
        raise ValueError(
            "`qformer_input_ids` is required: InstructBLIP's Q-Former reads the instruction (InstructBlipProcessor "
            "makes it from the text)."
        )
    query_mask = torch.ones(query_tokens.shape[:-1], dtype=torch.long, device=image_embeds.device)
    if qformer_attention_mask is None:
        qformer_attention_mask = torch.ones_like(qformer_input_ids)
    attention_mask = torch.cat([query_mask, qformer_attention_mask.to(query_mask.device)], dim=1)
    return model.qformer(
        input_ids=qformer_input_ids,
        attention_mask=attention_mask,
        query_embeds=query_tokens,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_mask,
        return_dict=True,
    )


INSTRUCTBLIP = dataclasses.replace(
    BLIP2, run_qformer=_instructblip_qformer, extra_inputs=("qformer_input_ids", "qformer_attention_mask")
)


class CatpInstructBlipForConditionalGeneration(CatpQFormerMixin, InstructBlipForConditionalGeneration):
    """InstructBLIP whose language model sees only the k best query tokens, scored with the question present."""

    config: CatpInstructBlipConfig
    config_class = CatpInstructBlipConfig
    family = INSTRUCTBLIP


# save_pretrained writes the model core's files beside the weights; the config carries the whole auto_map.
CatpInstructBlipForConditionalGeneration.register_for_auto_class("AutoModelForVisualQuestionAnswering")

__all__ = ["CatpInstructBlipForConditionalGeneration", "INSTRUCTBLIP"]
