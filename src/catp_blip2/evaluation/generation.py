"""Generation in `catp-blip2 eval`: the decoding settings (the paper's protocol by default) and the answer loop."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import torch

from ..modeling_features import QFormerEncodingCache
from .inputs import EvalInputs


@dataclass(frozen=True)
class GenerationSettings:
    """The paper's decoding by default: beam search with 5 beams, 1 to 10 new tokens, length_penalty 0, and
    (LAVIS's OPT setting) a newline ends the answer."""

    num_beams: int = 5
    max_new_tokens: int = 10
    min_new_tokens: int = 1
    length_penalty: float = 0.0
    newline_eos: bool = True

    def check(self) -> None:
        for name, minimum in (("num_beams", 1), ("max_new_tokens", 1), ("min_new_tokens", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`--{name.replace('_', '-')}` must be an integer >= {minimum}; got {value!r}.")
        if isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, (int, float)) or not math.isfinite(
            self.length_penalty
        ):
            raise ValueError(f"`--length-penalty` must be a finite number; got {self.length_penalty!r}.")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"`--min-new-tokens` ({self.min_new_tokens}) must be <= `--max-new-tokens` ({self.max_new_tokens})."
            )

    def generate_kwargs(self, tokenizer: Any, model: Any) -> dict[str, Any]:
        """transformers `generate` arguments. The reference code's `max_len` and `min_len` count new tokens (it
        generated from embeddings alone), hence `max_new_tokens` / `min_new_tokens` here."""
        kwargs: dict[str, Any] = {
            "do_sample": False,
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if self.num_beams > 1:  # length_penalty only means something to beam search
            kwargs["length_penalty"] = self.length_penalty
        if self.newline_eos:
            newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
            eos = model.generation_config.eos_token_id
            eos = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
            # Only where "\n" is one real token (OPT's "Ċ"); a tokenizer that drops or splits it has no newline to stop at.
            if len(newline) == 1 and newline[0] != tokenizer.unk_token_id and newline[0] not in eos:
                kwargs["eos_token_id"] = eos + newline
        return kwargs


def generate_answers(
    model: Any,
    processor: Any,
    inputs: EvalInputs,
    generate_kwargs: dict[str, Any],
    decoder_only: bool,
    progress: bool,
    features: QFormerEncodingCache | None = None,
    kept_counts: list[int] | None = None,
) -> list[str]:
    """The answers of this process's questions under the model's current pruning settings; with `features`, the
    vision encoder and Q-Former passes come from (and go into) that cache. `kept_counts`, when given, gets the number
    of query tokens each question's language model saw (per sample under `keep_score_mass`, else k)."""
    from tqdm.auto import tqdm

    answers: list[str] = []
    device = model.device
    # The vision encoder's dtype, not model.dtype: the Q-Former and query tokens stay float32 in half-precision loads.
    pixel_dtype = next(model.vision_model.parameters()).dtype
    batches = tqdm(inputs, total=len(inputs), desc="batches", unit="batch", leave=False, disable=not progress, file=sys.stderr)
    for index, batch in enumerate(batches):  # the same rows under every index, every configuration
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(pixel_dtype)
        with torch.inference_mode():
            if features is not None:
                out = features.generate(model, batch, batch_id=index, **generate_kwargs)
            else:
                out = model.generate(**batch, **generate_kwargs)
        # Decoder-only: the sequences start with our own prompt (the core's contract), whatever k is.
        new_tokens = out[:, batch["input_ids"].shape[1] :] if decoder_only else out
        answers.extend(text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True))
        if kept_counts is not None:
            kept_counts.extend(_kept_counts(model, batch, index, features))
    return answers


def _kept_counts(model: Any, batch: dict[str, Any], index: int, features: QFormerEncodingCache | None) -> list[int]:
    """How many query tokens each row keeps: k, or under a score-mass budget the selection's own count (from the
    cached pass where there is one: only the selection runs again)."""
    rows = batch["pixel_values"].shape[0]
    if model.config.keep_score_mass is None or model.config.pruning_method == "none":
        return [model.config.kept_query_tokens] * rows
    image_inputs = {name: batch[name] for name in ("pixel_values", *model.family.extra_inputs) if name in batch}
    with torch.inference_mode():
        if features is not None:
            image = model.get_image_features(qformer_encoding=features.encode(model, image_inputs, batch_id=index))
        else:
            image = model.get_image_features(**image_inputs)
    return image.kept_query_counts.tolist()


__all__ = ["GenerationSettings", "generate_answers"]
