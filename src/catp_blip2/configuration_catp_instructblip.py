"""Configuration of CATP-pruned InstructBLIP: an `InstructBlipConfig` plus the pruning settings of every CATP model.

The settings, their defaults and their checks are those of `CatpConfig` (shared through `PruningConfigMixin`, and
declared once in the method registry); see `configuration_catp.CatpConfig` for what each one means.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import InstructBlipConfig

from .configuration_catp import PruningConfigMixin


@strict
class CatpInstructBlipConfig(PruningConfigMixin, InstructBlipConfig):
    r"""
    Configuration of [`CatpInstructBlipForConditionalGeneration`]: every `InstructBlipConfig` field plus the pruning
    settings of [`CatpConfig`] (`pruning_method`, `num_kept_query_tokens`, `vote_layers`, ...). The Q-Former reads
    the instruction, so its cross-attention, and with it CATP's votes, depend on the question.
    """

    model_type = "catp_instructblip"
    base_model_types = ("instructblip",)
    remote_model_class = "modeling_catp_instructblip.CatpInstructBlipForConditionalGeneration"

    # Typed `Any` on purpose, as in CatpConfig: every bad setting must raise a ValueError naming it.
    pruning_method: Any = "catp"
    num_kept_query_tokens: Any = None
    vision_merge_per_layer: Any = 0


# save_pretrained writes this module (and what it imports relatively) beside config.json.
CatpInstructBlipConfig.register_for_auto_class()

__all__ = ["CatpInstructBlipConfig"]
