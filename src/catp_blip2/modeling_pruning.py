"""What every CATP Q-Former model shares: attention recording, scoring and selection here; placeholder compaction,
`forward` and `generate` in `modeling_generation` (a base class). A model family plugs in through one small
`QFormerFamily` description (`modeling_qformer`).

`CatpQFormerMixin` goes before the stock transformers class (`class CatpBlip2ForConditionalGeneration(
CatpQFormerMixin, Blip2ForConditionalGeneration)`): stock model plus three seams.

1. `get_image_features` records the attention probabilities the configured method needs (only those),
   scores the query tokens, keeps the k best in their original order and projects only those.
2. `forward` and `generate` drop the placeholders of pruned query tokens from the language-model inputs.
3. `generate` hands back sequences that begin with the caller's own `input_ids`.

Pruning settings are read from `self.config` at every call, so one loaded model can sweep methods and k.
This module ships as Hub remote code: it imports only torch, transformers and its sibling core modules.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.blip_2.modeling_blip_2 import (
    BaseModelOutputWithVisionQformerOutputs,
)
from transformers.utils import can_return_tuple

from .modeling_features import QFormerEncoding, scoring_key
from .modeling_generation import CatpForConditionalGenerationModelOutput, CatpLanguageModelMixin
from .methods import PRUNING_METHODS
from .modeling_qformer import AttentionRecorder, QFormerFamily, proportional_cross_attention
from .scoring_catp import vit_attention_image_weights
from .selection import (
    PAD,
    counts_for_score_mass,
    gather_tokens,
    merge_pruned_tokens,
    select_by_counts,
    select_top_k,
)


@dataclass
class CatpImageFeaturesOutput(BaseModelOutputWithVisionQformerOutputs):
    r"""
    pooler_output (`torch.FloatTensor` of shape `(batch_size, k, text_hidden_size)`):
        The projected kept query tokens, ready for the language model. With `keep_score_mass`, k is the largest
        per-row count and rows are zero-padded on the right.
    kept_query_indices (`torch.LongTensor` of shape `(batch_size, k)`):
        Which query tokens were kept, ascending; -1 (`selection.PAD`) in the empty slots of padded rows.
    kept_query_counts (`torch.LongTensor` of shape `(batch_size,)`):
        How many query tokens each row kept.
    kept_query_sizes (`torch.FloatTensor` of shape `(batch_size, k)`, *optional*):
        With `pruned_queries="merge"`: how many query tokens each kept token holds (itself and those merged into
        it; each row sums to num_query_tokens). `None` when the pruned queries are dropped.
    query_token_scores (`torch.FloatTensor` of shape `(batch_size, num_query_tokens)`):
        The score of every query token under the configured method (higher is kept first), prior included.
    image_token_sizes (`torch.FloatTensor` of shape `(batch_size * frames, num_image_tokens)`, *optional*):
        With `vision_merge_per_layer` > 0: how many of the vision encoder's input tokens (CLS, patches) each image
        token of `last_hidden_state` stands for (each row sums to the input token count). `None` unmerged, or when
        the features came from a reused `qformer_encoding`.
    """

    kept_query_indices: torch.LongTensor | None = None
    kept_query_counts: torch.LongTensor | None = None
    kept_query_sizes: torch.FloatTensor | None = None
    query_token_scores: torch.FloatTensor | None = None
    image_token_sizes: torch.FloatTensor | None = None


class KeptQueries(NamedTuple):
    """What `_keep_best` selected: indices (B, k) padded with `PAD`, counts (B,), tokens (B, k, D) (merged or
    gathered, zeros in empty slots), sizes (B, k) or None (drop), and the scores (B, T) selection used."""

    indices: torch.Tensor
    counts: torch.Tensor
    tokens: torch.Tensor
    sizes: torch.Tensor | None
    scores: torch.Tensor


def _relative(weights: list[float]) -> list[float]:
    largest = max(weights)
    return [w / largest for w in weights]


class CatpQFormerMixin(CatpLanguageModelMixin):
    """The shared CATP machinery of a Q-Former model; a subclass names its `family` and its config class."""

    family: QFormerFamily

    def __init__(self, config: Any):
        super().__init__(config)
        config.check_pruning_settings()

    def _family_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Take the family's extra Q-Former inputs out of `kwargs`."""
        return {name: kwargs.pop(name) for name in self.family.extra_inputs if name in kwargs}

    # ---- seam 1: scoring and selection -------------------------------------------------------------------

    @contextmanager
    def _record_attentions(self, configs: Sequence[Any]) -> Iterator[AttentionRecorder]:
        """Record, in one pass, what the methods of all `configs` need (the union of their voting layers)."""
        family = self.family
        recorder = AttentionRecorder(family.qformer_probs, family.vision_probs)
        needs = {name for config in configs for name in PRUNING_METHODS[config.pruning_method].inputs}
        q = self.config.num_query_tokens
        try:
            if "cross_attentions" in needs or "all_cross_attentions" in needs:
                cross = family.cross_attentions(self)
                recorder.cross_positions = sorted(
                    {p for c in configs if "cross_attentions" in PRUNING_METHODS[c.pruning_method].inputs
                     for p in c.voting_layer_positions()}
                    | (set(range(len(cross))) if "all_cross_attentions" in needs else set())
                )
                recorder.record_qformer([cross[p] for p in recorder.cross_positions], recorder.cross_attentions, q)
            if "self_attentions" in needs:
                recorder.record_qformer(family.self_attentions(self), recorder.self_attentions, q)
            if "image_token_weights" in needs and any(c.image_token_weighting == "vit_attention" for c in configs):
                recorder.record_vision(family.vision_attention(self))
            yield recorder
        finally:
            recorder.remove()

    def _score_query_tokens(self, recorder: AttentionRecorder, query_output: torch.Tensor, config: Any) -> torch.Tensor:
        method = PRUNING_METHODS[config.pruning_method]
        image_weights = None
        if config.image_token_weighting == "vit_attention" and recorder.vit_received is not None:
            # Merged image tokens: the attention each received (a merged token's parts summed), normalised.
            image_weights = recorder.vit_received / recorder.vit_received.sum(dim=-1, keepdim=True)
        elif recorder.vit_attention is not None and config.image_token_weighting == "vit_attention":
            image_weights = vit_attention_image_weights(recorder.vit_attention)
        elif recorder.image_token_sizes is not None:
            # A merged image token votes for the patches it stands for: its vote weighs its size (the weights still
            # sum to the vision encoder's token count, so the scores keep their scale).
            image_weights = recorder.image_token_sizes
        cross = []
        if "cross_attentions" in method.inputs:
            cross = [recorder.cross_attentions[recorder.cross_positions.index(p)] for p in config.voting_layer_positions()]
        # A method taking every layer had every layer recorded, in order.
        every = list(recorder.cross_attentions) if "all_cross_attentions" in method.inputs else []
        available = {
            "cross_attentions": cross,
            "all_cross_attentions": every,
            # Only the ratios of the layer weights matter to the ranking: scaled to a largest weight of 1, no finite
            # weight can overflow the float32 scores.
            "layer_weights": _relative(config.voting_layer_weights()),
            "image_token_weights": image_weights,
            "aggregation": config.vote_aggregation,
            "self_attentions": recorder.self_attentions,
            "query_output": query_output,
            "batch_size": query_output.shape[0],
            "num_queries": query_output.shape[1],
            "seed": config.pruning_seed,
            "device": query_output.device,
        }
        available.update({setting.name: getattr(config, setting.name) for setting in method.settings})
        with torch.no_grad():
            return method.score(**{name: available[name] for name in method.inputs})

    def scoring_configs(self, score_settings: Sequence[Mapping[str, Any]] | None = None) -> list[Any]:
        """Checked copies of the config with each set of pruning settings applied (`None`: the config itself).

        Settings a set leaves out keep the config's values; k is irrelevant to scores and cleared."""
        self.config.check_pruning_settings()
        if score_settings is None:
            return [self.config]
        configs = []
        for settings in score_settings:
            view = copy.copy(self.config)  # the pruning settings are top-level attributes: a shallow copy suffices
            for name, value in settings.items():
                setattr(view, name, copy.deepcopy(value))
            view.num_kept_query_tokens = None
            view.check_pruning_settings()
            if view.vision_merge_per_layer != self.config.vision_merge_per_layer:
                raise ValueError(
                    f"`score_settings`: `vision_merge_per_layer` must be the model's ({self.config.vision_merge_per_layer}) "
                    f"in every set, since one pass runs the vision encoder once; got {view.vision_merge_per_layer!r}. "
                    "Set `model.config.vision_merge_per_layer` instead."
                )
            configs.append(view)
        return configs

    def encode_qformer(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool | None = False,
        score_settings: Sequence[Mapping[str, Any]] | None = None,
        **kwargs,
    ) -> QFormerEncoding:
        r"""
        Run the vision encoder and the Q-Former once and score the query tokens, before any selection.

        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, image_size, image_size)`, or
            `(batch_size, frames, num_channels, image_size, image_size)` for video): the images.
        score_settings (`list[dict]`, *optional*): sets of pruning settings (`{"pruning_method": "l2"}`, ...) to
            score under, all from this one pass; settings a set leaves out keep the config's. `None`: the config's.
        kwargs: the family's extra Q-Former inputs (InstructBLIP: `qformer_input_ids`, `qformer_attention_mask`)
            and vision-encoder options.

        Returns a [`QFormerEncoding`]: query outputs (B * F, Q, D) and scores (B * F, Q) per set of settings, which
        `get_image_features` / `generate(qformer_encoding=...)` select from under the config's current settings.
        """
        configs = self.scoring_configs(score_settings)
        extra = self._family_inputs(kwargs)
        frames = 1
        expected = getattr(self.config, "num_frames", None)  # video models
        if expected is not None and (pixel_values.dim() != 5 or pixel_values.shape[1] != expected):
            raise ValueError(
                f"`pixel_values` must be (batch, num_frames={expected}, channels, height, width); got shape "
                f"{tuple(pixel_values.shape)}."
            )
        if pixel_values.dim() == 5:  # video: every frame through the vision encoder and the Q-Former
            frames = pixel_values.shape[1]
            pixel_values = pixel_values.flatten(0, 1)
            extra = {name: None if v is None else v.repeat_interleave(frames, dim=0) for name, v in extra.items()}
        with self._record_attentions(configs) as recorder:
            vision_outputs = self._run_vision(pixel_values, interpolate_pos_encoding, configs, recorder, **kwargs)
            image_embeds = vision_outputs.last_hidden_state
            image_attention_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            query_tokens = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
            cross = self.family.cross_attentions(self) if recorder.image_token_sizes is not None else []
            with proportional_cross_attention(cross, recorder.image_token_sizes):
                qformer_outputs = self.family.run_qformer(self, query_tokens, image_embeds, image_attention_mask, **extra)
        query_output = qformer_outputs.last_hidden_state[:, : query_tokens.shape[1]]
        scores = {scoring_key(c): self._score_query_tokens(recorder, query_output, c) for c in configs}
        return QFormerEncoding(
            query_output=query_output,
            scores=scores,
            frames=frames,
            projection_dtype=image_embeds.dtype,
            image_embeds=image_embeds,
            vision_outputs=vision_outputs,
            qformer_outputs=qformer_outputs,
            image_token_sizes=recorder.image_token_sizes,
        )

    def _run_vision(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None, configs: Sequence[Any],
        recorder: AttentionRecorder, **kwargs,
    ) -> BaseModelOutputWithPooling:
        """The vision encoder on pixel_values (B, C, H, W): stock when `vision_merge_per_layer` is 0; else merging r
        tokens per layer, the merged tokens' sizes (B, N') and, where a method weighs votes by the ViT's attention,
        the attention they received stored on `recorder`."""
        r = self.config.vision_merge_per_layer
        if not r:
            return self.vision_model(
                pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
            )
        wants_weights = any(
            "image_token_weights" in PRUNING_METHODS[c.pruning_method].inputs and c.image_token_weighting == "vit_attention"
            for c in configs
        )
        vision = self.family.run_merged_vision(
            self.vision_model, pixel_values, r, bool(interpolate_pos_encoding), record_received=wants_weights
        )
        recorder.image_token_sizes, recorder.vit_received = vision.sizes, vision.received
        return vision.outputs

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = False,
        qformer_encoding: QFormerEncoding | None = None,
        **kwargs,
    ) -> CatpImageFeaturesOutput:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, image_size, image_size)`, or
            `(batch_size, frames, num_channels, image_size, image_size)` for video): the images.
        qformer_encoding ([`QFormerEncoding`], *optional*): a pass made by `encode_qformer` (or a cache of them),
            instead of `pixel_values`: only the selection, under the config's current settings, and the projection run.

        Returns a [`CatpImageFeaturesOutput`] whose `pooler_output` (B, k, text_hidden_size) holds the projected
        kept query tokens, with `kept_query_indices` (B, k) and `query_token_scores` (B, T), T = num_query_tokens
        (times the frames for video; indices in (frame, query) order).
        """
        if (pixel_values is None) == (qformer_encoding is None):
            raise ValueError("Give exactly one of `pixel_values` and `qformer_encoding`.")
        encoding = qformer_encoding
        if encoding is None:
            encoding = self.encode_qformer(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        else:
            self._family_inputs(kwargs)  # the pass already read them
            self.config.check_pruning_settings()
        kept = self._keep_best(encoding.scores_for(self.config), encoding.query_output, encoding.frames)

        # The Q-Former is kept in fp32; the projection and the language model may not be.
        query_output = kept.tokens
        if query_output.dtype != encoding.projection_dtype:
            query_output = query_output.to(encoding.projection_dtype)
        features = self.language_projection(query_output)
        if kept.sizes is not None or self.config.keep_score_mass is not None:
            features = features * (kept.indices != PAD).unsqueeze(-1).to(features.dtype)  # empty slots stay zero
        vision_outputs = encoding.vision_outputs
        return CatpImageFeaturesOutput(
            last_hidden_state=encoding.image_embeds,
            pooler_output=features,
            hidden_states=getattr(vision_outputs, "hidden_states", None),
            attentions=getattr(vision_outputs, "attentions", None),
            vision_outputs=vision_outputs,
            qformer_outputs=encoding.qformer_outputs,
            kept_query_indices=kept.indices,
            kept_query_counts=kept.counts,
            kept_query_sizes=kept.sizes,
            query_token_scores=kept.scores,
            image_token_sizes=encoding.image_token_sizes,
        )

    def _keep_best(self, scores: torch.Tensor, query_output: torch.Tensor, frames: int) -> KeptQueries:
        """scores (B * F, Q), query_output (B * F, Q, D) -> the kept queries of each sample (see `KeptQueries`).

        The prior (`query_score_prior`, one value per query, the same in every frame) is added first. Then a fixed
        k, or per sample the fewest queries holding `keep_score_mass` of the scores. Every frame has the same number
        of voters, so the points of different frames compare directly: the best of the whole video are kept
        ("global"), or k / F of each frame (`frame_selection="per_frame"`). Last, with `pruned_queries="merge"`, the
        pruned query outputs are folded into the kept ones.
        """
        config = self.config
        batch, num_queries = scores.shape[0] // frames, scores.shape[1]
        total = frames * num_queries
        scores = scores.reshape(batch, total)
        if config.query_score_prior is not None:
            prior = torch.tensor(config.query_score_prior, dtype=scores.dtype, device=scores.device)
            scores = scores + prior.repeat(frames)
        tokens = query_output.reshape(batch, total, query_output.shape[-1])
        if config.keep_score_mass is not None and config.pruning_method != "none":
            counts = counts_for_score_mass(
                scores, config.keep_score_mass, config.min_kept_query_tokens, config.max_kept_query_tokens or total
            )
            kept = select_by_counts(scores, counts)
        else:
            k = config.kept_query_tokens
            counts = torch.full((batch,), k, dtype=torch.long, device=tokens.device)
            if k == total:  # nothing pruned, nothing to merge: the stock model's tokens
                return KeptQueries(torch.arange(total, device=tokens.device).expand(batch, total), counts, tokens, None, scores)
            if frames > 1 and getattr(config, "frame_selection", "global") == "per_frame":
                per_frame = select_top_k(scores.reshape(batch * frames, num_queries), k // frames)
                offsets = torch.arange(frames, device=per_frame.device).repeat(batch)[:, None] * num_queries
                kept = (per_frame + offsets).reshape(batch, k)
            else:
                kept = select_top_k(scores, k)
        if config.pruned_queries == "merge":
            merged, sizes = merge_pruned_tokens(tokens, kept)
            return KeptQueries(kept, counts, merged, sizes, scores)
        return KeptQueries(kept, counts, gather_tokens(tokens, kept), None, scores)


__all__ = ["CatpForConditionalGenerationModelOutput", "CatpImageFeaturesOutput", "CatpQFormerMixin"]
