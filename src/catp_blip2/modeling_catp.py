"""CATP-pruned BLIP-2: stock `Blip2ForConditionalGeneration` plus the shared CATP seams of `modeling_pruning`.

All that is BLIP-2's own is the `BLIP2` description below: where its Q-Former keeps the attention modules CATP
listens to, and how its Q-Former is called. This module ships as Hub remote code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2ForConditionalGeneration

from .configuration_catp import CatpConfig
from .modeling_generation import CatpForConditionalGenerationModelOutput
from .modeling_pruning import CatpImageFeaturesOutput, CatpQFormerMixin
from .modeling_qformer import AttentionRecorder, QFormerFamily


def _blip2_qformer(
    model: nn.Module, query_tokens: torch.Tensor, image_embeds: torch.Tensor, image_mask: torch.Tensor
):
    return model.qformer(
        query_embeds=query_tokens, encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask, return_dict=True
    )


BLIP2 = QFormerFamily(
    cross_attentions=lambda model: [
        layer.crossattention.attention for layer in model.qformer.encoder.layer if layer.has_cross_attention
    ],
    self_attentions=lambda model: [layer.attention.attention for layer in model.qformer.encoder.layer],
    vision_attention=lambda model: model.vision_model.encoder.layers[-1].self_attn,
    run_qformer=_blip2_qformer,
)


class CatpBlip2ForConditionalGeneration(CatpQFormerMixin, Blip2ForConditionalGeneration):
    """BLIP-2 whose language model sees only the k best query tokens (CATP or a baseline, per `config`)."""

    config: CatpConfig
    config_class = CatpConfig
    family = BLIP2


# save_pretrained writes the model core's files beside the weights; the config carries the whole auto_map.
CatpBlip2ForConditionalGeneration.register_for_auto_class("AutoModelForVisualQuestionAnswering")

__all__ = [
    "AttentionRecorder",
    "BLIP2",
    "CatpBlip2ForConditionalGeneration",
    "CatpForConditionalGenerationModelOutput",
    "CatpImageFeaturesOutput",
]
