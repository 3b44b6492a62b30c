"""CATP-pruned InstructBLIP-Video: stock `InstructBlipVideoForConditionalGeneration` plus the shared CATP seams.

The vision encoder and the Q-Former run per frame (the instruction repeated per frame), exactly as InstructBLIP's;
each frame's image tokens vote on that frame's queries, and the k kept tokens of the num_frames x num_query_tokens
stay in (frame, query) order (`modeling_pruning.CatpQFormerMixin._keep_best`). The language model's placeholders are
video tokens. This module ships as Hub remote code.
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import InstructBlipVideoForConditionalGeneration

from .configuration_catp_instructblipvideo import CatpInstructBlipVideoConfig
from .modeling_catp_instructblip import INSTRUCTBLIP
from .modeling_pruning import CatpImageFeaturesOutput, CatpQFormerMixin

INSTRUCTBLIPVIDEO = dataclasses.replace(INSTRUCTBLIP, placeholder="video_token_id", features_key="video")


class CatpInstructBlipVideoForConditionalGeneration(CatpQFormerMixin, InstructBlipVideoForConditionalGeneration):
    """InstructBLIP-Video whose language model sees only the k best of the video's frame x query tokens."""

    config: CatpInstructBlipVideoConfig
    config_class = CatpInstructBlipVideoConfig
    family = INSTRUCTBLIPVIDEO

    def get_video_features(self, pixel_values: torch.Tensor, **kwargs) -> CatpImageFeaturesOutput:
        """pixel_values (B, num_frames, C, H, W) -> the video's kept tokens (see `get_image_features`)."""
        return self.get_image_features(pixel_values, **kwargs)


# save_pretrained writes the model core's files beside the weights; the config carries the whole auto_map.
CatpInstructBlipVideoForConditionalGeneration.register_for_auto_class("AutoModelForVisualQuestionAnswering")

__all__ = ["CatpInstructBlipVideoForConditionalGeneration", "INSTRUCTBLIPVIDEO"]
