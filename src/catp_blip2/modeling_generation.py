"""The language-model half of every CATP Q-Former model: the placeholders of pruned query tokens leave the
language-model inputs, and `forward` / `generate` run the stock model on what is left.

`CatpLanguageModelMixin` is a base of `modeling_pruning.CatpQFormerMixin`, which supplies `get_image_features`
(the kept, projected query tokens) and `family`. Kept apart so the image half (recording, scoring, selection) and
the text half (compaction, length and prefix contracts) each read in one file. Ships as Hub remote code.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.blip_2.modeling_blip_2 import Blip2ForConditionalGenerationModelOutput
from transformers.utils import can_return_tuple

from .modeling_features import QFormerEncoding
from .modeling_prompt import drop_pruned_placeholders, lengths_for_compact_prompt, with_caller_prefix


@dataclass
class CatpForConditionalGenerationModelOutput(Blip2ForConditionalGenerationModelOutput):
    r"""
    Stock BLIP-2 outputs; `logits` cover the language-model inputs after pruned placeholders were removed.
    kept_query_indices (`torch.LongTensor` of shape `(batch_size, k)`): which query tokens were kept (-1 pads).
    kept_query_counts (`torch.LongTensor` of shape `(batch_size,)`): how many each row kept.
    kept_query_sizes (`torch.FloatTensor` of shape `(batch_size, k)`, *optional*): tokens each kept one holds (merge).
    query_token_scores (`torch.FloatTensor` of shape `(batch_size, num_query_tokens)`): every query token's score.
    """

    kept_query_indices: torch.LongTensor | None = None
    kept_query_counts: torch.LongTensor | None = None
    kept_query_sizes: torch.FloatTensor | None = None
    query_token_scores: torch.FloatTensor | None = None


class CatpLanguageModelMixin:
    """Seams 2 and 3 of a CATP model: compaction of the language-model inputs, `forward` and `generate`."""

    # ---- seam 2: placeholders of pruned tokens leave the language-model inputs ----------------------------

    def _compact(
        self,
        placeholder_mask: torch.Tensor,
        kept: torch.Tensor,
        counts: torch.Tensor | None,
        tensors: dict[str, torch.Tensor | None],
    ) -> dict[str, torch.Tensor | None]:
        """`drop_pruned_placeholders` for this model's placeholder token, query-token count and padding values."""
        placeholder_id = getattr(self.config, self.family.placeholder)
        pad_id = self.config.text_config.pad_token_id
        if pad_id is None or pad_id == placeholder_id:
            pad_id = 0 if placeholder_id != 0 else 1
        return drop_pruned_placeholders(
            placeholder_mask,
            kept,
            self.config.total_query_tokens,
            tensors,
            f"{self.family.placeholder}={placeholder_id}",
            counts=counts,
            pad_values={"input_ids": pad_id, "labels": -100},
        )

    @staticmethod
    def _valid_features(image: Any) -> Any:
        """`image` whose `pooler_output` holds only the filled slots, row after row, for the stock `masked_scatter`
        (which takes features in order): padded rows (a per-sample k) would otherwise shift every later row."""
        counts = getattr(image, "kept_query_counts", None)
        features = image.pooler_output
        if counts is None or bool((counts == features.shape[1]).all()):
            return image
        filled = torch.arange(features.shape[1], device=features.device)[None] < counts.to(features.device)[:, None]
        image = copy.copy(image)
        image.pooler_output = features[filled].unsqueeze(0)
        return image

    def _text_inputs(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_embeds (B, L, D), attention_mask (B, L)), embedding `input_ids` and masking nothing where not given."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        return inputs_embeds, attention_mask

    def _placeholders(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return self.get_placeholder_mask(input_ids, inputs_embeds=inputs_embeds).squeeze(-1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> CatpForConditionalGenerationModelOutput:
        r"""
        Stock BLIP-2 `forward` on the pruned image tokens. `input_ids` / `inputs_embeds` (B, L) may carry
        num_query_tokens placeholders per row (plain `Blip2Processor` output) or exactly k; `attention_mask`,
        and for decoder-only language models `labels` of length L, are compacted alongside. `logits` then have
        length L - (num_query_tokens - k).
        """
        if pixel_values is not None and mm_encoder_outputs is not None:
            raise ValueError("You cannot specify both pixel_values and mm_encoder_outputs at the same time")
        extra = self._family_inputs(kwargs)
        image = (mm_encoder_outputs or {}).get(self.family.features_key)
        if image is None:
            image = self.get_image_features(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **extra)
        kept = getattr(image, "kept_query_indices", None)
        if kept is None:  # features made elsewhere, for every query token
            batch, count = image.pooler_output.shape[:2]
            kept = torch.arange(count, device=image.pooler_output.device).expand(batch, count)

        inputs_embeds, attention_mask = self._text_inputs(input_ids, attention_mask, inputs_embeds)
        compact_labels = (
            labels is not None
            and self.config.use_decoder_only_language_model
            and labels.shape[1] == inputs_embeds.shape[1]
        )
        compacted = self._compact(
            self._placeholders(input_ids, inputs_embeds),
            kept,
            getattr(image, "kept_query_counts", None),
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "inputs_embeds": inputs_embeds,
                "labels": labels if compact_labels else None,
            },
        )
        outputs = super().forward(
            pixel_values=None,
            input_ids=compacted["input_ids"],
            attention_mask=compacted["attention_mask"],
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            inputs_embeds=compacted["inputs_embeds"],
            labels=compacted["labels"] if compact_labels else labels,
            mm_encoder_outputs={self.family.features_key: self._valid_features(image)},
            **extra,
            **kwargs,
        )
        return CatpForConditionalGenerationModelOutput(
            **outputs,
            kept_query_indices=kept,
            kept_query_counts=getattr(image, "kept_query_counts", None),
            kept_query_sizes=getattr(image, "kept_query_sizes", None),
            query_token_scores=getattr(image, "query_token_scores", None),
        )

    # ---- seam 3: generate on the pruned inputs, answer with the caller's prefix ---------------------------

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        qformer_encoding: QFormerEncoding | None = None,
        **generate_kwargs,
    ):
        """Stock BLIP-2 `generate` on the pruned image tokens.

        Args:
            pixel_values: (B, C, H, W) images.
            qformer_encoding: instead of `pixel_values`, a vision + Q-Former pass made by `encode_qformer` (or a
                `QFormerEncodingCache`): the pass is reused and only selection, projection and the language model run.
            input_ids: (B, L) prompt with num_query_tokens (or k) image placeholders per row; `None` captions
                (num_query_tokens placeholders + BOS, as stock BLIP-2).
            attention_mask: (B, L); inputs_embeds: (B, L, D) instead of, or with, `input_ids`.
            **generate_kwargs: anything `GenerationMixin.generate` takes. `max_length` / `min_length` count the
                caller's prompt as given, as in stock BLIP-2.
        Returns:
            For decoder-only language models given `input_ids`: (B * num_return_sequences, L + new) sequences that
            begin with the caller's `input_ids`, so `out[:, input_ids.shape[1]:]` is the new tokens. Otherwise
            what the language model's `generate` returns. A `GenerateOutput` when `return_dict_in_generate=True`.
        """
        if hasattr(self, "hf_device_map"):
            self._preprocess_accelerate()
        extra = self._family_inputs(generate_kwargs)
        image = self.get_image_features(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, qformer_encoding=qformer_encoding, **extra
        )
        if inputs_embeds is None and input_ids is None:
            placeholder = getattr(self.config, self.family.placeholder)
            start = [placeholder] * self.config.total_query_tokens + [self.config.text_config.bos_token_id]
            device = image.pooler_output.device
            input_ids = torch.tensor([start], dtype=torch.long, device=device).repeat(image.pooler_output.shape[0], 1)
        padded = attention_mask is not None  # a mask the caller gave; one made here pads nothing
        inputs_embeds, attention_mask = self._text_inputs(input_ids, attention_mask, inputs_embeds)
        placeholders = self._placeholders(input_ids, inputs_embeds)
        compacted = self._compact(
            placeholders,
            image.kept_query_indices,
            image.kept_query_counts,
            {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds, "mask": placeholders},
        )
        features = self._valid_features(image).pooler_output.to(inputs_embeds.device, inputs_embeds.dtype)
        embeds = compacted["inputs_embeds"].masked_scatter(compacted["mask"].unsqueeze(-1), features)
        removed = inputs_embeds.shape[1] - embeds.shape[1]

        inputs = {"inputs_embeds": embeds, "attention_mask": compacted["attention_mask"]}
        decoder_only = not self.language_model.config.is_encoder_decoder
        if decoder_only and padded and not bool(attention_mask[:, -1].all()):
            # transformers checks padding on input_ids only, and the language model gets embeddings; a decoder
            # continues from the last position, so right padding changes answers (in stock BLIP-2 too).
            warnings.warn(
                "A decoder-only language model got a right-padded batch (attention_mask ends in 0): answers continue "
                "from the padding and change. Pad on the left (processor.tokenizer.padding_side = 'left').",
                stacklevel=3,  # the caller of generate (torch.no_grad wraps it)
            )
        if decoder_only:
            lengths = lengths_for_compact_prompt(
                generate_kwargs, self.language_model.generation_config, inputs_embeds.shape[1], removed
            )
            generate_kwargs.update(lengths)
            if input_ids is not None:
                inputs["input_ids"] = compacted["input_ids"]

        outputs = self.language_model.generate(**inputs, **generate_kwargs)
        if decoder_only and input_ids is not None and removed:
            return with_caller_prefix(outputs, input_ids, embeds.shape[1])
        return outputs


__all__ = ["CatpForConditionalGenerationModelOutput", "CatpLanguageModelMixin"]
