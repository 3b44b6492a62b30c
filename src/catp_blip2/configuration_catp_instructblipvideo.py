"""Configuration of CATP-pruned InstructBLIP-Video: an `InstructBlipVideoConfig` plus the pruning settings.

The video's frames each give num_query_tokens tokens, so k counts the tokens kept for the whole video, in
1..num_frames x num_query_tokens; `frame_selection` says whether they are the best of the whole video or an equal
share of every frame.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import InstructBlipVideoConfig

from .configuration_catp import PruningConfigMixin, _bad
from .scoring import as_int

FRAME_SELECTIONS = ("global", "per_frame")


@strict
class CatpInstructBlipVideoConfig(PruningConfigMixin, InstructBlipVideoConfig):
    r"""
    Configuration of [`CatpInstructBlipVideoForConditionalGeneration`]: every `InstructBlipVideoConfig` field, the
    pruning settings of [`CatpConfig`], and:

    num_frames (`int`, defaults to 4):
        Frames per video (stock InstructBLIP-Video always takes 4); the language model gets num_frames x
        num_query_tokens tokens unpruned, and `num_kept_query_tokens` is checked against that.
    frame_selection (`str`, defaults to `"global"`):
        `"global"`: the k best tokens of the whole video (every frame has as many voters, so scores compare across
        frames); `"per_frame"`: k / num_frames from every frame (k must then be a multiple of num_frames).
    """

    model_type = "catp_instructblipvideo"
    base_model_types = ("instructblipvideo",)
    remote_model_class = "modeling_catp_instructblipvideo.CatpInstructBlipVideoForConditionalGeneration"
    total_query_tokens_text = "num_frames x num_query_tokens"
    family_settings = ("num_frames", "frame_selection")

    # Typed `Any` on purpose, as in CatpConfig: every bad setting must raise a ValueError naming it.
    pruning_method: Any = "catp"
    num_kept_query_tokens: Any = None
    vision_merge_per_layer: Any = 0
    num_frames: Any = 4
    frame_selection: Any = "global"

    @property
    def total_query_tokens(self) -> int:
        return self.num_frames * self.num_query_tokens

    def check_pruning_settings(self) -> None:
        frames = as_int(self.num_frames)
        if frames is None or frames < 1:
            raise _bad("num_frames", self.num_frames, "a positive integer")
        self.num_frames = frames
        if self.frame_selection not in FRAME_SELECTIONS:
            raise _bad("frame_selection", self.frame_selection, f"one of {FRAME_SELECTIONS}")
        super().check_pruning_settings()
        k = self.num_kept_query_tokens
        if self.frame_selection == "per_frame" and k is not None and k % frames:
            raise _bad("num_kept_query_tokens", k, f"a multiple of num_frames={frames} with frame_selection='per_frame'")
        if self.frame_selection == "per_frame" and self.keep_score_mass is not None:
            # A per-sample budget spans the whole video; per_frame keeps the same number in every frame.
            raise _bad("keep_score_mass", self.keep_score_mass, "None with frame_selection='per_frame'")


# save_pretrained writes this module (and what it imports relatively) beside config.json.
CatpInstructBlipVideoConfig.register_for_auto_class()

__all__ = ["CatpInstructBlipVideoConfig", "FRAME_SELECTIONS"]
